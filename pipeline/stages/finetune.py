"""Stage `finetune <method>`: adapt the vision tower to the target domain with one retention method.

Reads the prepared target/generic splits, the teacher and its precomputed features; writes
`data/runs/<method>/` (the selected vision-tower weights + `train.json`) and the training curves in
`reports/train/<method>/` (dvclive). Every `checkpoint_every` target steps the full state (weights,
optimizer, step, best-so-far, history) goes to `data/.resume/<method>/`; a killed run started
again with the same configuration resumes there and ends with the same weights as an
uninterrupted one (the sampler and the augmentations are pure functions of (seed, step)).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from pipeline import io as pio
from pipeline import paths
from pipeline.config import FinetuneCfg, Params, load_params, method_config
from pipeline.lib.data import ImageDataset, StepBatches, eval_loader, iterate_batches, normalize
from pipeline.lib.evaluation import knn_retrieval
from pipeline.lib import distributed
from pipeline.lib.models import autocast, set_threads
from pipeline.lib import retention
from pipeline.lib.training import FineTuner, Selection, estimate_fisher, step_plan, train_steps, validation_points
from pipeline.stages.common import image_sources, leading_share, read_teacher_spec, replay_frame, split_frame
from pipeline.stages.encoders import embed_sources, load_teacher_visual

FISHER = "fisher.pt"


class Split:
    """One prepared split held for training or validation: image sources + labels (+ ids)."""

    def __init__(self, params: Params, dataset: str, split: str, fraction: float = 1.0):
        columns = ["id", "label", "image", "path"]
        frame = (replay_frame(params, split, columns) if dataset == params.roles.generic
                 else split_frame(params, dataset, split, columns=columns))
        frame = leading_share(frame, fraction)
        self.dataset, self.split = dataset, split
        self.ids = frame["id"].to_numpy()
        self.labels = frame["label"].to_numpy()
        self.names = frame["path"].to_list()
        self.sources = image_sources(dataset, frame)


def run_key(params: Params, method: str, cfg: FinetuneCfg) -> str:
    """Identity of a training run: resume state is only reused for exactly the same run."""
    # precision changes the numerics: a bf16 state must not be resumed by an fp32 run (or back)
    blob = {"cfg": asdict(cfg), "method": method, "teacher": read_teacher_spec(),
            "precision": params.runtime.precision,
            "target": asdict(params.datasets[params.roles.target]),
            "generic": asdict(params.datasets[params.roles.generic])}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generic_prototypes(params: Params) -> tuple[torch.Tensor, dict[int, int]]:
    """Frozen-text embeddings of the generic train classes' prompts (`features`), and label → row."""
    emb, table = pio.read_embeddings(paths.features() / paths.split_file(params.roles.generic, "train", "prompts"))
    return torch.from_numpy(emb.copy()), {int(lab): r for r, lab in enumerate(table["label"].to_list())}


def estimate_generic_fisher(params: Params, cfg: FinetuneCfg, visual: torch.nn.Module, spec: dict, split: Split,
                            prototypes: torch.Tensor, row_of_label: dict[int, int], scale: float,
                            device: torch.device) -> list[torch.Tensor]:
    """EWC's diagonal empirical Fisher of θ0 (per-sample gradients, unnormalised) on a fixed draw of
    `fisher_batches × batch_size` generic train images, eval view, labelled by their class prompts."""
    n = min(len(split.ids), cfg.fisher_batches * cfg.batch_size)
    pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(split.ids))[:n])
    loader = eval_loader([split.sources[i] for i in pick], spec["image_size"], cfg.batch_size,
                         params.runtime.num_workers, [split.names[i] for i in pick])
    rows = torch.tensor([row_of_label[int(lab)] for lab in split.labels[pick]])
    chunks = rows.split(cfg.batch_size)
    batches = ((normalize(x.to(device), spec["mean"], spec["std"]), y.to(device)) for x, y in zip(loader, chunks))
    visual = copy.deepcopy(visual).to(device)
    with autocast(device, "fp32"):
        fisher = estimate_fisher(visual, tqdm(batches, total=len(chunks), desc="fisher", unit="batch"),
                                 prototypes.to(device), scale)
    print(f"[finetune] EWC Fisher from {n} generic images (per-sample gradients)")
    return fisher


def validation(tuner: FineTuner, spec: dict, splits: dict[str, Split], params: Params) -> dict[str, float]:
    """mAP@20 on the class-disjoint target val split and the generic val split (METHOD §7.3)."""
    out = {}
    for role, split in splits.items():
        emb = embed_sources(tuner.visual, split.sources, spec, tuner.device, params.features.batch_size,
                            params.runtime.precision, params.runtime.num_workers, f"val {role}")
        out[role] = knn_retrieval(emb, split.labels, params.eval.k, [params.eval.k],
                                  with_map_at_r=False)[f"map@{params.eval.k}"]
    tuner.visual.train()
    return out


