"""Losses of the method and its retention baselines (docs/method.md, docs/baselines.md).

All reductions run in float32: inputs are cast with `.float()` and the matmuls run with autocast disabled, because
under bf16 autocast a cosine carries ~3 significant digits, which swamps distillation targets near zero.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _fp32_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in float32 even inside an autocast region (autocast would otherwise recast .float() inputs to bf16)."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        return a.float() @ b.float()


class CosineClassifier(nn.Module):
    """cos_{i,c} = f(x_i)ᵀ w_c / (‖f(x_i)‖‖w_c‖): bias-free `Linear(D→C)` weight, random init (docs/method.md)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        bound = math.sqrt(3.0 / dim)  # lecun-uniform, as the reference's Dense init (not text-initialised)
        self.weight = nn.Parameter(torch.empty(n_classes, dim).uniform_(-bound, bound))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return _fp32_matmul(F.normalize(emb.float(), dim=-1, eps=1e-12),
                            F.normalize(self.weight.float(), dim=-1, eps=1e-12).T)


def margin_softmax_loss(cos: torch.Tensor, labels: torch.Tensor, scale: float = 16.0, margin: float = 0.0,
                        kind: str = "normface", label_smoothing: float = 0.0) -> torch.Tensor:
    """mean_i CE(s·cos'_i, y_i), cos' = cos except the target logit: NormFace cos, CosFace cos−m, ArcFace cos(θ+m)."""
    cos = cos.float()
    target = cos.gather(1, labels[:, None])
    if kind == "normface":
        adjusted = target
    elif kind == "cosface":
        adjusted = target - margin
    elif kind == "arcface":
        # clamp keeps acos (and its 1/sqrt(1−x²) gradient) finite at |cos| = 1
        adjusted = torch.cos(torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7)) + margin)
    else:
        raise ValueError(f"unknown margin loss kind '{kind}' (normface | cosface | arcface)")
    logits = cos.scatter(1, labels[:, None], adjusted)
    return F.cross_entropy(scale * logits, labels, label_smoothing=label_smoothing)


