"""The fine-tuning step: what one target or generic batch contributes (METHOD §3.4, §4).

    target step:  L = L_cls(NormFace/ArcFace/CosFace) + λ_w·R_w + λ_ewc·R_F
    generic step: L = λ_d·L_distill + λ_lwf·L_lwf + λ_gram·L_gram + λ_gift·L_gift + λ_w·R_w + λ_ewc·R_F
                      (+ λ_awc·R_AWC, GIFT's Fisher of L_gift recomputed on this batch)
    probe step:   L = L_cls with the encoder frozen (the LP phase of LP-FT)

R_w pulls the vision tower toward θ0 (the pretrained weights) uniformly, R_F with EWC's Fisher
weights; the classifier head is excluded from both. Every retention method is a choice of these
weights (params.yaml `methods.<name>`): `infuse` is λ_d, λ_w > 0, `naive` all zero, `lwf` λ_lwf...
The loop itself (data, validation, checkpoints) lives in the `finetune` stage; this module holds
the state that a checkpoint must capture and the arithmetic of a step.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import FinetuneCfg
from pipeline.lib import lora, losses
from pipeline.lib.data import normalize, random_crop_flip, step_generator
from pipeline.lib.models import autocast, embed_images, vision_params

# λ keys of the losses computed on generic batches: generic batches are drawn when one is > 0
GENERIC_TERMS = ("lambda_distill", "lambda_lwf", "lambda_gram", "lambda_gift")


def has_generic_steps(cfg: FinetuneCfg) -> bool:
    """Generic batches are drawn only when a loss uses them (the reference's zero-loss generic
    steps only move AdamW's moments; we skip them, METHOD §3.4 option b)."""
    return cfg.schedule == "round_robin" and any(getattr(cfg, k) > 0 for k in GENERIC_TERMS)


def needs_text_prototypes(cfg: FinetuneCfg) -> bool:
    """LwF logits, GIFT and the EWC Fisher use the generic class prompts' text embeddings."""
    return cfg.lambda_lwf > 0 or cfg.lambda_ewc > 0 or cfg.lambda_gift > 0


def step_plan(cfg: FinetuneCfg) -> list[str]:
    """The domain of every optimisation step: LP-FT's head-only 'probe' steps first, then
    round-robin [target, generic, ...] or target only."""
    if cfg.kind == "pretrained":
        return []
    probe = ["probe"] * cfg.lp_steps
    if has_generic_steps(cfg):
        return probe + ["target", "generic"] * cfg.steps
    return probe + ["target"] * cfg.steps


def zero_shot_logits(emb: torch.Tensor, prototypes: torch.Tensor, scale: float) -> torch.Tensor:
    """CLIP logits of L2-normalised image embeddings against class-prompt text embeddings."""
    return scale * losses._fp32_matmul(emb.float(), prototypes.float().T)


def estimate_fisher(visual: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    prototypes: torch.Tensor, scale: float) -> list[torch.Tensor]:
    """EWC's diagonal Fisher of the pretrained model on generic data, normalised per tensor.

    The log-likelihood is the zero-shot classification of each image among the generic class
    prompts (what the image tower must keep to stay aligned with the frozen text tower); batches
    are (normalised eval views, class rows). Normalising each tensor to mean 1 makes λ_ewc
    comparable to λ_w: a uniform Fisher gives exactly R_w.
    """
    params = vision_params(visual)
    visual.eval()

    def grads() -> Iterable[list[torch.Tensor]]:
        for x, y in batches:
            visual.zero_grad(set_to_none=True)
            F.cross_entropy(zero_shot_logits(embed_images(visual, x), prototypes, scale), y).backward()
            yield [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]

    fisher = losses.normalize_per_tensor(losses.fisher_diagonal(grads()))
    visual.zero_grad(set_to_none=True)
    return fisher


def interpolate_weights(theta0: dict[str, torch.Tensor], theta_ft: dict[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT: (1−α)·θ0 + α·θ_ft per tensor; α = 0 and 1 return exact copies of the endpoints."""
    if theta0.keys() != theta_ft.keys():
        raise ValueError(f"the two models have different tensors: {sorted(theta0.keys() ^ theta_ft.keys())[:5]}")
    if alpha == 0.0 or alpha == 1.0:
        return {k: (theta_ft if alpha else theta0)[k].clone() for k in theta0}
    return {k: torch.lerp(theta0[k].float(), theta_ft[k].float(), alpha).to(theta0[k].dtype) for k in theta0}


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
                 rank: int = 0, world: int = 1, compile: bool = False,
                 prototypes: torch.Tensor | None = None, logit_scale: float = 1.0,
                 fisher: Sequence[torch.Tensor] | None = None):
        self.cfg, self.mean, self.std, self.size = cfg, mean, std, image_size
        self.rank, self.world = rank, world
        if needs_text_prototypes(cfg) and prototypes is None:
            raise ValueError("lambda_lwf / lambda_ewc need the generic class-prompt embeddings (prototypes)")
        if cfg.lambda_ewc > 0 and fisher is None:
            raise ValueError("lambda_ewc > 0 needs a Fisher estimate (estimate_fisher)")
        self.prototypes = prototypes.to(device) if prototypes is not None else None
        self.logit_scale = logit_scale
        self.fisher = [f.to(device) for f in fisher] if fisher is not None else None
        self.device, self.precision, self.seed = device, precision, seed
        torch.manual_seed(seed)  # the classifier's random init (METHOD §2: not from text embeddings)
        self.visual = visual.to(device).train()
        self.classifier = losses.CosineClassifier(embed_dim, n_classes).to(device)
        self.anchors = [p.detach().clone() for p in vision_params(self.visual)]
        if cfg.lora_rank > 0:  # after the classifier's init, so both draw the same numbers as before
            lora.add_lora(self.visual, cfg.lora_rank, cfg.lora_alpha, seed)
        self.teacher = teacher_visual.to(device).eval().requires_grad_(False) if teacher_visual else None
        student: nn.Module = Student(self.visual, self.classifier)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            # generic steps leave the classifier unused: tell DDP not to wait for its gradients
            student = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=True)
        self.forward = torch.compile(student) if compile else student
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for p in vision_params(self.visual) if p.requires_grad], "lr": cfg.lr_backbone},
             {"params": list(self.classifier.parameters()), "lr": cfg.lr_head}],
            lr=cfg.lr_backbone, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)

    # ------------------------------------------------------------------ pieces
    def _views(self, images_uint8: torch.Tensor, step: int) -> torch.Tensor:
        gen = step_generator(self.seed, step)
        crops = random_crop_flip(images_uint8, self.size, gen, self.cfg.hflip, self.rank, self.world,
                                 global_size=self.cfg.batch_size if self.world > 1 else None)
        return normalize(crops.to(self.device, non_blocking=True), self.mean, self.std)

    def regularizers(self) -> tuple[torch.Tensor, dict[str, float]]:
        """λ_w·R_w + λ_ewc·R_F (the terms added on every step) and their logged values."""
        total, logs = torch.zeros((), device=self.device), {}
        if self.cfg.lambda_weights > 0:
            reg = losses.weight_regularizer(vision_params(self.visual), self.anchors)
            total, logs["reg_weights"] = self.cfg.lambda_weights * reg, reg.item()
        if self.cfg.lambda_ewc > 0:
            ewc = losses.weight_regularizer(vision_params(self.visual), self.anchors, self.fisher)
            total, logs["reg_ewc"] = total + self.cfg.lambda_ewc * ewc, ewc.item()
        return total, logs

    def _apply(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    # ------------------------------------------------------------------ steps
    def target_step(self, images_uint8: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        """L_cls + the regularisers on a target-domain batch."""
        x = self._views(images_uint8, step)
        with autocast(self.device, self.precision):
            _, cos = self.forward(x, with_logits=True)
        cls = losses.margin_softmax_loss(cos.float(), labels.to(self.device), scale=self.cfg.scale,
                                         margin=self.cfg.margin, kind=self.cfg.classifier)
        reg, logs = self.regularizers()
        self._apply(cls + reg)
        return {"loss_cls": cls.item(), **logs}

    def probe_step(self, images_uint8: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        """LP-FT's linear probe: L_cls through the frozen encoder, only the head learns."""
        x = self._views(images_uint8, step)
        with torch.no_grad(), autocast(self.device, self.precision):
            emb = embed_images(self.visual, x)
        cls = losses.margin_softmax_loss(self.classifier(emb.float()), labels.to(self.device), scale=self.cfg.scale,
                                         margin=self.cfg.margin, kind=self.cfg.classifier)
        self.optimizer.zero_grad(set_to_none=True)
        cls.backward()
        if self.world > 1:  # the head is used outside DDP here: average its gradients by hand
            for p in self.classifier.parameters():
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world
        self.optimizer.step()
        return {"loss_probe": cls.item()}

    def generic_step(self, images_uint8: torch.Tensor, teacher_emb: torch.Tensor | None,
                     step: int, class_rows: torch.Tensor | None = None) -> dict[str, float]:
        """The retention losses on a generic batch (+ the regularisers). The teacher's embedding is
        the precomputed one of the eval view (reference parity) or, with an online teacher, the
        teacher's embedding of the same augmented view. `class_rows` are the images' rows among the
        generic class prompts (GIFT)."""
        x = self._views(images_uint8, step)
        with autocast(self.device, self.precision):
            emb, _ = self.forward(x, with_logits=False)
            if self.cfg.teacher_targets == "online":
                with torch.no_grad():
                    teacher_emb = embed_images(self.teacher, x)
        assert teacher_emb is not None, "precomputed teacher targets are required on generic steps"
        emb, teacher_emb = emb.float(), teacher_emb.to(self.device).float()
        terms = {}
        if self.cfg.lambda_distill > 0:
            terms["loss_distill"] = (self.cfg.lambda_distill, losses.embedding_distillation_loss(emb, teacher_emb))
        if self.cfg.lambda_lwf > 0:
            tau = self.cfg.lwf_temperature
            terms["loss_lwf"] = (self.cfg.lambda_lwf, losses.logit_distillation_loss(
                zero_shot_logits(emb, self.prototypes, self.logit_scale),
                zero_shot_logits(teacher_emb, self.prototypes, self.logit_scale), tau, tau))
        if self.cfg.lambda_gram > 0:
            terms["loss_gram"] = (self.cfg.lambda_gram, losses.gram_distillation_loss(emb, teacher_emb))
        if self.cfg.lambda_gift > 0:
            assert class_rows is not None, "GIFT needs the generic images' class rows"
            terms["loss_gift"] = (self.cfg.lambda_gift, self._gift_loss(emb, teacher_emb, class_rows.to(self.device)))
        reg, logs = self.regularizers()
        if self.cfg.lambda_awc > 0:
            awc = self._awc_term(terms["loss_gift"][1])
            reg, logs["reg_awc"] = reg + self.cfg.lambda_awc * awc, awc.item()
        self._apply(sum((w * loss for w, loss in terms.values()), torch.zeros((), device=self.device)) + reg)
        return {**{k: loss.item() for k, (_, loss) in terms.items()}, **logs}

    def _gift_loss(self, emb: torch.Tensor, teacher_emb: torch.Tensor, class_rows: torch.Tensor) -> torch.Tensor:
        """GIFT with a frozen text tower: L_cd (image↔text similarity distributions, teacher vs student,
        both directions, temperature T) + λ_ita·L_ita (class-match targets) against each image's class prompt."""
        text = self.prototypes[class_rows]
        cd = losses.gift_contrastive_distillation(emb, teacher_emb, text, self.logit_scale, self.cfg.gift_temperature)
        ita = losses.gift_alignment_loss(emb, text, class_rows, self.logit_scale)
        return cd + self.cfg.gift_ita_weight * ita

    def _awc_term(self, gift_loss: torch.Tensor) -> torch.Tensor:
        """GIFT's adaptive weight consolidation: Σ_ℓ mean(F̂_ℓ (θ−θ0)²) with F = (∇θ L_gift)² of this
        batch, normalised per tensor (mean 1) and detached."""
        params = vision_params(self.visual)
        grads = torch.autograd.grad(gift_loss, params, retain_graph=True, allow_unused=True)
        fisher = losses.normalize_per_tensor([(g if g is not None else torch.zeros_like(p)).detach() ** 2
                                              for g, p in zip(grads, params)])
        return losses.weight_regularizer(params, self.anchors, fisher)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"visual": self.visual.state_dict(), "classifier": self.classifier.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.visual.load_state_dict(state["visual"])
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])

    def vision_weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the vision tower weights (what the checkpoint artifact holds), LoRA merged."""
        if self.cfg.lora_rank > 0:
            return lora.merged_state_dict(self.visual)
        return {k: v.detach().cpu().clone() for k, v in copy.deepcopy(self.visual.state_dict()).items()}
