"""`python -m pipeline seeds [--out DIR]`: the headline Δs over seeds, and how sure the comparison is.

The seeds are DVC experiments of this preset and suite (the data, teacher and features are shared;
only fine-tuning and what follows rerun), e.g.:

    dvc exp run -S finetune.seed=1 && dvc exp run -S finetune.seed=2   # fine-tuning seeds
    dvc exp run -S seed=1                                               # a second teacher seed
    python -m pipeline seeds        # the workspace's result + the experiments

Reads `dvc.api.exp_show()` (one row per (teacher seed, fine-tuning seed), the newest wins) and each
row's reports/details.json from its commit; keeps the rows that hold every method of params.yaml.
Writes into DIR (default reports/): seeds.json (mean ± std per method and headline over the
fine-tuning seeds of the configured teacher seed, and per teacher seed), seeds.md, and details.json's
suite view (`pipeline.stages.seeds_compare`: retention at matched adaptation, per-set results, the
share of (set × seed) cells each method wins against each other). The report's plots draw the spread.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from pipeline import io as pio
from pipeline import paths
from pipeline.lib.comparison import spread
from pipeline.lib.headlines import HEADLINES

MIN_SEEDS = 2  # a spread needs two results; one would print "± 0.00 (n=1)" over the committed table
Key = tuple[int, int]  # (teacher seed, fine-tuning seed)


def deltas() -> tuple[str, ...]:
    """The summary keys a seeds table aggregates: every headline's Δ."""
    return tuple(f"delta_{key}" for key in HEADLINES)


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _param(row: dict[str, Any], key: str, default: Any = None) -> Any:
    """A params value of an exp_show row: DVC names it `key`, or `params.yaml:key` when ambiguous."""
    if key in row:
        return row[key]
    return next((v for k, v in row.items() if k.endswith(f":{key}")), default)


