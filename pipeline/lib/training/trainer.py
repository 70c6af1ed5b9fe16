"""The trainer: vision tower + cosine classifier + optimizer + θ0 anchors, and one step of each kind.

Runs unchanged on CPU, on one GPU (optionally bf16 autocast and torch.compile) and under torchrun
(DistributedDataParallel; each rank feeds its slice of the global batch).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from hydra.utils import get_method
from torch import nn

from pipeline.lib import lora, losses, retention
from pipeline.lib.data import normalize, random_crop_flip, step_generator
from pipeline.lib.embedding import View
from pipeline.lib.models import autocast, embed_images, vision_params
from pipeline.lib.recipes import FinetuneCfg


@dataclass(frozen=True)
class Runtime:
    """Where and how the tower runs: the device, bf16 autocast, torch.compile, this rank of how many."""
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    compile: bool = False
    rank: int = 0
    world: int = 1


@dataclass
class Aids:
    """What the active retention terms read besides the batches (`retention.inputs` decides which):
    the generic class prompts' text embeddings, EWC's Fisher, a frozen θ0 to run on the batches."""
    prototypes: torch.Tensor | None = None
    fisher: Sequence[torch.Tensor] | None = None
    teacher: nn.Module | None = None

    def missing(self, cfg: FinetuneCfg) -> list[str]:
        """What the recipe's terms need and these aids lack."""
        needed = retention.inputs(cfg)
        lacking = [what for name, what, have in ((retention.CLASS_PROMPTS, "the class-prompt embeddings", self.prototypes),
                                                 (retention.FISHER, "EWC's Fisher estimate", self.fisher))
                   if name in needed and have is None]
        return lacking + (["a frozen teacher"] if retention.needs_online_teacher(cfg) and self.teacher is None else [])


