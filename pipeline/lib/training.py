"""The fine-tuning step: what one target or generic batch contributes (METHOD §3.4).

    target step:  L = L_cls(NormFace/ArcFace/CosFace) + λ_w·R_w
    generic step: L = λ_d·L_distill + λ_w·R_w

R_w pulls the vision tower toward θ0 (the pretrained weights); the classifier head is excluded.
The loop itself (data, validation, checkpoints) lives in the `finetune` stage; this module holds
the state that a checkpoint must capture and the arithmetic of a step.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from pipeline.config import FinetuneCfg
from pipeline.lib import losses
from pipeline.lib.data import normalize, random_crop_flip, step_generator
from pipeline.lib.models import autocast, embed_images, vision_params


def has_generic_steps(cfg: FinetuneCfg) -> bool:
    """Generic batches are drawn only when a loss uses them (the reference's zero-loss generic
    steps only move AdamW's moments; we skip them, METHOD §3.4 option b)."""
    return cfg.schedule == "round_robin" and cfg.lambda_distill > 0


def step_plan(cfg: FinetuneCfg) -> list[str]:
    """The domain of every optimisation step: round-robin [target, generic, ...] or target only."""
    if cfg.kind == "pretrained":
        return []
    if has_generic_steps(cfg):
        return ["target", "generic"] * cfg.steps
    return ["target"] * cfg.steps


class Student(nn.Module):
    """Vision tower + classifier as one module, so DDP synchronises both in one backward."""

    def __init__(self, visual: nn.Module, classifier: nn.Module):
        super().__init__()
        self.visual, self.classifier = visual, classifier

    def forward(self, x: torch.Tensor, with_logits: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = embed_images(self.visual, x)
        return emb, (self.classifier(emb) if with_logits else None)


class FineTuner:
    """Vision tower + cosine classifier + optimizer + θ0 anchors: everything a step needs.

    Runs unchanged on CPU, on one GPU (optionally bf16 autocast and torch.compile) and under
    torchrun (DistributedDataParallel; each rank feeds its slice of the global batch).
    """

    def __init__(self, visual: nn.Module, n_classes: int, embed_dim: int, cfg: FinetuneCfg,
                 mean: Sequence[float], std: Sequence[float], image_size: int, device: torch.device,
                 precision: str = "fp32", seed: int = 0, teacher_visual: nn.Module | None = None,
                 rank: int = 0, world: int = 1, compile: bool = False):
        self.cfg, self.mean, self.std, self.size = cfg, mean, std, image_size
        self.rank, self.world = rank, world
        self.device, self.precision, self.seed = device, precision, seed
        torch.manual_seed(seed)  # the classifier's random init (METHOD §2: not from text embeddings)
        self.visual = visual.to(device).train()
        self.classifier = losses.CosineClassifier(embed_dim, n_classes).to(device)
        self.anchors = [p.detach().clone() for p in vision_params(self.visual)]
        self.teacher = teacher_visual.to(device).eval().requires_grad_(False) if teacher_visual else None
        student: nn.Module = Student(self.visual, self.classifier)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            # generic steps leave the classifier unused: tell DDP not to wait for its gradients
            student = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=True)
        self.forward = torch.compile(student) if compile else student
        self.optimizer = torch.optim.AdamW(
            [{"params": vision_params(self.visual), "lr": cfg.lr_backbone},
             {"params": list(self.classifier.parameters()), "lr": cfg.lr_head}],
            lr=cfg.lr_backbone, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)

    # ------------------------------------------------------------------ pieces
    def _views(self, images_uint8: torch.Tensor, step: int) -> torch.Tensor:
        gen = step_generator(self.seed, step)
        crops = random_crop_flip(images_uint8, self.size, gen, self.cfg.hflip, self.rank, self.world,
                                 global_size=self.cfg.batch_size if self.world > 1 else None)
        return normalize(crops.to(self.device, non_blocking=True), self.mean, self.std)

    def weight_term(self) -> torch.Tensor:
        if self.cfg.lambda_weights == 0:
            return torch.zeros((), device=self.device)
        return losses.weight_regularizer(vision_params(self.visual), self.anchors)

    def _apply(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    # ------------------------------------------------------------------ steps
    def target_step(self, images_uint8: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        """L_cls + λ_w·R_w on a target-domain batch."""
        x = self._views(images_uint8, step)
        with autocast(self.device, self.precision):
            _, cos = self.forward(x, with_logits=True)
        cls = losses.margin_softmax_loss(cos.float(), labels.to(self.device), scale=self.cfg.scale,
                                         margin=self.cfg.margin, kind=self.cfg.classifier)
        reg = self.weight_term()
        self._apply(cls + self.cfg.lambda_weights * reg)
        return {"loss_cls": cls.item(), "reg_weights": reg.item()}

    def generic_step(self, images_uint8: torch.Tensor, teacher_emb: torch.Tensor | None,
                     step: int) -> dict[str, float]:
        """λ_d·L_distill + λ_w·R_w on a generic batch; the target is the precomputed teacher
        embedding of the eval view (reference parity) or, with an online teacher, the teacher's
        embedding of the same augmented view."""
        x = self._views(images_uint8, step)
        with autocast(self.device, self.precision):
            emb, _ = self.forward(x, with_logits=False)
            if self.cfg.teacher_targets == "online":
                with torch.no_grad():
                    teacher_emb = embed_images(self.teacher, x)
        assert teacher_emb is not None, "precomputed teacher targets are required on generic steps"
        distill = losses.embedding_distillation_loss(emb.float(), teacher_emb.to(self.device).float())
        reg = self.weight_term()
        self._apply(self.cfg.lambda_distill * distill + self.cfg.lambda_weights * reg)
        return {"loss_distill": distill.item(), "reg_weights": reg.item()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"visual": self.visual.state_dict(), "classifier": self.classifier.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.visual.load_state_dict(state["visual"])
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])

    def vision_weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the vision tower weights (what the checkpoint artifact holds)."""
        return {k: v.detach().cpu().clone() for k, v in copy.deepcopy(self.visual.state_dict()).items()}
