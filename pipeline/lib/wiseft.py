"""WiSE-FT (Wortsman et al.): weight-space interpolation between θ0 and a fine-tuned tower."""
from __future__ import annotations

import torch

def interpolate_weights(theta0: dict[str, torch.Tensor], theta_ft: dict[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT: (1−α)·θ0 + α·θ_ft per tensor; α = 0 and 1 return exact copies of the endpoints."""
    if theta0.keys() != theta_ft.keys():
        raise ValueError(f"the two models have different tensors: {sorted(theta0.keys() ^ theta_ft.keys())[:5]}")
    if alpha == 0.0 or alpha == 1.0:
        return {k: (theta_ft if alpha else theta0)[k].clone() for k in theta0}
    return {k: torch.lerp(theta0[k].float(), theta_ft[k].float(), alpha).to(theta0[k].dtype) for k in theta0}