def batches(dataset: ImageDataset, batch_size: int, seed: int, first: int, count: int, num_workers: int,
            pin: bool, ctx: distributed.Context) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """This rank's slice of the global batches number first .. first+count-1 of one domain."""
    sampler = StepBatches(len(dataset), batch_size, seed)
    return iterate_batches(dataset, sampler, range(first, first + count), num_workers, pin, ctx.rank, ctx.world)


def save_state(path: Path, state: dict[str, Any]) -> None:
    with pio.atomic_path(path) as tmp:
        torch.save(state, tmp)


def linear_probe(tuner: FineTuner, params: Params, spec: dict, split: Split, labels: torch.Tensor,
                 method: str) -> dict[str, float]:
    """LP-FT's first phase: the head fitted to convergence on θ0's eval-view features of the target
    train images (the encoder is frozen in this phase, so its features are computed once)."""
    emb = embed_sources(tuner.visual, split.sources, spec, tuner.device, params.features.batch_size,
                        params.runtime.precision, params.runtime.num_workers, "probe features", split.names)
    tuner.visual.train()
    probe = tuner.fit_probe(torch.from_numpy(emb), labels)
    state = "converged" if probe["probe_converged"] else f"stopped at lp_max_steps = {tuner.cfg.lp_max_steps}"
    print(f"[finetune {method}] linear probe: {probe['probe_steps']} full-batch steps, loss "
          f"{probe['probe_loss']:.4f} ({state})")
    return probe


def train(params: Params, method: str, cfg: FinetuneCfg, ctx: distributed.Context) -> dict[str, Any]:
    """The training loop: round-robin target/generic steps, validation, selection, resumption.

    Under data parallelism every rank runs this loop on its slice of each global batch; only
    rank 0 validates, selects and writes checkpoints (the others wait in the next all-reduce).
    """
    device = ctx.device
    teacher, spec = load_teacher_visual("cpu")
    target = {s: Split(params, params.roles.target, s) for s in ("train", "val")}
    generic = {"train": Split(params, params.roles.generic, "train"),
               "val": Split(params, params.roles.generic, "val", params.roles.generic_val_fraction)}
    val_splits = {"target": target["val"], "generic": generic["val"]}
    classes, labels = np.unique(target["train"].labels, return_inverse=True)
    labels_t = torch.from_numpy(labels)

    needed = retention.inputs(cfg)
    prototypes, row_of_label, fisher = None, {}, None
    generic_rows = None  # each generic train image's row among the class prompts (its label: GIFT, EWC)
    if retention.CLASS_PROMPTS in needed:
        prototypes, row_of_label = generic_prototypes(params)
        generic_rows = torch.tensor([row_of_label[int(lab)] for lab in generic["train"].labels])
    scale = spec["logit_scale"]
    if retention.FISHER in needed:
        fisher = estimate_generic_fisher(params, cfg, teacher, spec, generic["train"], prototypes,
                                         row_of_label, scale, device)
    tuner = FineTuner(copy.deepcopy(teacher), len(classes), spec["embed_dim"], cfg, spec["mean"],
                      spec["std"], spec["image_size"], device, params.runtime.precision, cfg.seed,
                      teacher_visual=copy.deepcopy(teacher) if retention.needs_online_teacher(cfg) else None,
                      rank=ctx.rank, world=ctx.world, compile=params.runtime.compile,
                      prototypes=prototypes, logit_scale=scale, fisher=fisher)
    del teacher
    targets = None
    if retention.needs_precomputed_targets(cfg):
        emb, table = pio.read_embeddings(paths.features() / paths.split_file(params.roles.generic, "train"))
        if not np.array_equal(table["id"].to_numpy(), generic["train"].ids):
            raise ValueError("teacher features do not match the generic train split: rerun `features`")
        targets = torch.from_numpy(emb.copy())  # Arrow buffers are read-only

    plan = step_plan(cfg)
    resume_dir = paths.resume(method)
    key = run_key(params, method, cfg)
    state_file = resume_dir / f"{key}.pt"
    step, selection, probe = 0, Selection(cfg.select_on), {}
    if state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=False)
        tuner.load_state_dict(state["tuner"])
        step, probe = state["step"], state.get("probe", {})
        selection = Selection(cfg.select_on, state["best"], state["history"])
        torch.set_rng_state(state["rng"])
        print(f"[finetune {method}] resuming at step {step}/{len(plan)} from {state_file}")
    else:
        if resume_dir.exists():
            shutil.rmtree(resume_dir)  # state of a different configuration: not ours to resume
        if cfg.lp_max_steps > 0 and plan:
            probe = linear_probe(tuner, params, spec, target["train"], labels_t, method)

    resize = cfg.train_resize
    if resize < spec["image_size"]:
        raise ValueError(f"methods.{method}.train_resize (finetune.train_resize) = {resize} is smaller than the "
                         f"model's input size {spec['image_size']}: the random crop needs train_resize >= it")
    pin = device.type == "cuda"
    n_target = plan[:step].count("target")
    n_generic = step - n_target
    tgt_iter = batches(ImageDataset(target["train"].sources, resize, "train", target["train"].names),
                       cfg.batch_size, cfg.seed, n_target, plan.count("target") - n_target,
                       params.runtime.num_workers, pin, ctx)
    gen_iter = None
    if retention.draws_generic_batches(cfg):  # regulariser-only generic steps need no images
        gen_iter = batches(ImageDataset(generic["train"].sources, resize, "train", generic["train"].names),
                           cfg.batch_size, cfg.seed + 1, n_generic, plan.count("generic") - n_generic,
                           params.runtime.num_workers, pin, ctx)

    def draw_target() -> tuple[torch.Tensor, torch.Tensor]:
        images, idx = next(tgt_iter)
        return images, labels_t[idx]

    def draw_generic() -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        if gen_iter is None:
            return None, None, None
        images, idx = next(gen_iter)
        return (images, targets[idx] if targets is not None else None,
                generic_rows[idx] if generic_rows is not None else None)

    def save(at_step: int) -> None:
        save_state(state_file, {"tuner": tuner.state_dict(), "step": at_step, "best": selection.best,
                                "history": selection.history, "probe": probe, "rng": torch.get_rng_state()})

    start = time.time()
    if cfg.kind == "pretrained" and ctx.is_main:  # the method IS θ0: its one checkpoint, validated for the report
        selection.pretrained(validation(tuner, spec, val_splits, params), tuner.vision_weights)
    bar = tqdm(total=len(plan), initial=step, desc=f"finetune {method}", unit="step",
               disable=not plan or not ctx.is_main)
    train_steps(tuner, plan, step, draw_target, draw_generic, selection,
                lambda: validation(tuner, spec, val_splits, params), validation_points(cfg.steps, cfg.validations),
                cfg.checkpoint_every, save, ctx.is_main, on_step=lambda: bar.update(1))
    bar.close()
    if not ctx.is_main:
        return {}
    assert selection.best is not None
    return {"best": selection.best, "history": selection.history, "seconds": round(time.time() - start, 1),
            "steps": len(plan), "train_classes": int(len(classes)), "resume_state": str(state_file),
            "fisher": fisher, **probe}