def row_methods(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    methods: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        parts = key.split(":")[-1].split(".")
        if len(parts) == 3 and parts[0] == "summary" and parts[2] in deltas() and _num(value) is not None:
            methods.setdefault(parts[1], {})[parts[2]] = float(value)
    return methods


def collect(rows: list[dict[str, Any]], experiment: str, methods: list[str]) -> dict[Key, dict[str, Any]]:
    """(teacher seed, fine-tuning seed) → {rev, methods: method → Δs} of the rows of this preset that hold
    every method (the newest row per key wins: exp_show lists the workspace first, then newest first)."""
    out: dict[Key, dict[str, Any]] = {}
    for row in rows:
        if _param(row, "experiment") not in (experiment, None) or row.get("State") in ("Failed", "Queued"):
            continue
        key = (int(_num(_param(row, "seed", 0)) or 0), int(_num(_param(row, "finetune.seed", 0)) or 0))
        found = row_methods(row)
        if key in out or not set(methods) - {"pretrained"} <= set(found):
            continue
        out[key] = {"rev": row.get("rev"), "methods": {m: found[m] for m in methods if m in found}}
    return out


def aggregate(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """method → Δ name → {mean, std, n} over runs (std with ddof=1 when n > 1)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in dict.fromkeys(m for run in runs for m in run):
        for delta in deltas():
            values = [run[method][delta] for run in runs if delta in run.get(method, {})]
            if values:
                out.setdefault(method, {})[delta] = spread(values)
    return out


def require_seeds(by_seed: dict) -> None:
    """Refuse to write a table that could not show a spread (leaving the written one as it is)."""
    if not by_seed:
        raise ValueError("no results found: run `dvc repro` and some `dvc exp run -S finetune.seed=N` first")
    if len(by_seed) < MIN_SEEDS:
        seeds = sorted(key[1] if isinstance(key, tuple) else key for key in by_seed)
        raise ValueError(f"only finetune.seed {seeds} has results; the table needs at least {MIN_SEEDS} "
                         f"seeds: run e.g. `dvc exp run -S finetune.seed=1` first (seeds.md is left as it is)")


def markdown(table: dict[str, dict[str, dict[str, float]]], title: str) -> str:
    columns = [(f"delta_{key}", h.title) for key, h in HEADLINES.items()
               if any(f"delta_{key}" in row for row in table.values())]
    lines = [f"# {title}", "", "Points ×100, mean ± std (n = runs). Δ = method − pretrained.", "",
             "| method | " + " | ".join(f"{t} Δ" for _, t in columns) + " |", "|---|" + "---|" * len(columns)]
    for method, row in table.items():
        lines.append(f"| {method} | " + " | ".join(f"{row[d]['mean']:+.2f} ± {row[d]['std']:.2f} (n={row[d]['n']})"
                                                    if d in row else "–" for d, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def seeds_markdown(table: dict, teachers: dict[str, dict], seeds: list[int], teacher_seed: int) -> str:
    """seeds.md: the fine-tuning seeds' table, then one table per teacher seed under its own heading."""
    text = markdown(table, f"Summary Δs over fine-tuning seeds {seeds} (teacher seed {teacher_seed})")
    for t, t_table in teachers.items():
        text += "\n#" + markdown(t_table, f"Teacher seed {t} (every fine-tuning seed run with it)")
    return text


def main(args: argparse.Namespace) -> None:
    import dvc.api

    from pipeline.config import load_params
    from pipeline.stages.seeds_compare import suite_details

    params = load_params(args.params)
    runs = collect(dvc.api.exp_show(force=True), params.experiment, list(params.methods))
    finetuning = {key: r for key, r in sorted(runs.items()) if key[0] == params.seed}
    require_seeds(finetuning)
    table = aggregate([r["methods"] for r in finetuning.values()])
    teachers = {str(t): aggregate([r["methods"] for (ts, _), r in runs.items() if ts == t])
                for t in sorted({ts for ts, _ in runs})}
    out = Path(args.out) if args.out else paths.REPORTS
    pio.write_json({"experiment": params.experiment, "seeds": sorted(fs for _, fs in finetuning),
                    "teacher_seed": params.seed, "runs": {f"{t}/{f}": r for (t, f), r in sorted(runs.items())},
                    "summary": table, "by_teacher_seed": teachers}, out / paths.seeds_json().name)
    text = seeds_markdown(table, teachers, sorted(fs for _, fs in finetuning), params.seed)
    with pio.atomic_path(out / paths.seeds_md().name) as tmp:
        tmp.write_text(text)
    if args.out:  # a suite's folder (reports/compare/): the comparison over its seeds
        from pipeline.stages.seeds_compare import markdown as suite_markdown

        suite = suite_details(params, finetuning)
        pio.write_json(suite, out / paths.details().name)
        with pio.atomic_path(out / "comparison.md") as tmp:
            tmp.write_text(suite_markdown(suite))
    print(text)
    print("the report's plots draw this spread from its next run: `dvc repro -f -s report`")


def seed_table(experiment: str, run: tuple[Key, dict[str, dict[str, float]]] | None = None
               ) -> dict[str, dict[str, dict[str, float]]] | None:
    """method → Δ → {mean, std, n} of `reports/seeds.json` when it was collected for `experiment` and,
    given `run` ((teacher seed, fine-tuning seed), its summary), holds that very run: a table collected
    before the data, the world or a method changed is not drawn beside today's numbers."""
    if not paths.seeds_json().is_file():
        return None
    data = pio.read_json(paths.seeds_json())
    if data.get("experiment") != experiment:
        print(f"[report] {paths.seeds_json()} is not for experiment '{experiment}' (rerun `python -m pipeline seeds`): "
              "plots without seed spread")
        return None
    if run is not None and not _holds(data.get("runs", {}).get(f"{run[0][0]}/{run[0][1]}"), run[1]):
        print(f"[report] {paths.seeds_json()} does not hold this run's numbers (collected before a change; rerun "
              "`python -m pipeline seeds`): plots without seed spread")
        return None
    return data["summary"]


def _holds(recorded: dict[str, Any] | None, summary: dict[str, dict[str, float]], tol: float = 1e-3) -> bool:
    """Whether a seeds.json row has this summary's Δs (metrics.json rounds them to 3 decimals)."""
    if not recorded:
        return False
    return all(abs(value - summary.get(method, {}).get(delta, math.inf)) <= tol
               for method, row in recorded["methods"].items() for delta, value in row.items())
