"""Stage `fewshot`: the adapter family with both encoders frozen, K-shot, base and novel classes.

The classes of one set (`fewshot.dataset` / `subset`) are split with a fixed seed into base classes
(the shots come from their train images) and novel classes (never seen while fitting). Image
features are the frozen teacher's eval-view embeddings: read from the `features` stage when the
few-shot set is the generic dataset (its train split, and the val share it embedded), computed here
otherwise. Tip-Adapter's α, β are searched on the val split's images of the base classes. For each
K in `fewshot.shots` and each of `fewshot.repeats` shot draws, every method of
`pipeline.lib.fewshot` is fitted on the base shots and tested on the test split: accuracy among
base classes, among novel classes, and their harmonic mean. Writes `data/eval/fewshot.json`
(a name no method can take); the report plots it.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
import torch

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params, load_params
from pipeline.lib import fewshot
from pipeline.lib.models import embed_texts, resolve_device, set_threads, tokenizer_for
from pipeline.lib.prompts import class_prompts
from pipeline.stages.common import image_sources, split_frame
from pipeline.lib.embedding import View, embed_sources
from pipeline.stages.encoders import load_teacher


def shared_teacher_features(params: Params, split: str, frame: pl.DataFrame
                            ) -> tuple[np.ndarray, pl.DataFrame] | None:
    """The `features` stage's teacher embeddings of these rows and the rows they cover, when that stage
    embedded this split (the few-shot set is the generic dataset: all of its train split, the leading
    `roles.generic_val_fraction` of its val split); else None. On the paper preset the train split is
    ImageNet's 1.05 M images: they are not embedded a second time."""
    if params.fewshot.dataset != params.roles.generic or split not in ("train", "val"):
        return None
    emb, table = pio.read_embeddings(paths.features() / paths.split_file(params.roles.generic, split))
    row = {int(i): r for r, i in enumerate(table["id"].to_list())}
    kept = frame.filter(pl.col("id").is_in(list(row)))
    if split == "train" and kept.height != frame.height:
        raise ValueError(f"teacher features of {params.roles.generic}/train lack {frame.height - kept.height} ids "
                         "of the prepared split: rerun `features`")
    return emb[[row[int(i)] for i in kept["id"].to_list()]], kept


