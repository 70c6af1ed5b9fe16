"""What a fine-tuning run reads, loaded once (the `finetune` stage and `tune` share it).

`load_inputs` decides from the recipe's active retention terms (`retention.inputs`) what to read:
the prepared target and replay splits, the teacher, its precomputed features of the replay train
split, the replay class prompts and EWC's Fisher. `DiskResume` keeps a run's resumable state in
`data/.resume/<run>/` (outside DVC's outputs), keyed by everything the run depends on.
"""
from __future__ import annotations

import copy
import hashlib
import json
import pickle
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline import io as pio
from pipeline import paths
from pipeline.config import FinetuneCfg, Params
from pipeline.lib import distributed, retention
from pipeline.lib.data import eval_loader, normalize
from pipeline.lib.embedding import View
from pipeline.lib.models import autocast, vision_params
from pipeline.lib.training.fisher import estimate_fisher
from pipeline.lib.training.loop import Evaluation, Inputs, Split
from pipeline.lib.training.trainer import Aids, Runtime
from pipeline.stages.common import image_sources, leading_share, read_teacher_spec, replay_frame, split_frame
from pipeline.stages.encoders import load_teacher_visual


def read_split(params: Params, dataset: str, split: str, fraction: float = 1.0) -> Split:
    """One prepared split (the replay domain's through `replay_frame`): sources, labels, paths, ids."""
    columns = ["id", "label", "image", "path"]
    frame = (replay_frame(params, split, columns) if dataset == params.roles.generic
             else split_frame(params, dataset, split, columns=columns))
    frame = leading_share(frame, fraction)
    return Split(image_sources(dataset, frame), frame["label"].to_numpy(), frame["path"].to_list(),
                 frame["id"].to_numpy())


def generic_prototypes(params: Params) -> tuple[torch.Tensor, dict[int, int]]:
    """Frozen-text embeddings of the generic train classes' prompts (`features`), and label → row."""
    emb, table = pio.read_embeddings(paths.features() / paths.split_file(params.roles.generic, "train", "prompts"))
    return torch.from_numpy(emb.copy()), {int(lab): r for r, lab in enumerate(table["label"].to_list())}


def generic_fisher(cfg: FinetuneCfg, teacher: torch.nn.Module, view: View, split: Split, rows: torch.Tensor,
                   prototypes: torch.Tensor, device: torch.device, num_workers: int) -> list[torch.Tensor]:
    """EWC's diagonal empirical Fisher of θ0 (per-sample gradients, unnormalised) on a fixed draw of
    `fisher_batches × batch_size` generic train images, eval view, labelled by their class prompts."""
    n = min(len(split.ids), cfg.fisher_batches * cfg.batch_size)
    pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(split.ids))[:n])
    loader = eval_loader([split.sources[i] for i in pick], view.image_size, cfg.batch_size, num_workers,
                         [split.names[i] for i in pick])
    chunks = rows[torch.from_numpy(pick)].split(cfg.batch_size)
    batches = ((normalize(x.to(device), view.mean, view.std), y.to(device)) for x, y in zip(loader, chunks))
    visual = copy.deepcopy(teacher).to(device)
    with autocast(device, "fp32"):
        fisher = estimate_fisher(visual, tqdm(batches, total=len(chunks), desc="fisher", unit="batch"),
                                 prototypes.to(device), view.logit_scale)
    print(f"[finetune] EWC Fisher from {n} generic images (per-sample gradients)")
    return fisher


def precomputed_targets(params: Params, split: Split) -> np.ndarray:
    """The `features` stage's teacher embeddings of the generic train split, row for row, memory-mapped
    (read-only pages the ranks share, not a copy per process)."""
    table = paths.features() / paths.split_file(params.roles.generic, "train")
    ids = pio.read_table_columns(table, ["id"])["id"].to_numpy()
    if not np.array_equal(ids, split.ids):
        raise ValueError("teacher features do not match the generic train split: rerun `features`")
    return np.load(table.with_suffix(".npy"), mmap_mode="r")


