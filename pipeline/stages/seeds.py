"""`python -m pipeline seeds`: the summary Δs as mean ± std over fine-tuning seeds.

The seeds are DVC experiments (the teacher and its features are shared, only fine-tuning and what
follows rerun), e.g.:

    dvc exp run -S finetune.seed=1 --queue && dvc exp run -S finetune.seed=2 --queue
    dvc exp run --run-all
    python -m pipeline seeds        # HEAD's workspace result (seed 0) + the experiments

Reads `dvc.api.exp_show()`, keeps one result per seed (the newest), and writes
`reports/seeds.json` (tagged with the experiment it belongs to) and `reports/seeds.md`. The
report's plots draw that spread as error bars the next time the report stage runs.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.lib.headlines import HEADLINES



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


def collect(rows: list[dict[str, Any]], experiment: str) -> dict[int, dict[str, dict[str, float]]]:
    """seed → method → Δ values, from exp_show rows of the given preset (newest row per seed wins)."""
    by_seed: dict[int, dict[str, dict[str, float]]] = {}
    for row in rows:  # exp_show lists the workspace first, then the newest experiments first
        if _param(row, "experiment") not in (experiment, None) or row.get("State") in ("Failed", "Queued"):
            continue
        seed = _num(_param(row, "finetune.seed", 0))
        if seed is None or int(seed) in by_seed:
            continue
        methods: dict[str, dict[str, float]] = {}
        for key, value in row.items():
            parts = key.split(":")[-1].split(".")
            if len(parts) == 3 and parts[0] == "summary" and parts[2] in deltas() and _num(value) is not None:
                methods.setdefault(parts[1], {})[parts[2]] = float(value)
        if methods:
            by_seed[int(seed)] = methods
    return by_seed


MIN_SEEDS = 2  # a spread needs two results; one would print "± 0.00 (n=1)" over the committed table


def require_seeds(by_seed: dict[int, dict[str, dict[str, float]]]) -> None:
    """Refuse to write a table that could not show a spread (leaving the written one as it is)."""
    if not by_seed:
        raise ValueError("no results found: run `dvc repro` and some `dvc exp run -S finetune.seed=N` first")
    if len(by_seed) < MIN_SEEDS:
        raise ValueError(f"only finetune.seed {sorted(by_seed)} has results; the table needs at least {MIN_SEEDS} "
                         f"seeds: run e.g. `dvc exp run -S finetune.seed=1` first ({paths.seeds_md()} is left as it is)")


def aggregate(by_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """method → Δ name → {mean, std, n} (std with ddof=1 when n > 1)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    methods = sorted({m for s in by_seed.values() for m in s})
    for method in methods:
        for delta in deltas():
            values = [s[method][delta] for s in by_seed.values() if delta in s.get(method, {})]
            if values:
                out.setdefault(method, {})[delta] = {
                    "mean": round(float(np.mean(values)), 3),
                    "std": round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 3),
                    "n": len(values)}
    return out


def markdown(table: dict[str, dict[str, dict[str, float]]], seeds: list[int]) -> str:
    columns = [(f"delta_{key}", h.title) for key, h in HEADLINES.items()
               if any(f"delta_{key}" in row for row in table.values())]
    lines = [f"# Summary Δs over fine-tuning seeds {seeds}", "",
             "Points ×100, mean ± std (n = seeds). Δ = method − pretrained.", "",
             "| method | " + " | ".join(f"{title} Δ" for _, title in columns) + " |", "|---|" + "---|" * len(columns)]
    for method, row in table.items():
        cells = [f"{row[d]['mean']:+.2f} ± {row[d]['std']:.2f} (n={row[d]['n']})" if d in row else "–"
                 for d, _ in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if "naive" in table and "infuse" in table:
        n, i = table["naive"], table["infuse"]
        kept = i["delta_in_domain"]["mean"] / n["delta_in_domain"]["mean"] if n["delta_in_domain"]["mean"] else float("nan")
        losses = "; ".join(f"{title} {_share(i, n, d)}" for d, title in columns if d != "delta_in_domain" and d in i)
        lines += ["", f"infuse keeps {100 * kept:.0f} % of naive's in-domain gain. Share of naive's loss that "
                  f"infuse also loses: {losses}."]
    return "\n".join(lines) + "\n"


def _share(method: dict, naive: dict, key: str) -> str:
    base = naive[key]["mean"]
    return f"{100 * method[key]['mean'] / base:.0f} %" if base < 0 else "n/a (naive did not lose)"


def main(args: argparse.Namespace) -> None:
    import dvc.api

    from pipeline.config import load_params

    params = load_params(args.params)
    rows = dvc.api.exp_show(force=True)
    by_seed = collect(rows, params.experiment)
    require_seeds(by_seed)
    table = aggregate(by_seed)
    pio.write_json({"experiment": params.experiment, "seeds": sorted(by_seed),
                    "per_seed": {str(k): v for k, v in sorted(by_seed.items())}, "summary": table}, paths.seeds_json())
    with pio.atomic_path(paths.seeds_md()) as tmp:
        tmp.write_text(markdown(table, sorted(by_seed)))
    print(paths.seeds_md().read_text())
    print("the report's plots draw this spread from its next run: `dvc repro -f -s report`")


def seed_table(experiment: str) -> dict[str, dict[str, dict[str, float]]] | None:
    """method → Δ → {mean, std, n} of `reports/seeds.json` when it was collected for `experiment`."""
    if not paths.seeds_json().is_file():
        return None
    data = pio.read_json(paths.seeds_json())
    if data.get("experiment") != experiment:
        print(f"[report] {paths.seeds_json()} is not for experiment '{experiment}' (rerun `python -m pipeline seeds`): "
              "plots without seed spread")
        return None
    return data["summary"]