def frozen_features(params: Params, split: str, model: torch.nn.Module, spec: dict,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """Teacher image features (eval view), labels and class names of one split of the few-shot set."""
    cfg = params.fewshot
    frame = split_frame(params, cfg.dataset, split, cfg.subset, ["id", "label", "class_name", "path"])
    shared = shared_teacher_features(params, split, frame)
    if shared is not None:
        emb, frame = shared
    else:
        images = split_frame(params, cfg.dataset, split, cfg.subset, ["image", "path"])
        emb = embed_sources(model.visual, image_sources(cfg.dataset, images), View.of(spec), device,
                            params.features.batch_size, params.runtime.precision, params.runtime.num_workers,
                            f"fewshot {cfg.dataset}/{split}", frame["path"].to_list())
    names = dict(zip(frame["label"].to_list(), frame["class_name"].to_list()))
    return torch.from_numpy(np.ascontiguousarray(emb)), torch.tensor(frame["label"].to_list()), names


def harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


@dataclass
class Task:
    """The few-shot problem: frozen features of each split, the base / novel class split, class text."""
    f_train: torch.Tensor
    y_train: torch.Tensor
    f_test: torch.Tensor
    y_test: torch.Tensor
    splits: dict[str, torch.Tensor]          # base | novel → sorted class labels
    rows: dict[str, dict[int, int]]          # base | novel → label → row among that part's classes
    text_of: dict[str, torch.Tensor]         # base | novel → class-prompt embeddings, row order
    val: tuple[torch.Tensor, torch.Tensor]   # Tip-Adapter's search set: val images of the base classes


def build_task(params: Params, model: torch.nn.Module, spec: dict, device: torch.device,
               gen: torch.Generator) -> Task:
    cfg = params.fewshot
    f_train, y_train, names = frozen_features(params, "train", model, spec, device)
    f_test, y_test, test_names = frozen_features(params, "test", model, spec, device)
    names.update(test_names)
    # Tip-Adapter searches α, β on the val split (its official code); the val images of the base classes
    f_val, y_val = (frozen_features(params, "val", model, spec, device)[:2] if "tip_adapter" in cfg.methods
                    else (torch.zeros(0, f_train.shape[1]), torch.zeros(0, dtype=torch.long)))
    classes = torch.tensor(sorted(names))
    prompts = class_prompts([names[int(c)] for c in classes], params.eval.prompt_template)
    text = torch.from_numpy(embed_texts(model, tokenizer_for(spec["model"]), prompts, device=device)).cpu()
    order = classes[torch.randperm(len(classes), generator=gen)]
    n_base = max(1, round(cfg.base_fraction * len(classes)))
    splits = {"base": order[:n_base].sort().values, "novel": order[n_base:].sort().values}
    rows = {name: {int(c): i for i, c in enumerate(cls)} for name, cls in splits.items()}
    text_of = {name: text[[int(torch.nonzero(classes == c)) for c in cls]] for name, cls in splits.items()}
    val_base = torch.isin(y_val, splits["base"])
    if "tip_adapter" in cfg.methods and not val_base.any():
        raise ValueError(f"fewshot: Tip-Adapter searches α, β on validation images of the base classes, and "
                         f"{cfg.dataset}/val has none (its classes must overlap the train split's)")
    val = (f_val[val_base].cpu(), torch.tensor([rows["base"][int(c)] for c in y_val[val_base]]))
    return Task(f_train.cpu(), y_train, f_test.cpu(), y_test, splits, rows, text_of, val)


def scores_at(task: Task, k: int, methods: list[str], repeats: int, settings: fewshot.FewShotSettings,
              gen: torch.Generator, searched: list[dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    """Accuracy of every method on the base and novel test images, per shot draw of K = k."""
    scores: dict[str, dict[str, list[float]]] = {m: {"base": [], "novel": []} for m in methods}
    for _ in range(repeats):
        shots = fewshot.sample_shots(task.y_train, task.splits["base"], k, gen)
        y_shots = torch.tensor([task.rows["base"][int(c)] for c in task.y_train[shots]])
        for method in methods:
            fitted = fewshot.make(method, task.text_of["base"].shape[1], settings).fit(
                task.f_train[shots], y_shots, task.text_of["base"], settings, val=task.val)
            if method == "tip_adapter":
                searched.append({"alpha": fitted.alpha, "beta": fitted.beta,
                                 "val_accuracy": round(100 * fitted.val_accuracy, 2)})
            for part in ("base", "novel"):
                if part == "novel" and (not fewshot.FEWSHOT_METHODS[method].novel or not len(task.splits["novel"])):
                    continue
                mask = torch.isin(task.y_test, task.splits[part])
                y = torch.tensor([task.rows[part][int(c)] for c in task.y_test[mask]])
                logits = fitted.predict(task.f_test[mask], task.text_of[part], base=part == "base")
                scores[method][part].append(fewshot.accuracy(logits, y))
    return scores


def cell(scores: dict[str, list[float]]) -> dict[str, float | None]:
    """Mean accuracy (%) on base and novel classes and their harmonic mean; null, not NaN, without novel."""
    base = float(np.mean(scores["base"]))
    novel = float(np.mean(scores["novel"])) if scores["novel"] else None
    return {"base": round(100 * base, 2), "novel": None if novel is None else round(100 * novel, 2),
            "harmonic": None if novel is None else round(100 * harmonic(base, novel), 2)}


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    cfg = params.fewshot
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    model, spec = load_teacher(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    task = build_task(params, model, spec, device, gen)
    del model
    settings = fewshot.FewShotSettings(**{**cfg.settings, "seed": cfg.seed})
    if settings.logit_scale is None:  # the model's own, unless fewshot.settings.logit_scale overrides it
        settings.logit_scale = spec["logit_scale"]
    results: dict[str, dict[str, dict]] = {m: {} for m in cfg.methods}
    searched: dict[int, list[dict[str, float]]] = {k: [] for k in cfg.shots}  # Tip-Adapter's α, β per draw
    for k in cfg.shots:
        scores = scores_at(task, k, cfg.methods, cfg.repeats, settings, gen, searched[k])
        for method in cfg.methods:
            results[method][str(k)] = c = cell(scores[method])
            print(f"[fewshot] K={k:>2} {method:>13}: base {c['base']:6.2f}  novel "
                  + ("n/a" if c["novel"] is None else f"{c['novel']:6.2f}"))
    pio.write_json({"dataset": cfg.dataset, "subset": cfg.subset, "base_classes": len(task.splits["base"]),
                    "novel_classes": len(task.splits["novel"]), "repeats": cfg.repeats, "settings": asdict(settings),
                    "val_images": int(len(task.val[1])),
                    "tip_adapter_search": {str(k): v for k, v in searched.items() if v},
                    "results": results}, paths.fewshot())
