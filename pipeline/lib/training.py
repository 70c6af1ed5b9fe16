"""The fine-tuning step and loop: what one target or generic batch contributes (METHOD §3.4, §4), the
step schedule, LP-FT's linear probe, checkpoint selection.

    target step:  L = L_cls(NormFace/ArcFace/CosFace) + Σ λ_t·term_t   (terms on target and every batch)
    generic step: L = Σ λ_t·term_t                                     (terms on generic and every batch)

The terms, their λ keys and what they need live in one registry, `pipeline.lib.retention`; the
schedule, the params validation and these steps read it. Every retention method is a choice of λs
(params.yaml `methods.<name>`): `infuse` is λ_d, λ_w > 0, `naive` all zero, `ewc` λ_ewc...
The stage (`pipeline.stages.finetune`) does the I/O: data, teacher targets, checkpoint files.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import FinetuneCfg
from pipeline.lib import lora, losses, retention
from pipeline.lib.data import normalize, random_crop_flip, step_generator
from pipeline.lib.models import autocast, embed_images, vision_params


# ---------------------------------------------------------------------------------------- schedule
def step_plan(cfg: FinetuneCfg) -> list[str]:
    """The domain of every optimisation step: the reference's round-robin [target, generic, ...], or
    target only. Round-robin alternates even when no generic-batch loss exists: the generic steps then
    apply the every-batch regularisers (R_w, EWC), as many times as the reference does."""
    if cfg.kind == "pretrained":
        return []
    if cfg.schedule == "round_robin":
        return ["target", "generic"] * cfg.steps
    return ["target"] * cfg.steps


def validation_points(target_steps: int, validations: int) -> list[int]:
    """Target-step counts after which the model is validated: after the first update (as the
    reference), then `validations − 1` points evenly spread, the last at the last target step.
    Never 0: the untouched weights θ0 are never a candidate of a fine-tuning run."""
    if target_steps < 1:
        return []
    spread = {-(-i * target_steps // (validations - 1)) for i in range(1, validations)}  # ceil, ends at target_steps
    return sorted({1} | spread)


def criterion(scores: dict[str, float], select_on: str) -> float:
    """'all' = mean of target-val and generic-val mAP@k (the paper's choice), 'in-domain' = target only."""
    if select_on == "in-domain":
        return scores["target"]
    return (scores["target"] + scores["generic"]) / 2


class Selection:
    """The best validated checkpoint so far under `select_on` ('last': the last one), and the history.

    Candidates come only from validations after at least one update (`target_steps >= 1`)."""

    def __init__(self, select_on: str, best: dict[str, Any] | None = None, history: list | None = None):
        self.select_on, self.best, self.history = select_on, best, history if history is not None else []

    def consider(self, step: int, target_steps: int, scores: dict[str, float], logs: dict[str, float],
                 weights: Callable[[], dict[str, torch.Tensor]]) -> None:
        if target_steps < 1:
            raise ValueError("the untouched weights are never a checkpoint candidate (validate after an update)")
        self._record(step, target_steps, scores, logs, weights)

    def pretrained(self, scores: dict[str, float], weights: Callable[[], dict[str, torch.Tensor]]) -> None:
        """The `pretrained` method: θ0 is the method itself, its one checkpoint (step 0)."""
        self._record(0, 0, scores, {}, weights)

    def _record(self, step: int, target_steps: int, scores: dict[str, float], logs: dict[str, float],
                weights: Callable[[], dict[str, torch.Tensor]]) -> None:
        crit = criterion(scores, self.select_on)
        self.history.append({"step": step, "target_steps": target_steps, "val_target_map": scores["target"],
                             "val_generic_map": scores["generic"], "criterion": crit, **logs})
        if self.select_on == "last" or self.best is None or crit > self.best["criterion"]:
            self.best = {"step": step, "target_steps": target_steps, "criterion": crit, **scores,
                         "weights": weights()}


def train_steps(tuner: "FineTuner", plan: Sequence[str], step: int, draw_target: Callable[[], tuple],
                draw_generic: Callable[[], tuple], selection: Selection, validate: Callable[[], dict[str, float]],
                points: Iterable[int], checkpoint_every: int = 0, save: Callable[[int], None] | None = None,
                is_main: bool = True, on_step: Callable[[], None] | None = None) -> None:
    """Run `plan` from `step`: a round ends where the next step is a target step (or the plan ends);
    validation (at the target-step counts in `points`) and checkpoints happen only there, so a target
    step and its generic partner are never split. `draw_target()` → (uint8 images, labels);
    `draw_generic()` → (uint8 images | None, teacher embeddings | None, class rows | None). Only
    the main process validates and saves (the others wait in the next all-reduce)."""
    points = set(points)
    target_count = np.cumsum([d == "target" for d in plan]).tolist()
    running: dict[str, list[float]] = {}
    while step < len(plan):
        if plan[step] == "target":
            logs = tuner.target_step(*draw_target(), step)
        else:
            images, teacher_emb, class_rows = draw_generic()
            logs = tuner.generic_step(images, teacher_emb, step, class_rows)
        for k, v in logs.items():
            running.setdefault(k, []).append(v)
        step += 1
        if on_step is not None:
            on_step()
        if step < len(plan) and plan[step] != "target":
            continue
        done = target_count[step - 1]
        if done in points:
            if is_main:
                selection.consider(step, done, validate(), {k: float(np.mean(v)) for k, v in running.items()},
                                   tuner.vision_weights)
            running = {}
        if save is not None and checkpoint_every and done % checkpoint_every == 0 and step < len(plan) and is_main:
            save(step)


# ---------------------------------------------------------------------------------------- EWC's Fisher
FISHER_CHUNK_FLOATS = 2 ** 28  # per-sample gradients held at once (1 GiB): ViT-B/16 → 3 samples per vmap call
FISHER_CHUNK_MAX = 32          # and at most this many samples per call (larger calls were slower on CPU)


def estimate_fisher(visual: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    prototypes: torch.Tensor, scale: float) -> list[torch.Tensor]:
    """EWC's diagonal empirical Fisher of θ0 on generic data, unnormalised: F = (1/N) Σ_n (∇θ log p(y_n|x_n))².

    The log-likelihood is the zero-shot classification of each image among the generic class prompts
    with the teacher's logit scale (what the image tower must keep to stay aligned with the frozen text
    tower); batches are (normalised eval views, class rows). Gradients are per SAMPLE (the square of a
    batch-mean gradient is not the Fisher), computed with torch.func's vmap(grad) over a few samples at
    a time (`FISHER_CHUNK_*`): the same numbers as a loop of single-image backward passes (a test
    checks it), ~3× faster on CPU. Returns one tensor per `vision_params(visual)` entry; touches no `.grad`.
    """
    import warnings

    from torch.func import functional_call, grad, vmap

    visual.eval()
    names = [name for name, _ in sorted(visual.named_parameters(), key=lambda kv: kv[0])]
    theta = {name: p.detach() for name, p in visual.named_parameters()}
    chunk = max(1, min(FISHER_CHUNK_MAX, FISHER_CHUNK_FLOATS // sum(p.numel() for p in theta.values())))

    def log_loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = F.normalize(functional_call(visual, params, (x[None],)).float(), dim=-1, eps=1e-12)
        return F.cross_entropy(losses.zero_shot_logits(emb, prototypes, scale), y[None])

    per_sample_grad = vmap(grad(log_loss), in_dims=(None, 0, 0))

    def per_sample() -> Iterable[list[torch.Tensor]]:
        for x, y in batches:
            for start in range(0, len(x), chunk):
                with warnings.catch_warnings():  # vmap has no batching rule for fused attention: it loops there
                    warnings.filterwarnings("ignore", message=".*performance drop.*")
                    g = per_sample_grad(theta, x[start:start + chunk], y[start:start + chunk])
                for i in range(len(x[start:start + chunk])):
                    yield [g[name][i] for name in names]

    return losses.mean_squared_gradients(per_sample())


# ---------------------------------------------------------------------------------------- LP-FT's probe
def plateaued(history: Sequence[float], patience: int, tol: float) -> bool:
    """True when the loss fell by less than `tol` (relative) over the last `patience` steps."""
    if len(history) <= patience:
        return False
    before, now = history[-1 - patience], history[-1]
    return before - now < tol * abs(before)


# ---------------------------------------------------------------------------------------- WiSE-FT
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
        needed = retention.inputs(cfg)
        if retention.CLASS_PROMPTS in needed and prototypes is None:
            raise ValueError(f"{', '.join(t.key for t in retention.active(cfg))}: need the generic class-prompt "
                             "embeddings (prototypes)")
        if retention.FISHER in needed and fisher is None:
            raise ValueError("lambda_ewc > 0 needs a Fisher estimate (estimate_fisher)")
        if retention.needs_online_teacher(cfg) and teacher_visual is None:
            raise ValueError("this recipe runs the frozen teacher on its batches: pass teacher_visual")
        self.prototypes = prototypes.to(device) if prototypes is not None else None
        self.logit_scale = logit_scale
        self.fisher = [f.to(device) for f in fisher] if fisher is not None else None
        self.awc_fisher: list[torch.Tensor] | None = None  # GIFT's AWC: the latest generic batch's Fisher
        self.device, self.precision, self.seed = device, precision, seed
        torch.manual_seed(seed)  # the classifier's random init (METHOD §2: not from text embeddings)
        self.visual = visual.to(device).train()
        self.classifier = losses.CosineClassifier(embed_dim, n_classes).to(device)
        self.anchors = [p.detach().clone() for p in vision_params(self.visual)]
        if cfg.lora_rank > 0:
            self.visual = lora.add_lora(self.visual, cfg.lora_rank, cfg.lora_alpha, seed).to(device).train()
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
    def params(self) -> list[nn.Parameter]:
        """The vision tower's tensors, in the order of `anchors` (what the weight-space terms pull)."""
        return vision_params(self.visual)

    def _views(self, images_uint8: torch.Tensor, step: int) -> torch.Tensor:
        gen = step_generator(self.seed, step)
        crops = random_crop_flip(images_uint8, self.size, gen, self.cfg.hflip, self.rank, self.world,
                                 global_size=self.cfg.batch_size if self.world > 1 else None)
        return normalize(crops.to(self.device, non_blocking=True), self.mean, self.std)

    def _teacher_embedding(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return embed_images(self.teacher, x)

    def _terms(self, terms: list[retention.Term], batch: retention.Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Σ λ·term over `terms` on this batch, and each unweighted value for the logs."""
        total, logs = torch.zeros((), device=self.device), {}
        for term in terms:
            value = term.loss(self, batch)
            batch.values[term.key] = value
            total = total + getattr(self.cfg, term.key) * value
            logs[term.log] = value.item()
        return total, logs

    def _apply(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    # ------------------------------------------------------------------ steps
    def target_step(self, images_uint8: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        """L_cls + the target-batch and every-batch terms on a target-domain batch."""
        terms = retention.terms_on(self.cfg, retention.TARGET)
        x = self._views(images_uint8, step)
        with autocast(self.device, self.precision):
            emb, cos = self.forward(x, with_logits=True)
            teacher_emb = (self._teacher_embedding(x) if any(retention.ONLINE_TEACHER in t.inputs for t in terms)
                           else None)
        cls = losses.margin_softmax_loss(cos.float(), labels.to(self.device), scale=self.cfg.scale,
                                         margin=self.cfg.margin, kind=self.cfg.classifier)
        batch = retention.Batch(retention.TARGET, emb.float(),
                                teacher_emb.float() if teacher_emb is not None else None)
        reg, logs = self._terms(terms, batch)
        self._apply(cls + reg)
        return {"loss_cls": cls.item(), **logs}

    def generic_step(self, images_uint8: torch.Tensor | None, teacher_emb: torch.Tensor | None,
                     step: int, class_rows: torch.Tensor | None = None) -> dict[str, float]:
        """The generic-batch and every-batch terms. The images are embedded only when a generic-batch
        term uses them; the teacher's embedding is the precomputed one of the eval view (reference
        parity) or, with an online teacher, its embedding of the same augmented view. `class_rows`
        are the images' rows among the generic class prompts (GIFT). Nothing to compute: a no-op."""
        terms = retention.terms_on(self.cfg, retention.GENERIC)
        if not terms:
            return {}
        batch = retention.Batch(retention.GENERIC)
        if any(t.batches == retention.GENERIC for t in terms):
            assert images_uint8 is not None, "a generic-batch term needs the generic images"
            x = self._views(images_uint8, step)
            with autocast(self.device, self.precision):
                emb, _ = self.forward(x, with_logits=False)
                if self.cfg.teacher_targets == "online":
                    teacher_emb = self._teacher_embedding(x)
            assert teacher_emb is not None, "precomputed teacher targets are required on generic steps"
            batch.emb, batch.teacher_emb = emb.float(), teacher_emb.to(self.device).float()
            if any(retention.CLASS_ROWS in t.inputs for t in terms if t.batches == retention.GENERIC):
                assert class_rows is not None, "GIFT needs the generic images' class rows"
                batch.class_rows = class_rows.to(self.device)
        total, logs = self._terms(terms, batch)
        self._apply(total)
        return logs

    def fit_probe(self, emb: torch.Tensor, labels: torch.Tensor, chunk: int = 8192) -> dict[str, float]:
        """LP-FT's linear probe: the head alone on the frozen encoder's features of the target train
        images (eval view, as LP-FT's probe sees fixed features), full-batch AdamW (lr_head) until the
        training loss plateaus (`lp_patience`, `lp_tol`) or `lp_max_steps`. The target val classes are
        disjoint from the train classes, so no validation can score a head: convergence is the rule.
        Under DDP rank 0's head is broadcast, so every rank starts fine-tuning from the same one."""
        cfg = self.cfg
        emb, labels = emb.to(self.device).float(), labels.to(self.device)
        opt = torch.optim.AdamW(self.classifier.parameters(), lr=cfg.lr_head, weight_decay=cfg.weight_decay)
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
        if self.world > 1:
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
