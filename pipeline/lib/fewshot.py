"""Few-shot adaptation with both encoders frozen: the LatHAdapter family (declared in `pipeline.lib.recipes`).

Every method sees the same inputs: L2-normalised frozen image features `f` [N, D] of K labelled
shots per base class, and the frozen text embeddings `t` [C, D] of class prompts. `fit` trains on
base classes; `predict` scores any class set given its text embeddings, so base-trained methods
that go through text (zero-shot, CLIP-Adapter, LatHAdapter) also classify unseen (novel) classes.

s is the model's own logit scale (the teacher's `logit_scale`: SigLIP's in the paper preset) unless
`fewshot.settings.logit_scale` overrides it.

- zero-shot: s·cos(f, t_c).
- linear probe: a linear head on f trained with cross-entropy (base classes only; no novel classes).
- CLIP-Adapter: f' = α·MLP(f) + (1−α)·f, then s·cos(f', t_c) (Gao et al.; α = 0.2, MLP D→D/4→D).
- Tip-Adapter (training-free, Zhang et al.): s·f·tᵀ + α·exp(−β(1 − f·F_cacheᵀ))·L_onehot. As its
  official code, α and β are searched on the validation split (here: the few-shot set's val images of
  the base classes) over its grid β ∈ {0.1 + i·(β_max − 0.1)/n_β}, α ∈ {0.1 + j·(α_max − 0.1)/n_α}
  (its ImageNet config: β_max 7, α_max 3, n_β 200, n_α 20), keeping the first best accuracy; novel
  classes have no cached shots, so it falls back to zero-shot there.
- LatHAdapter (our form; the paper's equations were not available, only its abstract): M learnable
  attribute vectors shared by all classes; class c's attributes are t_c + a_m. Images, classes and
  attributes pass through small residual adapters, are normalised, scaled by learnable radii and
  mapped into the Poincaré ball (exp₀, curvature −c). Logits = −d_c(image, class)/τ (or cosine).
  Loss = CE + λ·[hierarchy regulariser (images → their class, attributes → their class, classes
  nearer the origin than their images) + mean distance of each image to its class's nearest
  attribute].
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hydra.utils import get_class

from pipeline.lib import losses
from pipeline.lib.recipes import FEWSHOT_METHODS, FewShotSettings


def _scale(s: FewShotSettings) -> float:
    if s.logit_scale is None:
        raise ValueError("fewshot logit_scale is unset: the stage sets the model's own (teacher spec `logit_scale`)")
    return float(s.logit_scale)


Validation = Optional[tuple[torch.Tensor, torch.Tensor]]  # (features, labels) of val images of the fitted classes


def _train(module: nn.Module, loss_fn, s: FewShotSettings) -> None:
    """Full-batch AdamW: the shots of a few-shot task fit in one batch."""
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=s.lr, weight_decay=s.weight_decay)
    module.train()
    for _ in range(s.steps):
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
    module.eval()


class ZeroShot:
    def __init__(self, dim: int = 0, s: FewShotSettings | None = None):
        pass

    def fit(self, f: torch.Tensor, y: torch.Tensor, t: torch.Tensor, s: FewShotSettings,
            val: Validation = None) -> "ZeroShot":
        self.scale = _scale(s)
        return self

    def predict(self, f: torch.Tensor, t: torch.Tensor, base: bool) -> torch.Tensor:
        return self.scale * f @ t.T


class LinearProbe:
    """A head per base class: nothing to say about unseen classes (declared `novel=False`)."""

    def __init__(self, dim: int = 0, s: FewShotSettings | None = None):
        pass

    def fit(self, f: torch.Tensor, y: torch.Tensor, t: torch.Tensor, s: FewShotSettings,
            val: Validation = None) -> "LinearProbe":
        torch.manual_seed(s.seed)
        # inputs scaled like CLIP logits: unit-norm features would need large weights (slow under Adam)
        self.scale, self.head = _scale(s), nn.Linear(f.shape[1], t.shape[0])
        _train(self.head, lambda: F.cross_entropy(self.head(self.scale * f), y), s)
        return self

    @torch.no_grad()
    def predict(self, f: torch.Tensor, t: torch.Tensor, base: bool) -> torch.Tensor:
        return self.head(self.scale * f)


class ClipAdapter(nn.Module):
    def __init__(self, dim: int, s: FewShotSettings | None = None, ratio: float = 0.2, reduction: int = 4):
        super().__init__()
        self.ratio = ratio
        self.mlp = nn.Sequential(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(),
                                 nn.Linear(dim // reduction, dim, bias=False), nn.ReLU())

    def adapt(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.ratio * self.mlp(f) + (1 - self.ratio) * f, dim=-1)

    def fit(self, f: torch.Tensor, y: torch.Tensor, t: torch.Tensor, s: FewShotSettings,
            val: Validation = None) -> "ClipAdapter":
        self.scale = _scale(s)
        _train(self, lambda: F.cross_entropy(self.scale * self.adapt(f) @ t.T, y), s)
        return self

    @torch.no_grad()
    def predict(self, f: torch.Tensor, t: torch.Tensor, base: bool) -> torch.Tensor:
        return self.scale * self.adapt(f) @ t.T


def tip_grid(scale: float, steps: int) -> list[float]:
    """Tip-Adapter's search values: 0.1 + i·(scale − 0.1)/steps, i = 0 .. steps−1 (its `search_hp`)."""
    return [0.1 + i * (scale - 0.1) / steps for i in range(steps)]


