"""The one tuning rule every method gets (docs/protocol.md#tuning), on validation only.

1. Every point of the grid (the product of each knob's values; regularisers' grids hold λ = 0) is
   fine-tuned once, with the first seed, and scored by the validation criterion.
2. While the best point sits on an edge of a knob's values, that knob is extended one step beyond the
   edge (× step above, ÷ step below; below λ = 0 there is nothing, so a weaker non-zero λ is tried:
   the smallest positive value ÷ step), and the new points are run; at most `max_extensions` rounds.
3. The best two points rerun with the other seeds; the choice is the best mean criterion. A choice on
   an edge is no choice: its knobs extend as in 2 (the same budget of rounds) and the rule goes on
   from 2, so a finalist that wins only by the mean over seeds is bracketed too; the finalists of an
   earlier round stay in the running beside the new best two.

Pure logic: `run(point, seed)` (the caller's fine-tune) returns the criterion.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from statistics import mean
from typing import Callable

Point = tuple[float, ...]


@dataclass
class Knob:
    key: str                      # a key of the fine-tuning recipe
    values: list[float]
    step: float = 10.0            # the grid's ratio between neighbours: how far an edge extends


@dataclass
class Outcome:
    knobs: list[Knob]             # the final grid, extensions included
    scores: dict[tuple[Point, int], float] = field(default_factory=dict)  # (point, seed) → criterion
    extensions: list[dict] = field(default_factory=list)  # {key, value, why}
    stopped: str = ""             # why the grid stopped growing
    finalists: dict[Point, float] = field(default_factory=dict)  # the best two (+ earlier finalists): mean over seeds
    chosen: Point = ()
    rounds: int = 0               # extension rounds used

    @property
    def runs(self) -> int:
        return len(self.scores)


def grid(knobs: list[Knob]) -> list[Point]:
    return [tuple(p) for p in itertools.product(*(k.values for k in knobs))]


def extension(knob: Knob, value: float) -> tuple[float, str] | None:
    """The value one step beyond the edge `value` sits on (and why), or None when `value` is interior."""
    values = sorted(knob.values)
    if value == values[-1] and value > 0:
        return value * knob.step, f"{knob.key} = {value:g} on the upper edge"
    if value != values[0]:
        return None
    if value > 0:
        return value / knob.step, f"{knob.key} = {value:g} on the lower edge"
    positive = [v for v in values if v > 0]
    if not positive:
        return None
    return positive[0] / knob.step, f"{knob.key} = 0 best: a weaker non-zero value is tried"


def ranking(outcome: Outcome, points: list[Point], seed: int) -> list[Point]:
    """The points by criterion at `seed`, best first; ties go to the first in grid order."""
    return sorted(points, key=lambda p: (-outcome.scores[(p, seed)], points.index(p)))


def _score(outcome: Outcome, run: Callable[[Point, int], float], points: list[Point], seed: int) -> None:
    for point in points:
        if (point, seed) not in outcome.scores:
            outcome.scores[(point, seed)] = run(point, seed)


def _extend(outcome: Outcome, point: Point, max_extensions: int) -> bool:
    """Extend every knob `point` sits on an edge of by one step (one round); False, with the reason the
    grid stopped, when `point` is interior or the rounds are spent."""
    steps = [(knob, ext) for knob, value in zip(outcome.knobs, point) if (ext := extension(knob, value)) is not None]
    if not steps:
        outcome.stopped = "interior: the best point is inside the grid"
        return False
    if outcome.rounds == max_extensions:
        outcome.stopped = f"still on an edge after {max_extensions} extensions ({'; '.join(w for _, (_, w) in steps)})"
        return False
    for knob, (value, why) in steps:
        value = float(f"{value:.2g}")  # 3.2e-3, not 3.1623e-3: a grid a reader can quote
        knob.values = sorted({*knob.values, value})
        outcome.extensions.append({"key": knob.key, "value": value, "why": why})
    outcome.rounds += 1
    return True


def tune(knobs: list[Knob], run: Callable[[Point, int], float], seeds: tuple[int, ...] = (0, 1, 2),
         max_extensions: int = 3, finalists: int = 2) -> Outcome:
    """The rule above; `run` is called once per (point, seed) it needs."""
    outcome = Outcome([Knob(k.key, sorted(k.values), k.step) for k in knobs])
    while True:
        points = grid(outcome.knobs)
        _score(outcome, run, points, seeds[0])
        if _extend(outcome, ranking(outcome, points, seeds[0])[0], max_extensions):
            continue
        ranked = ranking(outcome, points, seeds[0])[:finalists]
        ranked += [p for p in outcome.finalists if p not in ranked]  # an earlier finalist keeps its mean in the running
        for seed in seeds[1:]:
            _score(outcome, run, ranked, seed)
        outcome.finalists = {p: mean(outcome.scores[(p, s)] for s in seeds) for p in ranked}
        outcome.chosen = max(ranked, key=lambda p: (outcome.finalists[p], -ranked.index(p)))
        if not _extend(outcome, outcome.chosen, max_extensions):
            return outcome
