"""Losses of the method and its retention baselines (METHOD §3, §4, §11)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Module):
    """cos_{i,c} = f(x_i)ᵀ w_c / ‖w_c‖ (bias-free, randomly initialised; METHOD §3.1)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        bound = math.sqrt(3.0 / dim)  # lecun-uniform, as the reference's Dense init
        self.weight = nn.Parameter(torch.empty(n_classes, dim).uniform_(-bound, bound))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb, dim=-1, eps=1e-12) @ F.normalize(self.weight, dim=-1, eps=1e-12).T


def margin_softmax_loss(cos: torch.Tensor, labels: torch.Tensor, scale: float = 16.0, margin: float = 0.0,
                        kind: str = "normface", label_smoothing: float = 0.0) -> torch.Tensor:
    """CE(s·cos) with an optional margin on the target logit: CosFace cos−m, ArcFace cos(θ+m)."""
    cos = cos.float()
    target = cos.gather(1, labels[:, None])
    if kind == "normface":
        adjusted = target
    elif kind == "cosface":
        adjusted = target - margin
    elif kind == "arcface":
        adjusted = torch.cos(torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7)) + margin)
    else:
        raise ValueError(f"unknown margin loss kind '{kind}' (normface | cosface | arcface)")
    logits = cos.scatter(1, labels[:, None], adjusted)
    return F.cross_entropy(scale * logits, labels, label_smoothing=label_smoothing)


def embedding_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_i (1/D)‖f_s − f_t‖² (METHOD §3.2); inputs already L2-normalised."""
    return ((student.float() - teacher.float()) ** 2).mean()


def weight_regularizer(params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor],
                       weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """R_w = Σ_tensors mean_j(w_j (θ_j − θ0_j)²) — a sum of per-tensor means (METHOD §3.3);
    with per-tensor Fisher `weights` it is the EWC penalty. Callers pass vision-tower tensors only."""
    terms = [((p.float() - a.float()) ** 2 * (w.float() if weights is not None else 1.0)).mean()
             for p, a, w in zip(params, anchors, weights if weights is not None else [None] * len(params))]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def fisher_diagonal(grads_per_batch: Iterable[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Empirical Fisher: mean over batches of squared gradients, per tensor."""
    total, n = None, 0
    for grads in grads_per_batch:
        sq = [g.detach().float() ** 2 for g in grads]
        total = sq if total is None else [t + s for t, s in zip(total, sq)]
        n += 1
    if total is None:
        raise ValueError("fisher_diagonal needs at least one batch of gradients")
    return [t / n for t in total]


def normalize_per_tensor(fisher: Sequence[torch.Tensor], eps: float = 1e-12) -> list[torch.Tensor]:
    """Each tensor divided by its mean (GIFT's adaptive weight consolidation normalisation)."""
    return [f / (f.mean() + eps) for f in fisher]


def logit_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                            t_student: float = 1.0, t_teacher: float = 1.0) -> torch.Tensor:
    """mean_i KL(softmax(z_T/τ_T) ‖ softmax(z_S/τ_S)), teacher detached (LwF)."""
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t_teacher, dim=-1)
    log_p_s = F.log_softmax(student_logits.float() / t_student, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()


def gram_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean_{i,j}(s_iᵀs_j − t_iᵀt_j)²: batch similarity-structure distillation."""
    s, t = student.float(), teacher.detach().float()
    return ((s @ s.T - t @ t.T) ** 2).mean()


def _soft_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def gift_contrastive_distillation(student_img: torch.Tensor, teacher_img: torch.Tensor, text: torch.Tensor,
                                  logit_scale: float, temperature: float = 2.0) -> torch.Tensor:
    """GIFT L_cd against a frozen text tower: T²·[KL rows + KL columns] of image-text similarity
    distributions. We subtract the teacher entropy from the soft CE, making it a KL (zero when
    student == teacher) with the same gradient."""
    zs = logit_scale * student_img.float() @ text.float().T
    zt = logit_scale * teacher_img.detach().float() @ text.float().T
    loss = 0.0
    for s, t in ((zs, zt), (zs.T, zt.T)):
        p_t = F.softmax(t / temperature, dim=-1)
        loss = loss + _soft_ce(s / temperature, p_t) - _soft_ce(t / temperature, p_t)
    return temperature ** 2 * loss


def gift_alignment_loss(student_img: torch.Tensor, text: torch.Tensor, class_ids: torch.Tensor,
                        logit_scale: float) -> torch.Tensor:
    """L_ita = CE(Z, Y) + CE(Zᵀ, Y), Z = scale·I Tᵀ, Y_ij = 1[c_i = c_j] row-normalised."""
    z = logit_scale * student_img.float() @ text.float().T
    same = (class_ids[:, None] == class_ids[None, :]).float()
    y = same / same.sum(1, keepdim=True)
    return _soft_ce(z, y) + _soft_ce(z.T, y)