def embedding_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_i (1/D)‖f_s − f_t‖² (docs/method.md) = mean (2 − 2cos)/D; inputs are already L2-normalised, not redone."""
    return ((student.float() - teacher.float()) ** 2).mean()


def weight_regularizer(params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor]) -> torch.Tensor:
    """R_w = Σ_ℓ mean_j (θ_ℓj − θ0_ℓj)²: a SUM over tensors of per-tensor MEANS, not a global sum (docs/method.md).

    The reference's L2-SP form; its per-element pull scales with 1/(tensor size). The caller passes
    vision-tower tensors only: the classifier head is excluded from R_w.
    """
    terms = [((p.float() - a.detach().float()) ** 2).mean() for p, a in zip(params, anchors, strict=True)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def fisher_penalty(params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor],
                   fisher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_ℓ Σ_j F_ℓj (θ_ℓj − θ0_ℓj)²: an ELEMENT sum over every tensor (EWC; GIFT's `ewc_loss`).

    EWC (Kirkpatrick et al.) writes (λ/2)·Σ F(θ − θ*)²; our λ_ewc multiplies the sum without the ½.
    """
    terms = [(f.detach().float() * (p.float() - a.detach().float()) ** 2).sum()
             for p, a, f in zip(params, anchors, fisher, strict=True)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def mean_squared_gradients(grads_per_sample: Iterable[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Diagonal empirical Fisher F = (1/N) Σ_n g_n², per tensor, from per-sample gradients g_n."""
    total, n = None, 0
    for grads in grads_per_sample:
        sq = [g.detach().float() ** 2 for g in grads]
        total = sq if total is None else [t + s for t, s in zip(total, sq, strict=True)]
        n += 1
    if total is None:
        raise ValueError("the Fisher needs the gradient of at least one sample")
    return [t / n for t in total]


GIFT_NO_GRADIENT = 1e-6  # GIFT's Fisher entry for a tensor the distillation loss does not reach


def gift_fisher(loss: torch.Tensor, params: Sequence[torch.Tensor], eps: float = 1e-12,
                reduce=None) -> list[torch.Tensor]:
    """GIFT's adaptive-weight-consolidation Fisher of one batch: F̂_ℓ = g_ℓ² / mean(g_ℓ²), g = ∇_θ loss.

    As GIFT's `finetune_gift.py`: the squared gradient of this batch's distillation losses, normalised
    to mean 1 within each tensor, detached; a tensor without a gradient gets 1e-6 everywhere. `eps`
    only guards a tensor whose gradient is exactly zero (GIFT would divide by 0). `reduce` (under data
    parallelism: the mean over ranks) turns each process's share of the gradient into the whole one.
    """
    grads = list(torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True))
    if reduce is not None:
        present = [g for g in grads if g is not None]
        reduce(present)
    out = []
    for g, p in zip(grads, params, strict=True):
        if g is None:
            out.append(torch.full_like(p, GIFT_NO_GRADIENT, dtype=torch.float32).detach())
        else:
            sq = g.detach().float() ** 2
            out.append(sq / (sq.mean() + eps))
    return out


def zero_shot_logits(emb: torch.Tensor, prototypes: torch.Tensor, scale: float) -> torch.Tensor:
    """CLIP logits of L2-normalised image embeddings against class-prompt text embeddings."""
    return scale * _fp32_matmul(emb.float(), prototypes.float().T)


def logit_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                            t_student: float = 1.0, t_teacher: float = 1.0) -> torch.Tensor:
    """mean_i KL(softmax(z_T/τ_T) ‖ softmax(z_S/τ_S)), teacher detached (LwF; docs/baselines.md#lwf-canonical-and-replay-logits)."""
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t_teacher, dim=-1)
    log_p_s = F.log_softmax(student_logits.float() / t_student, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()


def gram_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean_{i,j}(s_iᵀs_j − t_iᵀt_j)²: batch similarity-structure distillation (docs/baselines.md#gram-similarity-structure-distillation), teacher detached."""
    s, t = student.float(), teacher.detach().float()
    return ((_fp32_matmul(s, s.T) - _fp32_matmul(t, t.T)) ** 2).mean()


def _soft_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """mean_rows −Σ_j p_j log softmax(z)_j."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def gift_contrastive_distillation(student_img: torch.Tensor, teacher_img: torch.Tensor, text: torch.Tensor,
                                  logit_scale: float, temperature: float = 2.0) -> torch.Tensor:
    """GIFT L_cd against a frozen text tower (docs/baselines.md#gift), Z_S = s·Ĩ_S Tᵀ, Z_T = s·Ĩ_T Tᵀ over B images × B texts:

        L = T²·[KL(softmax(Z_T/T) ‖ softmax(Z_S/T)) + KL(softmax(Z_Tᵀ/T) ‖ softmax(Z_Sᵀ/T))]   (mean over rows)

    GIFT writes soft CE; we subtract the teacher entropy so the value is a KL and exactly 0 when student == teacher.
    The entropy does not depend on the student, so the gradient is GIFT's. Teacher and text are detached.
    """
    text = text.detach()
    zs = logit_scale * _fp32_matmul(student_img, text.T)
    zt = logit_scale * _fp32_matmul(teacher_img.detach(), text.T)
    loss = zs.new_zeros(())
    for s, t in ((zs, zt), (zs.T, zt.T)):  # image→text rows, then text→image rows
        p_t = F.softmax(t / temperature, dim=-1)
        loss = loss + _soft_ce(s / temperature, p_t) - _soft_ce(t / temperature, p_t)
    return temperature ** 2 * loss


def gift_alignment_loss(student_img: torch.Tensor, text: torch.Tensor, class_ids: torch.Tensor,
                        logit_scale: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """GIFT L_ita = CE(Z, Y_ε) + CE(Zᵀ, Y_ε), Z = s·I Tᵀ over B images × B texts (docs/baselines.md#gift).

    Y_ij = 1[c_i = c_j] row-normalised (same-class pairs share target mass; symmetric before
    normalisation, so the same Y serves both directions). As GIFT's code, the targets are smoothed by
    `F.cross_entropy(..., label_smoothing=ε)`: Y_ε = (1 − ε)·Y + ε/B (GIFT: ε = 0.2, its `--ls`).
    """
    z = logit_scale * _fp32_matmul(student_img, text.T)
    same = (class_ids[:, None] == class_ids[None, :]).float()
    y = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(z, y, label_smoothing=label_smoothing)
            + F.cross_entropy(z.T, y, label_smoothing=label_smoothing))


# ----- Poincaré ball of curvature −c (LatHAdapter-style hierarchy; docs/baselines.md) -----

_BALL_EPS = 1e-5  # float32 cannot resolve points closer to the boundary than this; stay strictly inside


def _norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖ over the last dim, keepdim; the floor keeps sqrt's gradient finite at x = 0."""
    return x.pow(2).sum(-1, keepdim=True).clamp_min(1e-15).sqrt()


def expmap0(v: torch.Tensor, c: float) -> torch.Tensor:
    """exp₀(v) = tanh(√c‖v‖)·v/(√c‖v‖), projected to norm ≤ (1−1e-5)/√c (tanh rounds to 1 for large ‖v‖)."""
    v, sqrt_c = v.float(), math.sqrt(c)
    n = _norm(v)
    r = torch.tanh(sqrt_c * n).clamp_max(1 - _BALL_EPS)  # √c·‖exp₀(v)‖
    return r * v / (sqrt_c * n)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """x ⊕_c y = ((1 + 2c⟨x,y⟩ + c‖y‖²)x + (1 − c‖x‖²)y) / (1 + 2c⟨x,y⟩ + c²‖x‖²‖y‖²); broadcasts."""
    x, y = x.float(), y.float()
    xy = (x * y).sum(-1, keepdim=True)
    x2, y2 = x.pow(2).sum(-1, keepdim=True), y.pow(2).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c ** 2 * x2 * y2).clamp_min(1e-15)


def _artanh_dist(gyro_norm: torch.Tensor, c: float) -> torch.Tensor:
    """(2/√c)·artanh(√c‖·‖), argument clamped below 1 so points at the boundary stay at finite distance."""
    sqrt_c = math.sqrt(c)
    return 2 / sqrt_c * torch.atanh((sqrt_c * gyro_norm).clamp(0, 1 - _BALL_EPS))


def poincare_distance(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """d_c(x, y) = (2/√c)·artanh(√c‖(−x) ⊕_c y‖), elementwise over leading dims."""
    return _artanh_dist(_norm(mobius_add(-x, y, c)), c).squeeze(-1)


def pairwise_poincare_distance(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """[N,D] × [M,D] → [N,M] d_c(x_i, y_j), via ‖(−x)⊕_c y‖² = ‖x−y‖² / (1 − 2c⟨x,y⟩ + c²‖x‖²‖y‖²).

    The identity needs only O(N·M) memory; ‖x−y‖ comes from the direct-difference cdist (no ‖x‖²+‖y‖²−2⟨x,y⟩
    cancellation), so the diagonal is exactly 0.
    """
    x, y = x.float(), y.float()
    with torch.autocast(device_type=x.device.type, enabled=False):
        diff = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
        den = 1 - 2 * c * x @ y.T + c ** 2 * x.pow(2).sum(-1)[:, None] * y.pow(2).sum(-1)[None, :]
    return _artanh_dist(diff / den.clamp_min(1e-15).sqrt(), c)


def poincare_distance_from_gram(xy: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor, c: float) -> torch.Tensor:
    """d_c(x, y) from ⟨x,y⟩, ‖x‖², ‖y‖² alone (broadcasting), with ‖x−y‖² = ‖x‖² + ‖y‖² − 2⟨x,y⟩.

    Lets a caller get many distances from one matrix product instead of [.., D]-sized Möbius sums;
    the expansion loses precision for nearly equal points, so use `poincare_distance` where x ≈ y matters.
    """
    diff2 = (x2 + y2 - 2 * xy).clamp_min(0)
    den = (1 - 2 * c * xy + c ** 2 * x2 * y2).clamp_min(1e-15)
    return _artanh_dist((diff2 / den).clamp_min(1e-30).sqrt(), c)


def hierarchy_regularizer(class_pts: torch.Tensor, attr_pts: torch.Tensor, attr_owner: torch.Tensor,
                          img_pts: torch.Tensor, img_class: torch.Tensor, c: float,
                          margin: float = 0.1) -> torch.Tensor:
    """Category → attribute → image hierarchy on the Poincaré ball (all points already mapped with expmap0):

        L = mean_b d_c(img_b, class_{y_b}) + mean_a d_c(attr_a, class_{owner_a})
            + mean_b relu(‖class_{y_b}‖ − ‖img_b‖ + margin)       (classes nearer the origin than their images)

    Our form: LatHAdapter's equations were not available (its abstract describes it in words only).
    Means over an empty set count as 0.
    """
    def mean(t: torch.Tensor) -> torch.Tensor:
        return t.sum() / max(t.numel(), 1)

    img_anchor = class_pts[img_class]
    pull_img = mean(poincare_distance(img_pts, img_anchor, c))
    pull_attr = mean(poincare_distance(attr_pts, class_pts[attr_owner], c))
    order = mean(F.relu(_norm(img_anchor.float()) - _norm(img_pts.float()) + margin))
    return pull_img + pull_attr + order
