"""The fine-tuning loop, top to bottom: build the trainer, resume or start (LP-FT's probe first), run
the round-robin steps, validate at the validation points, keep the best checkpoint, save resumable
state. The caller (the `finetune` stage, `tune`) decides the inputs once and passes them as `Inputs`;
file I/O stays with it (`Resume` is the one place state reaches disk).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from pipeline.lib import retention
from pipeline.lib.data import ImageDataset, StepBatches, iterate_batches
from pipeline.lib.embedding import View, embed_sources
from pipeline.lib.evaluation import knn_retrieval
from pipeline.lib.images import ImageSource
from pipeline.lib.metrics import at
from pipeline.lib.recipes import FinetuneCfg
from pipeline.lib.training.schedule import TARGET_STEPS, step_plan, target_batches, validation_points
from pipeline.lib.training.selection import Selection
from pipeline.lib.training.trainer import Aids, FineTuner, Runtime


@dataclass
class Split:
    """One split held for training or validation: image sources, labels, names (paths) and ids."""
    sources: Sequence[ImageSource]
    labels: np.ndarray
    names: list[str]
    ids: np.ndarray


@dataclass
class Inputs:
    """Everything one fine-tuning run reads, decided once by the caller (`retention.inputs`)."""
    teacher: torch.nn.Module      # θ0: the pretrained vision tower (copied, never modified)
    view: View
    target_train: Split
    target_val: Split
    generic_train: Split
    generic_val: Split
    aids: Aids = field(default_factory=Aids)
    targets: np.ndarray | None = None        # precomputed teacher embeddings of generic_train (row = position)
    class_rows: torch.Tensor | None = None   # each generic train image's row among the class prompts


@dataclass(frozen=True)
class Evaluation:
    """How validation embeds and scores: mAP@k, batch size and DataLoader workers."""
    k: int = 20
    batch_size: int = 256
    num_workers: int = 0


class Resume(Protocol):
    """Where a run's resumable state lives (the stage implements it on disk)."""
    def load(self, device: torch.device) -> dict[str, Any] | None: ...
    def save(self, state: dict[str, Any]) -> None: ...


def validation_scores(visual: torch.nn.Module, splits: dict[str, Split], view: View, device: torch.device,
                      precision: str, ev: Evaluation) -> dict[str, float]:
    """mAP@k of a tower on each validation split (`target`: class-disjoint target val, `generic`: the
    replay val): the selection criterion's parts (docs/method.md#checkpoint-selection)."""
    out = {}
    for role, split in splits.items():
        emb = embed_sources(visual, split.sources, view, device, ev.batch_size, precision, ev.num_workers, f"val {role}")
        out[role] = knn_retrieval(emb, split.labels, ev.k, [ev.k], with_map_at_r=False)[at("map", ev.k)]
    return out


def validate(tuner: FineTuner, data: Inputs, ev: Evaluation) -> dict[str, float]:
    out = validation_scores(tuner.visual, {"target": data.target_val, "generic": data.generic_val}, data.view,
                            tuner.device, tuner.run.precision, ev)
    tuner.visual.train()
    return out


def linear_probe(tuner: FineTuner, data: Inputs, labels: torch.Tensor, ev: Evaluation) -> dict[str, Any]:
    """LP-FT's first phase: the head fitted to convergence on θ0's eval-view features of the target
    train images (the encoder is frozen in this phase, so its features are computed once)."""
    split = data.target_train
    emb = embed_sources(tuner.visual, split.sources, data.view, tuner.device, ev.batch_size, tuner.run.precision,
                        ev.num_workers, "probe features", split.names)
    tuner.visual.train()
    return tuner.fit_probe(torch.from_numpy(emb), labels)


def domain_batches(split: Split, cfg: FinetuneCfg, seed: int, first: int, count: int, ev: Evaluation,
                   run: Runtime) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """This rank's slice of the global batches number first .. first+count-1 of one domain."""
    dataset = ImageDataset(split.sources, cfg.train_resize, "train", split.names)
    sampler = StepBatches(len(dataset), cfg.batch_size, seed)
    return iterate_batches(dataset, sampler, range(first, first + count), ev.num_workers,
                           run.device.type == "cuda", run.rank, run.world)


def _draws(data: Inputs, cfg: FinetuneCfg, plan: list[str], step: int, labels: torch.Tensor, ev: Evaluation,
           run: Runtime) -> tuple[Callable[[], tuple], Callable[[], tuple]]:
    """draw_target() → (uint8 images, labels); draw_generic() → (images | None, teacher embeddings | None,
    class rows | None), continuing the batch sequences at `step` of the plan. Replay batches are drawn
    only when a replay-batch term reads them (every joint step, or every generic round-robin step)."""
    n_target = target_batches(plan[:step])
    tgt = domain_batches(data.target_train, cfg, cfg.seed, n_target, target_batches(plan) - n_target, ev, run)
    gen = None
    if retention.draws_generic_batches(cfg):  # regulariser-only generic steps need no images
        replay_kind = "joint" if cfg.schedule == "joint" else "generic"
        n_generic = plan[:step].count(replay_kind)
        gen = domain_batches(data.generic_train, cfg, cfg.seed + 1, n_generic, plan.count(replay_kind) - n_generic,
                             ev, run)

    def draw_target() -> tuple:
        images, idx = next(tgt)
        return images, labels[idx]

    def draw_generic() -> tuple:
        if gen is None:
            return None, None, None
        images, idx = next(gen)
        targets = torch.from_numpy(np.asarray(data.targets[idx], np.float32)) if data.targets is not None else None
        return (images, targets,
                data.class_rows[idx] if data.class_rows is not None else None)

    return draw_target, draw_generic


