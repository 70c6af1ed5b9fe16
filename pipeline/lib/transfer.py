"""Carrying the paper's retention weights to a tower of another size by their effect, not their value.

- R_w = Σ_ℓ mean_j (θ_ℓj − θ0_ℓj)² is a sum of per-tensor MEANS: its gradient on element j of tensor ℓ
  is 2·λ_w·(θ_ℓj − θ0_ℓj)/n_ℓ, a per-element pull of λ_w/n_ℓ. The same λ_w pulls a 49k-element matrix
  36× harder than a 1.77M-element one. Rule: keep the pull on a typical weight matrix (the median size
  of the tower's 2-D tensors): λ_w' = λ_w · n'/n.
- L_d = mean over the batch and the D embedding dimensions of (f_θ − f_0)²: each sample weighs λ_d/D.
  Rule: keep the per-sample weight: λ_d' = λ_d · D'/D.

Neither rule accounts for another learning rate or step count; they give the centre of a tuning grid,
not a tuned value (docs/method.md#carrying-the-papers-values-to-another-tower).
"""
from __future__ import annotations

from statistics import median
from typing import Iterable

# The paper's values (the reference's full_method.sh) and its tower: ViT-B/16 SigLIP, 768-d embeddings,
# whose 2-D tensors have a median size of 1,769,472 (the 2304 × 768 qkv matrices; tests/test_transfer.py
# recomputes it from open_clip's `ViT-B-16-SigLIP`).
PAPER_LAMBDA_WEIGHTS = 1e5
PAPER_LAMBDA_DISTILL = 1000.0
PAPER_EMBED_DIM = 768
PAPER_MEDIAN_MATRIX = 1_769_472


def median_matrix_size(shapes: Iterable[tuple[int, ...]]) -> float:
    """Median element count of the 2-D tensors (the weight matrices) among parameter shapes."""
    sizes = [a * b for a, b in (s for s in shapes if len(s) == 2)]
    if not sizes:
        raise ValueError("no 2-D weight matrices among the tower's parameters")
    return float(median(sizes))


def matched_lambda_weights(shapes: Iterable[tuple[int, ...]], reference: float = PAPER_LAMBDA_WEIGHTS,
                           reference_median: float = PAPER_MEDIAN_MATRIX) -> float:
    """λ_w with the reference's per-element pull on a median-sized weight matrix of this tower."""
    return reference * median_matrix_size(shapes) / reference_median


def matched_lambda_distill(embed_dim: int, reference: float = PAPER_LAMBDA_DISTILL,
                           reference_dim: int = PAPER_EMBED_DIM) -> float:
    """λ_d with the reference's per-sample weight λ_d / D at this embedding size."""
    return reference * embed_dim / reference_dim
