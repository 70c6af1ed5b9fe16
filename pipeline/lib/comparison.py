"""How sure a comparison is: retention at matched adaptation, per-cell wins between methods, spreads.

- `matched_adaptation`: a method's retention minus WiSE-FT(naive)'s at the same in-domain gain, read off
  the α curve by linear interpolation (a method whose gain exceeds naive's is compared with naive
  itself, α = 1, and marked so). Retention bought with less adaptation then counts for nothing.
- `win_shares`: for each pair of methods, the share of (set × seed) cells where the first beats the
  second: a difference that holds in 3 cells of 12 is not a difference.
- `spread`: mean ± std (ddof 1) and n of a list of values.
"""
from __future__ import annotations

import itertools
import math
from statistics import mean, stdev
from typing import Any, Sequence

IN_DOMAIN = "delta_in_domain"


def spread(values: Sequence[float]) -> dict[str, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": round(mean(values), 3), "std": round(stdev(values), 3) if len(values) > 1 else 0.0,
            "n": len(values)}


def curve_at(curve: Sequence[dict[str, float]], gain: float, key: str) -> tuple[float, bool]:
    """`key` of the WiSE-FT curve (points with `delta_in_domain`, in increasing α) at in-domain gain
    `gain`: interpolated on the first segment that reaches it; beyond the curve's largest gain, its
    last point (α = 1). Returns (value, whether the gain was beyond the curve)."""
    for a, b in zip(curve, curve[1:]):
        lo, hi = sorted((a[IN_DOMAIN], b[IN_DOMAIN]))
        if lo <= gain <= hi:
            if hi == lo:
                return a[key], False
            t = (gain - a[IN_DOMAIN]) / (b[IN_DOMAIN] - a[IN_DOMAIN])
            return a[key] + t * (b[key] - a[key]), False
    last = max(curve, key=lambda p: p[IN_DOMAIN])
    if gain >= last[IN_DOMAIN]:
        return last[key], True
    first = min(curve, key=lambda p: p[IN_DOMAIN])
    return first[key], False


def matched_adaptation(row: dict[str, float], curve: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Each retention Δ of one method minus WiSE-FT(naive)'s at the method's own in-domain gain."""
    out: dict[str, Any] = {}
    beyond = False
    for key, value in row.items():
        if not key.startswith("delta_") or key == IN_DOMAIN or not all(key in p for p in curve):
            continue
        reference, beyond = curve_at(curve, row[IN_DOMAIN], key)
        out[key.removeprefix("delta_")] = round(value - reference, 3)
    out["beyond_naive_gain"] = beyond
    return out


def win_shares(cells: dict[str, dict[tuple[str, int], float]]) -> dict[str, dict[str, float]]:
    """method → other → share of the (set, seed) cells both have where method scores higher (ties: half)."""
    out: dict[str, dict[str, float]] = {}
    for a, b in itertools.permutations(cells, 2):
        common = sorted(set(cells[a]) & set(cells[b]))
        if not common:
            continue
        wins = sum(1.0 if cells[a][c] > cells[b][c] else 0.5 if cells[a][c] == cells[b][c] else 0.0 for c in common)
        out.setdefault(a, {})[b] = round(wins / len(common), 3)
    return out