class Student(nn.Module):
    """Vision tower + classifier as one module, so DDP synchronises both in one backward."""

    def __init__(self, visual: nn.Module, classifier: nn.Module):
        super().__init__()
        self.visual, self.classifier = visual, classifier

    def forward(self, x: torch.Tensor, with_logits: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = embed_images(self.visual, x)
        return emb, (self.classifier(emb) if with_logits else None)


def plateaued(history: Sequence[float], patience: int, tol: float) -> bool:
    """True when the loss fell by less than `tol` (relative) over the last `patience` steps."""
    if len(history) <= patience:
        return False
    before, now = history[-1 - patience], history[-1]
    return before - now < tol * abs(before)


class FineTuner:
    """Everything a step needs; `target_step` and `generic_step` each take one batch."""

    def __init__(self, visual: nn.Module, n_classes: int, cfg: FinetuneCfg, view: View,
                 run: Runtime = Runtime(), aids: Aids = Aids()):
        if aids.missing(cfg):
            raise ValueError(f"{', '.join(t.key for t in retention.active(cfg))}: need {', '.join(aids.missing(cfg))}")
        self.cfg, self.view, self.run, self.device = cfg, view, run, run.device
        device = run.device
        self.aids = Aids(aids.prototypes.to(device) if aids.prototypes is not None else None,
                         [f.to(device) for f in aids.fisher] if aids.fisher is not None else None,
                         aids.teacher.to(device).eval().requires_grad_(False) if aids.teacher else None)
        self.awc_fisher: list[torch.Tensor] | None = None  # GIFT's AWC: the latest generic batch's Fisher
        self.terms = [(t, get_method(t.loss)) for t in retention.active(cfg)]
        torch.manual_seed(cfg.seed)  # the classifier's random init (not from text embeddings, as the reference)
        self.visual = visual.to(device).train()
        self.classifier = losses.CosineClassifier(view.embed_dim, n_classes).to(device)
        self.anchors = [p.detach().clone() for p in vision_params(self.visual)]
        if cfg.lora_rank > 0:
            self.visual = lora.add_lora(self.visual, cfg.lora_rank, cfg.lora_alpha, cfg.seed).to(device).train()
        self.forward = self._wrap(Student(self.visual, self.classifier))
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for p in vision_params(self.visual) if p.requires_grad], "lr": cfg.lr_backbone},
             {"params": list(self.classifier.parameters()), "lr": cfg.head_lr_ratio * cfg.lr_backbone}],
            lr=cfg.lr_backbone, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)

    def _wrap(self, student: nn.Module) -> nn.Module:
        if self.run.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            # generic steps leave the classifier unused: tell DDP not to wait for its gradients
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            student = DistributedDataParallel(student, device_ids=device_ids, find_unused_parameters=True)
        return torch.compile(student) if self.run.compile else student

    # ------------------------------------------------------------------ pieces
    def params(self) -> list[nn.Parameter]:
        """The vision tower's tensors, in the order of `anchors` (what the weight-space terms pull)."""
        return vision_params(self.visual)

    def _views(self, images_uint8: torch.Tensor, step: int, stream: int = 0) -> torch.Tensor:
        gen = step_generator(self.cfg.seed, step, stream)
        crops = random_crop_flip(images_uint8, self.view.image_size, gen, self.cfg.hflip, self.run.rank,
                                 self.run.world, global_size=self.cfg.batch_size if self.run.world > 1 else None)
        return normalize(crops.to(self.device, non_blocking=True), self.view.mean, self.view.std)

    def _embed(self, x: torch.Tensor, with_logits: bool, online: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(student embeddings, cosine logits | None, frozen teacher's embeddings | None) of one batch,
        in one forward (DDP wants one forward per backward)."""
        with autocast(self.device, self.run.precision):
            emb, cos = self.forward(x, with_logits=with_logits)
            if online:
                with torch.no_grad():
                    teacher = embed_images(self.aids.teacher, x)
            else:
                teacher = None
        return emb.float(), cos, teacher.float() if teacher is not None else None

    def _terms(self, batches: str, batch: retention.Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Σ λ·term over the active terms that run on `batches` (target | generic | every), each
        computed on `batch`, and each unweighted value for the logs."""
        total, logs = torch.zeros((), device=self.device), {}
        for term, loss in self.terms:
            if term.batches != batches:
                continue
            value = loss(self, batch)
            batch.values[term.key] = value
            total = total + getattr(self.cfg, term.key) * value
            logs[term.log] = value.item()
        return total, logs

    def _apply(self, loss: torch.Tensor | None) -> None:
        """One AdamW step. Gradients are zeroed, not dropped, so a tensor the loss does not reach (or a
        step without a loss) still moves along its moments, as an optax step does."""
        self.optimizer.zero_grad(set_to_none=False)
        if loss is not None:
            loss.backward()
        self.optimizer.step()

    def _classification(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return losses.margin_softmax_loss(cos.float(), labels.to(self.device), scale=self.cfg.scale,
                                          margin=self.cfg.margin, kind=self.cfg.classifier)

    def _replay_batch(self, emb: torch.Tensor, teacher_emb: torch.Tensor | None,
                      class_rows: torch.Tensor | None) -> retention.Batch:
        assert teacher_emb is not None, "a replay-batch term needs the teacher's embeddings of the replay images"
        needs_rows = any(retention.CLASS_ROWS in t.inputs for t, _ in self.terms if t.batches == retention.GENERIC)
        assert class_rows is not None or not needs_rows, "GIFT needs the generic images' class rows"
        if class_rows is not None:
            class_rows = class_rows.to(self.device)
        return retention.Batch(retention.GENERIC, emb, teacher_emb.to(self.device).float(), class_rows)

    # ------------------------------------------------------------------ steps
    def joint_step(self, images_uint8: torch.Tensor, labels: torch.Tensor, replay: tuple | None,
                   step: int) -> dict[str, float]:
        """One optimizer step on a target batch and, when a replay-batch term is on, the step's replay
        batch: L_cls + target terms + replay terms + every-batch terms, one backward. `replay` is
        (uint8 images, precomputed teacher embeddings | None, class rows | None)."""
        on_replay = retention.draws_generic_batches(self.cfg)
        online_target = any(retention.ONLINE_TEACHER in t.inputs for t in retention.terms_on(self.cfg, retention.TARGET))
        x = self._views(images_uint8, step)
        n = len(x)
        if on_replay:
            assert replay is not None and replay[0] is not None, "a replay-batch term needs the replay images"
            x = torch.cat([x, self._views(replay[0], step, stream=1)])
        online = online_target or (on_replay and self.cfg.teacher_targets == "online")
        emb, cos, teacher = self._embed(x, with_logits=True, online=online)
        cls = self._classification(cos[:n], labels)
        target = retention.Batch(retention.TARGET, emb[:n], teacher[:n] if teacher is not None else None)
        total, logs = self._terms(retention.TARGET, target)
        last = target
        if on_replay:
            teacher_replay = teacher[n:] if self.cfg.teacher_targets == "online" else replay[1]
            last = self._replay_batch(emb[n:], teacher_replay, replay[2])
            replay_loss, replay_logs = self._terms(retention.GENERIC, last)
            total, logs = total + replay_loss, {**logs, **replay_logs}
        every, every_logs = self._terms(retention.EVERY, last)  # AWC reads this step's GIFT loss
        self._apply(cls + total + every)
        return {"loss_cls": cls.item(), **logs, **every_logs}

    def target_step(self, images_uint8: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        """Round-robin: L_cls + the target-batch and every-batch terms on a target batch."""
        online = any(retention.ONLINE_TEACHER in t.inputs for t in retention.terms_on(self.cfg, retention.TARGET))
        emb, cos, teacher = self._embed(self._views(images_uint8, step), with_logits=True, online=online)
        cls = self._classification(cos, labels)
        batch = retention.Batch(retention.TARGET, emb, teacher)
        total, logs = self._terms(retention.TARGET, batch)
        every, every_logs = self._terms(retention.EVERY, batch)
        self._apply(cls + total + every)
        return {"loss_cls": cls.item(), **logs, **every_logs}

    def generic_step(self, images_uint8: torch.Tensor | None, teacher_emb: torch.Tensor | None,
                     step: int, class_rows: torch.Tensor | None = None) -> dict[str, float]:
        """Round-robin: the replay-batch and every-batch terms. The images are embedded only when a
        replay-batch term uses them; the teacher's embedding is the precomputed one of the eval view
        (reference parity) or, with an online teacher, its embedding of the same augmented view.
        Without any term this is the reference's zero-loss step: AdamW on zero gradients."""
        batch = retention.Batch(retention.GENERIC)
        total, logs = torch.zeros((), device=self.device), {}
        if retention.draws_generic_batches(self.cfg):
            assert images_uint8 is not None, "a generic-batch term needs the generic images"
            online = self.cfg.teacher_targets == "online"
            emb, _, teacher = self._embed(self._views(images_uint8, step), with_logits=False, online=online)
            batch = self._replay_batch(emb, teacher if online else teacher_emb, class_rows)
            total, logs = self._terms(retention.GENERIC, batch)
        every, every_logs = self._terms(retention.EVERY, batch)
        logs.update(every_logs)
        self._apply(total + every if logs else None)
        return logs

    def fit_probe(self, emb: torch.Tensor, labels: torch.Tensor, chunk: int = 8192) -> dict[str, Any]:
        """LP-FT's linear probe: the head alone on the frozen encoder's features of the target train
        images (eval view, as LP-FT's probe sees fixed features), full-batch AdamW (lp_lr) until the
        training loss plateaus (`lp_patience`, `lp_tol`) or `lp_max_steps`. The target val classes are
        disjoint from the train classes, so no validation can score a head: convergence is the rule.
        Under DDP rank 0's head is broadcast, so every rank starts fine-tuning from the same one."""
        cfg = self.cfg
        emb, labels = emb.to(self.device).float(), labels.to(self.device)
        opt = torch.optim.AdamW(self.classifier.parameters(), lr=cfg.lp_lr, weight_decay=cfg.weight_decay)
        history: list[float] = []
        while len(history) < cfg.lp_max_steps and not plateaued(history, cfg.lp_patience, cfg.lp_tol):
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for start in range(0, len(emb), chunk):  # the exact full-batch gradient, in bounded memory
                rows = slice(start, start + chunk)
                part = losses.margin_softmax_loss(self.classifier(emb[rows]), labels[rows], scale=cfg.scale,
                                                  margin=cfg.margin, kind=cfg.classifier)
                weight = len(labels[rows]) / len(labels)
                (weight * part).backward()
                total += weight * part.item()
            opt.step()
            history.append(total)
        if self.run.world > 1:
            torch.distributed.broadcast(self.classifier.weight.data, 0)
        return {"probe_steps": len(history), "probe_loss": history[-1] if history else float("nan"),
                "probe_converged": plateaued(history, cfg.lp_patience, cfg.lp_tol)}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"visual": self.visual.state_dict(), "classifier": self.classifier.state_dict(),
                "optimizer": self.optimizer.state_dict(), "awc_fisher": self.awc_fisher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.visual.load_state_dict(state["visual"])
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.awc_fisher = state.get("awc_fisher")

    def vision_weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the vision tower weights (what the checkpoint artifact holds), LoRA merged."""
        if self.cfg.lora_rank > 0:
            return lora.merged_state_dict(self.visual)
        return {k: v.detach().cpu().clone() for k, v in copy.deepcopy(self.visual.state_dict()).items()}