def write_curves(method: str, history: list[dict[str, float]]) -> None:
    """Training curves in dvclive's layout (`plots/metrics/<name>.tsv` + `metrics.json`), atomically.

    dvclive's `Live` is not used: it inspects (and may `dvc init`) the surrounding repo and fails
    in a git repo without commits; its `Metric` writer needs none of that.
    """
    from dvclive.plots import Metric

    with pio.atomic_path(paths.train_log(method), directory=True) as tmp:
        for row in history:
            for name, value in row.items():
                if name in ("step", "target_steps"):
                    continue
                metric = Metric(name, str(tmp / "plots"))
                metric.step = int(row["target_steps"])
                metric.dump(float(value))
        last = {k: float(v) for k, v in history[-1].items() if k not in ("step", "target_steps")} if history else {}
        if history:
            last["step"] = int(history[-1]["target_steps"])
        (tmp / "metrics.json").write_text(json.dumps(last, indent=4) + "\n")


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    cfg = method_config(params, args.method)
    if params.runtime.processes > 1 and not distributed.launched_by_torchrun() and cfg.kind != "pretrained":
        threads = [] if args.threads is None else ["--threads", str(args.threads)]
        distributed.relaunch_with_torchrun(params.runtime.processes, ["finetune", args.method, "--params", args.params,
                                                                     *threads])
        return
    set_threads(params.runtime.threads)
    ctx = distributed.setup(params.runtime.device)
    try:
        result = train(params, args.method, cfg, ctx)
        if ctx.is_main:
            write_outputs(params, args.method, cfg, result)
    finally:
        distributed.teardown(ctx)


def write_outputs(params: Params, method: str, cfg: FinetuneCfg, result: dict[str, Any]) -> None:
    """The selected weights + training record (atomically), curves, and no resume state left."""
    best = result.pop("best")
    weights = best.pop("weights")
    fisher = result.pop("fisher")
    record = {"method": method, "config": asdict(cfg), "selected": best,
              "uses_generic_labels_or_prompts": retention.uses_generic_labels_or_prompts(cfg), **result}
    with pio.atomic_path(paths.run(method), directory=True) as tmp:
        torch.save(weights, tmp / paths.checkpoint(method).name)
        if fisher is not None:  # EWC's Fisher: kept with the run it weighted
            torch.save([f.cpu() for f in fisher], tmp / FISHER)
        (tmp / paths.train_record(method).name).write_text(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
    write_curves(method, result["history"])
    shutil.rmtree(paths.resume(method), ignore_errors=True)  # finished: nothing left to resume
    print(f"[finetune {method}] selected step {best['step']} ({cfg.select_on}): val target mAP@{params.eval.k} "
          f"{best['target']:.3f}, val generic {best['generic']:.3f}; {result['seconds']} s")