def run_steps(tuner: FineTuner, plan: Sequence[str], step: int, draws: tuple[Callable, Callable],
              selection: Selection, validate_now: Callable[[], dict[str, float]], points: set[int],
              save: Callable[[int], None] | None = None, on_step: Callable[[], None] | None = None) -> None:
    """Run `plan` from `step`: a round ends where the next step takes a target batch (or the plan ends);
    validation (at the target-step counts in `points`) and checkpoints happen only there, so a target
    step and its generic partner are never split. Only the main process validates and saves (the
    others wait in the next all-reduce)."""
    draw_target, draw_generic = draws
    is_main = tuner.run.rank == 0
    target_count = np.cumsum([d in TARGET_STEPS for d in plan]).tolist()
    running: dict[str, list[float]] = {}
    while step < len(plan):
        if plan[step] == "joint":
            logs = tuner.joint_step(*draw_target(), draw_generic(), step)
        elif plan[step] == "target":
            logs = tuner.target_step(*draw_target(), step)
        else:
            images, teacher_emb, class_rows = draw_generic()
            logs = tuner.generic_step(images, teacher_emb, step, class_rows)
        for k, v in logs.items():
            running.setdefault(k, []).append(v)
        step += 1
        if on_step is not None:
            on_step()
        if step < len(plan) and plan[step] == "generic":
            continue
        done = target_count[step - 1]
        if done in points:
            if is_main:
                selection.consider(step, done, validate_now(), {k: float(np.mean(v)) for k, v in running.items()},
                                   tuner.vision_weights)
            running = {}
        every = tuner.cfg.checkpoint_every
        if save is not None and every and done % every == 0 and step < len(plan) and is_main:
            save(step)


def fine_tune(data: Inputs, cfg: FinetuneCfg, run: Runtime, ev: Evaluation, resume: Resume | None = None,
              label: str = "finetune") -> dict[str, Any]:
    """One fine-tuning run from the teacher; on the main process, its result: the selected checkpoint
    (`best`, with its weights), the validation history, timings and LP-FT's probe."""
    classes, labels = np.unique(data.target_train.labels, return_inverse=True)
    labels_t = torch.from_numpy(labels)
    teacher_copy = copy.deepcopy(data.aids.teacher) if data.aids.teacher is not None else None
    tuner = FineTuner(copy.deepcopy(data.teacher), len(classes), cfg, data.view, run,
                      Aids(data.aids.prototypes, data.aids.fisher, teacher_copy))
    plan = step_plan(cfg)
    state = resume.load(run.device) if resume is not None else None
    step, selection, probe = 0, Selection(cfg.select_on), {}
    if state is not None:
        tuner.load_state_dict(state["tuner"])
        step, probe = state["step"], state.get("probe", {})
        selection = Selection(cfg.select_on, state["best"], state["history"])
        torch.set_rng_state(state["rng"])
        print(f"[{label}] resuming at step {step}/{len(plan)}")
    elif cfg.lp_max_steps > 0 and plan:
        probe = linear_probe(tuner, data, labels_t, ev)
        state_word = "converged" if probe["probe_converged"] else f"stopped at lp_max_steps = {cfg.lp_max_steps}"
        print(f"[{label}] linear probe: {probe['probe_steps']} full-batch steps, loss {probe['probe_loss']:.4f} "
              f"({state_word})")
    if cfg.train_resize < data.view.image_size:
        raise ValueError(f"train_resize = {cfg.train_resize} is smaller than the model's input size "
                         f"{data.view.image_size}: the random crop needs train_resize >= it")

    def save(at_step: int) -> None:
        resume.save({"tuner": tuner.state_dict(), "step": at_step, "best": selection.best,
                     "history": selection.history, "probe": probe, "rng": torch.get_rng_state()})

    start = time.time()
    if cfg.kind == "pretrained" and run.rank == 0:  # the method IS θ0: its one checkpoint, validated
        selection.pretrained(validate(tuner, data, ev), tuner.vision_weights)
    bar = tqdm(total=len(plan), initial=step, desc=label, unit="step", disable=not plan or run.rank != 0)
    run_steps(tuner, plan, step, _draws(data, cfg, plan, step, labels_t, ev, run), selection,
              lambda: validate(tuner, data, ev), set(validation_points(cfg.steps, cfg.validations)),
              save if resume is not None else None, on_step=lambda: bar.update(1))
    bar.close()
    if run.rank != 0:
        return {}
    return {"best": selection.best, "history": selection.history, "seconds": round(time.time() - start, 1),
            "steps": len(plan), "optimizer_steps": len(plan), "target_batches": target_batches(plan),
            "schedule": cfg.schedule, "train_classes": int(len(classes)), **probe}