TIP_SCALE = 100.0  # Tip-Adapter's code scores zero-shot logits as 100·f·W; its α is relative to that


class TipAdapter:
    def __init__(self, dim: int = 0, s: FewShotSettings | None = None, alpha: float = 1.0, beta: float = 5.5):
        self.alpha, self.beta = alpha, beta  # Tip-Adapter's paper defaults, used when there is nothing to search on

    def fit(self, f: torch.Tensor, y: torch.Tensor, t: torch.Tensor, s: FewShotSettings,
            val: Validation = None) -> "TipAdapter":
        self.keys, self.values, self.scale, self.text = f, F.one_hot(y, t.shape[0]).float(), _scale(s), t
        if val is not None:
            self.beta, self.alpha, self.val_accuracy = self.search(*val, s)
        return self

    def logits(self, f: torch.Tensor, t: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        """s·f·tᵀ + α·(s/100)·cache: α in Tip-Adapter's own units (its zero-shot logits are 100·f·tᵀ), so
        the cache weighs against the zero-shot term as in its code, whatever this model's scale s."""
        return self.scale * f @ t.T + alpha * self.scale / TIP_SCALE * torch.exp(-beta * (1 - f @ self.keys.T)) @ self.values

    @torch.no_grad()
    def search(self, f_val: torch.Tensor, y_val: torch.Tensor, s: FewShotSettings) -> tuple[float, float, float]:
        """(β, α, val accuracy) of the grid point with the best val accuracy, β outer and α inner and
        the first best kept, as Tip-Adapter's `search_hp`."""
        if not len(y_val):
            raise ValueError("Tip-Adapter searches α, β on validation images of the cached classes, and got none")
        zero_shot, affinity = self.scale * f_val @ self.text.T, f_val @ self.keys.T  # both independent of α, β
        alphas = tip_grid(s.tip_search_scale[1], s.tip_search_steps[1])  # in Tip-Adapter's units (see `logits`)
        best = (0.0, 0.0, -1.0)
        for beta in tip_grid(s.tip_search_scale[0], s.tip_search_steps[0]):
            cache = torch.exp(-beta * (1 - affinity)) @ self.values
            for alpha in alphas:  # strict improvement only: the first best in (β, α) order is kept
                acc = accuracy(zero_shot + alpha * self.scale / TIP_SCALE * cache, y_val)
                if acc > best[2]:
                    best = (beta, alpha, acc)
        return best

    def predict(self, f: torch.Tensor, t: torch.Tensor, base: bool) -> torch.Tensor:
        if not base:  # no cached shots of unseen classes
            return self.scale * f @ t.T
        return self.logits(f, t, self.alpha, self.beta)


class LatHAdapter(nn.Module):
    def __init__(self, dim: int, s: FewShotSettings):
        super().__init__()
        gen = torch.Generator().manual_seed(s.seed)
        self.s = s
        self.attributes = nn.Parameter(0.1 * torch.randn(s.attributes, dim, generator=gen))
        self.image_adapter = nn.Linear(dim, dim, bias=False)
        self.text_adapter = nn.Linear(dim, dim, bias=False)
        for layer in (self.image_adapter, self.text_adapter):  # residual adapters start as the identity
            nn.init.zeros_(layer.weight)
        # radii of the three levels before exp₀: classes start nearest the origin, images farthest
        self.log_radius = nn.Parameter(torch.log(torch.tensor([0.5, 1.0, 1.5])))

    def _embed(self, x: torch.Tensor, adapter: nn.Linear, level: int) -> torch.Tensor:
        x = F.normalize(x + adapter(x), dim=-1)
        if self.s.geometry == "cosine":
            return x
        return losses.expmap0(self.log_radius[level].exp() * x, self.s.curvature)

    def points(self, f: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images [N,D], classes [C,D], attributes [C·M, D], class-major) in the model's space."""
        attrs = (t[:, None, :] + self.attributes[None]).reshape(-1, t.shape[1])
        return (self._embed(f, self.image_adapter, 2), self._embed(t, self.text_adapter, 0),
                self._embed(attrs, self.text_adapter, 1))

    def logits(self, img: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        if self.s.geometry == "cosine":
            return _scale(self.s) * img @ cls.T
        return -losses.pairwise_poincare_distance(img, cls, self.s.curvature) / self.s.temperature

    def loss(self, f: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        img, cls, attrs = self.points(f, t)
        ce = F.cross_entropy(self.logits(img, cls), y)
        if self.s.geometry == "cosine":
            return ce
        m = self.s.attributes
        owner = torch.arange(t.shape[0]).repeat_interleave(m)
        hier = losses.hierarchy_regularizer(cls, attrs, owner, img, y, self.s.curvature)
        # distance of each image to its own class's M attributes, from one matrix product ([N, D] x [D, C·M])
        # rather than [N, M, D] Möbius sums (the dominant cost of a step under autograd)
        rows = torch.arange(len(y))
        dots = (img @ attrs.T).view(len(y), t.shape[0], m)[rows, y]                    # [N, M]
        attr2 = attrs.pow(2).sum(-1).view(t.shape[0], m)[y]
        to_attr = losses.poincare_distance_from_gram(dots, img.pow(2).sum(-1, keepdim=True), attr2, self.s.curvature)
        return ce + self.s.hierarchy_weight * (hier + to_attr.min(1).values.mean())

    def fit(self, f: torch.Tensor, y: torch.Tensor, t: torch.Tensor, s: FewShotSettings,
            val: Validation = None) -> "LatHAdapter":
        _train(self, lambda: self.loss(f, y, t), s)
        return self

    @torch.no_grad()
    def predict(self, f: torch.Tensor, t: torch.Tensor, base: bool) -> torch.Tensor:
        img, cls, _ = self.points(f, t)
        return self.logits(img, cls)


def make(name: str, dim: int, s: FewShotSettings):
    """A fresh few-shot method by name (`pipeline.lib.recipes.FEWSHOT_METHODS`)."""
    if name not in FEWSHOT_METHODS:
        raise ValueError(f"unknown few-shot method '{name}' (known: {sorted(FEWSHOT_METHODS)})")
    torch.manual_seed(s.seed)
    return get_class(FEWSHOT_METHODS[name].target)(dim, s)


def sample_shots(labels: torch.Tensor, classes: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of k random examples of each class (fewer if a class has fewer)."""
    picks = []
    for c in classes.tolist():
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    return torch.cat(picks)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")