def shared_fisher(cfg: FinetuneCfg, data: Inputs, ctx: distributed.Context, num_workers: int) -> list[torch.Tensor]:
    """EWC's Fisher, estimated once (on the main process) and broadcast: every rank pulls with the same one."""
    if ctx.is_main:
        fisher = generic_fisher(cfg, data.teacher, data.view, data.generic_train, data.class_rows,
                                data.aids.prototypes, ctx.device, num_workers)
    else:
        fisher = [torch.zeros_like(p, dtype=torch.float32, device=ctx.device) for p in vision_params(data.teacher)]
    return distributed.broadcast_from_main(fisher, ctx)


def load_inputs(params: Params, cfg: FinetuneCfg, ctx: distributed.Context) -> Inputs:
    """Everything the recipe's run reads, and nothing it does not."""
    teacher, spec = load_teacher_visual("cpu")
    view = View.of(spec)
    target, generic = params.roles.target, params.roles.generic
    data = Inputs(teacher, view, read_split(params, target, "train"), read_split(params, target, "val"),
                  read_split(params, generic, "train"),
                  read_split(params, generic, "val", params.roles.generic_val_fraction))
    needed = retention.inputs(cfg)
    if retention.CLASS_PROMPTS in needed:
        prototypes, row_of_label = generic_prototypes(params)
        data.class_rows = torch.tensor([row_of_label[int(lab)] for lab in data.generic_train.labels])
        data.aids.prototypes = prototypes
    if retention.FISHER in needed:
        data.aids.fisher = shared_fisher(cfg, data, ctx, params.runtime.num_workers)
    if retention.needs_online_teacher(cfg):
        data.aids.teacher = teacher
    if retention.needs_precomputed_targets(cfg):
        data.targets = precomputed_targets(params, data.generic_train)
    return data


def runtime(params: Params, ctx: Any) -> Runtime:
    """Where this process runs the tower (a `distributed.Context`: its device, rank and world)."""
    return Runtime(ctx.device, params.runtime.precision, params.runtime.compile, ctx.rank, ctx.world)


def evaluation(params: Params) -> Evaluation:
    return Evaluation(params.eval.k, params.features.batch_size, params.runtime.num_workers)


def run_key(params: Params, method: str, cfg: FinetuneCfg) -> str:
    """Identity of a training run: resume state is only reused for exactly the same run."""
    # precision changes the numerics: a bf16 state must not be resumed by an fp32 run (or back)
    blob = {"cfg": asdict(cfg), "method": method, "teacher": read_teacher_spec(),
            "precision": params.runtime.precision,
            "target": asdict(params.datasets[params.roles.target]),
            "generic": asdict(params.datasets[params.roles.generic])}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DiskResume:
    """A run's resumable state in `data/.resume/<run>/<key>.pt`; state of another configuration is dropped."""

    def __init__(self, run: str, key: str):
        self.folder = paths.resume(run)
        self.file = self.folder / f"{key}.pt"

    def load(self, device: torch.device) -> dict[str, Any] | None:
        """The saved state, read with torch's weights-only unpickler: tensors and plain Python values
        only, so a planted file cannot run code (a pickle's `__reduce__` would, with weights_only=False)."""
        if self.file.is_file():
            print(f"[finetune] resuming from {self.file}")
            try:
                return torch.load(self.file, map_location=device, weights_only=True)
            except pickle.UnpicklingError as err:
                why = next((line.strip() for line in str(err).splitlines() if line.startswith(("Trying", "Unsupported"))),
                           "not a plain state")
                raise ValueError(f"{self.file} holds more than tensors and plain values, so it was not loaded ({why}); "
                                 "delete it to start the run afresh") from None
        if self.folder.exists():
            shutil.rmtree(self.folder)  # state of a different configuration: not ours to resume
        return None

    def save(self, state: dict[str, Any]) -> None:
        with pio.atomic_path(self.file) as tmp:
            torch.save(state, tmp)

    def clear(self) -> None:
        """A finished run leaves nothing to resume."""
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def path(self) -> Path:
        return self.file
