"""Stage `wiseft`: WiSE-FT's retention-vs-adaptation curve of one fine-tuned method.

θ_α = (1−α)·θ0 + α·θ_ft for each α of `wise_ft.alphas` (Wortsman et al.; docs/baselines.md#wise-ft), with no retraining: each
interpolated encoder embeds the evaluation splits in memory and goes through the same evaluation
as the `evaluate` stage (exact kNN). α = 0 reproduces the pretrained metrics, α = 1 the base
method's. α is chosen on the same validation criterion as every checkpoint (target-val and replay-val
mAP@k). Writes `data/eval/wise-ft.json`.
"""
from __future__ import annotations

import argparse

import faiss
import torch

from pipeline import io as pio
from pipeline import paths
from pipeline.config import load_params
from pipeline.lib.models import resolve_device, set_threads
from pipeline.lib.wiseft import interpolate_weights
from pipeline.lib.embedding import View
from pipeline.lib.training.loop import validation_scores
from pipeline.lib.training.selection import criterion
from pipeline.stages.encoders import embed_eval_splits, load_teacher_visual
from pipeline.stages.inputs import evaluation, read_split
from pipeline.stages.evaluate import all_metrics


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    set_threads(params.runtime.threads)
    faiss.omp_set_num_threads(max(1, params.runtime.threads))
    device = resolve_device(params.runtime.device)
    base = params.wise_ft.base
    checkpoint = paths.checkpoint(base)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"missing {checkpoint}: run `python -m pipeline finetune {base}` first")
    visual, spec = load_teacher_visual("cpu")
    theta0 = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    theta_ft = torch.load(checkpoint, map_location="cpu", weights_only=True)
    val = {"target": read_split(params, params.roles.target, "val"),
           "generic": read_split(params, params.roles.generic, "val", params.roles.generic_val_fraction)}
    curve = []
    for alpha in params.wise_ft.alphas:
        visual.load_state_dict(interpolate_weights(theta0, theta_ft, alpha))
        visual.to(device).eval()
        label = f"wise-ft {base} α={alpha:g}"
        scores = validation_scores(visual, val, View.of(spec), device, params.runtime.precision, evaluation(params))
        tables = {(d, s): (emb, frame.select("id", "label", "subset"))
                  for d, s, frame, emb in embed_eval_splits(visual, params, spec, device, label)}
        curve.append({"alpha": alpha, "validation": {**scores, "criterion": criterion(scores, "all")},
                      **all_metrics(params, lambda d, s: tables[(d, s)], label)})
        visual.cpu()
    # α is chosen like everything else, on the validation criterion (ties: the larger α, more adaptation)
    chosen = max(curve, key=lambda p: (p["validation"]["criterion"], p["alpha"]))["alpha"]
    print(f"[wiseft] α = {chosen:g} has the best validation criterion")
    pio.write_json({"base": base, "selected_alpha": chosen, "curve": curve}, paths.wise_ft_curve())
