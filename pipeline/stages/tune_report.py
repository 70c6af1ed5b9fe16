"""reports/tuning.md: each method's final grid with the criterion of every point, the extensions and why,
the finalists' means over seeds, the choice and the number of fine-tuning runs it took."""
from __future__ import annotations

from typing import Any


def _point(point: dict[str, float]) -> str:
    return ", ".join(f"{k} = {v:g}" for k, v in point.items())


def method_lines(method: str, rec: dict[str, Any]) -> list[str]:
    first = min((s["seed"] for s in rec["scores"]), default=0)
    cells = [f"{_point(s['point'])}: {100 * s['criterion']:.2f}" for s in rec["scores"] if s["seed"] == first]
    ext = "; ".join(f"+{e['key']} = {e['value']:g} ({e['why']})" for e in rec["extensions"]) or "none"
    finalists = "; ".join(f"{_point(f['point'])}: {100 * f['mean_criterion']:.2f}" for f in rec["finalists"])
    return [f"### {method}", "",
            f"- grid (seed {first}, criterion ×100): {' | '.join(cells)}",
            f"- extensions: {ext}; stopped: {rec['stopped']}",
            f"- finalists (mean over seeds {rec['finalists'][0]['seeds'] if rec['finalists'] else []}): {finalists}",
            f"- **chosen: {_point(rec['chosen'])}** after {rec['runs']} fine-tuning runs", ""]


def markdown(methods: dict[str, dict], not_tuned: list[str] = ()) -> str:
    """`not_tuned`: methods with a grid but no record yet; their configured values are unvalidated."""
    lines = ["# Tuning: one rule for every method, on validation", "",
             "Criterion: the selected checkpoint's mean of target-val and replay-val mAP@k (`select_on: all`). "
             "Rule (docs/protocol.md#tuning): the whole grid with seed 0; an edge choice extends its knob one step "
             "(at most 3 rounds); the best two points (and earlier finalists) rerun with seeds 1 and 2; the best "
             "mean is chosen, and a choice on an edge extends as well.", "",
             "| method | knobs | chosen | runs | extensions | stopped |", "|---|---|---|---|---|---|"]
    for method, rec in methods.items():
        lines.append(f"| {method} | {', '.join(rec['key'])} | {_point(rec['chosen'])} | {rec['runs']} | "
                     f"{len(rec['extensions'])} | {rec['stopped']} |")
    if not_tuned:
        lines += ["", f"Not tuned yet (their configured values were not chosen by this rule): {', '.join(not_tuned)}."]
    lines.append("")
    for method, rec in methods.items():
        lines += method_lines(method, rec)
    return "\n".join(lines) + "\n"
