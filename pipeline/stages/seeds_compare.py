"""A suite over seeds (`python -m pipeline seeds --out reports/compare`): each run's reports/details.json
read from its experiment's commit, then retention at matched adaptation (mean ± std), per-set Δs, the
image-image headlines at every metric, and for each pair of methods the share of (set × seed) cells
where one beats the other (`pipeline.lib.comparison`)."""
from __future__ import annotations

import json
from typing import Any

from pipeline import paths
from pipeline.config import Params
from pipeline.lib.comparison import spread, win_shares
from pipeline.lib.headlines import BASELINE
from pipeline.lib.metrics import at


def run_details(rev: str | None) -> dict[str, Any]:
    """A run's reports/details.json: the workspace's file, or the one committed with its experiment."""
    import dvc.api

    if rev in (None, "workspace"):
        return json.loads(paths.details().read_text())
    return json.loads(dvc.api.read(str(paths.details()), rev=rev))


def cells(per_seed: dict[int, dict], k: int, kinds: tuple[str, ...]) -> dict[str, dict[tuple[str, int], float]]:
    """method → (set, seed) → Δ mAP@k vs pretrained, for the image-image sets of the given kinds."""
    out: dict[str, dict[tuple[str, int], float]] = {}
    for seed, info in per_seed.items():
        base = info["methods"][BASELINE]["image_image"]
        for method, record in info["methods"].items():
            if method == BASELINE:
                continue
            for name, m in record["image_image"].items():
                if info["sets"].get(name) in kinds:
                    out.setdefault(method, {})[(name, seed)] = 100 * (m[at("map", k)] - base[name][at("map", k)])
    return out


def nested_spread(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{a: {b: value}} per seed → {a: {b: spread}} (numbers only)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for a in dict.fromkeys(x for d in per_seed for x in d):
        keys = dict.fromkeys(b for d in per_seed for b, v in d.get(a, {}).items() if isinstance(v, (int, float))
                             and not isinstance(v, bool))
        out[a] = {b: spread([d[a][b] for d in per_seed if b in d.get(a, {})]) for b in keys}
    return out


def suite_details(params: Params, runs: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
    """The suite view of the fine-tuning seeds' runs."""
    per_seed = {seed: run_details(r["rev"]) for (_, seed), r in runs.items()}
    first = next(iter(per_seed.values()))
    k = params.eval.k
    ood = cells(per_seed, k, ("replay", "near", "far"))
    per_set = {name: {"kind": kind, "coverage": first.get("coverage", {}).get(name, {}).get("coverage"),
                      **{m: spread([c[(name, s)] for s in per_seed if (name, s) in c]) for m, c in ood.items()}}
               for name, kind in first["sets"].items() if any((name, s) in c for c in ood.values() for s in per_seed)}
    steps = {m: {key: sorted({d["methods"][m].get(key) for d in per_seed.values()}, key=str)
                 for key in ("optimizer_steps", "target_batches", "schedule")} for m in first["methods"]}
    return {"seeds": sorted(per_seed), "sets": first["sets"], "methods": steps,
            "matched_adaptation": nested_spread([d.get("matched_adaptation", {}) for d in per_seed.values()]),
            "headlines": {metric: nested_spread([d["headlines"][metric] for d in per_seed.values()])
                          for metric in first.get("headlines", {})},
            "wise_ft_selected_alpha": [d.get("wise_ft_selected_alpha") for d in per_seed.values()],
            "per_set": per_set, "pairwise_ood": win_shares(ood),
            "pairwise_unseen": win_shares(cells(per_seed, k, ("near", "far")))}


def _cell(s: dict | None) -> str:
    return "–" if not s or s.get("n", 0) == 0 else f"{s['mean']:+.2f} ± {s['std']:.2f}"


def matched_markdown(matched: dict[str, dict[str, dict]]) -> list[str]:
    from pipeline.lib.headlines import HEADLINES

    names = [n for n in HEADLINES if n != "in_domain" and any(n in row for row in matched.values())]
    lines = ["## Retention at matched adaptation (method − WiSE-FT(naive) at the same in-domain gain)", "",
             "Mean ± std over seeds, points; positive: the method keeps more than interpolating naive "
             "fine-tuning toward the teacher would at its own gain.", "",
             "| method | " + " | ".join(HEADLINES[n].title for n in names) + " |", "|---|" + "---|" * len(names)]
    return lines + [f"| {m} | " + " | ".join(_cell(row.get(n)) for n in names) + " |" for m, row in matched.items()] + [""]


def per_set_markdown(per_set: dict[str, dict]) -> list[str]:
    methods = list(dict.fromkeys(m for row in per_set.values() for m in row if m not in ("kind", "coverage")))
    lines = ["## Per set: Δ mAP@k vs pretrained, mean ± std over seeds", "",
             "| set | kind | coverage | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for name, row in per_set.items():
        cov = "–" if row.get("coverage") is None else f"{row['coverage']:.3f}"
        lines.append(f"| {name} | {row['kind']} | {cov} | " + " | ".join(_cell(row.get(m)) for m in methods) + " |")
    return lines + [""]


def pairwise_markdown(shares: dict[str, dict[str, float]], title: str) -> list[str]:
    methods = list(shares)
    lines = [f"## {title}", "", "Share of (set × seed) cells where the row's method has the higher Δ mAP@k than "
             "the column's (0.5: no difference).", "", "| | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for a in methods:
        lines.append(f"| {a} | " + " | ".join("–" if a == b else f"{shares[a].get(b, float('nan')):.2f}"
                                              for b in methods) + " |")
    return lines + [""]


def markdown(details: dict[str, Any]) -> str:
    steps = {m: (v["optimizer_steps"], v["target_batches"]) for m, v in details["methods"].items()}
    lines = [f"# The suite over fine-tuning seeds {details['seeds']}", "",
             "Optimizer steps / target batches per method: " +
             ", ".join(f"{m} {s[0]} / {t[0]}" for m, (s, t) in steps.items() if s and s[0] is not None) + ".",
             f"WiSE-FT α chosen on validation, per seed: {details['wise_ft_selected_alpha']}.", ""]
    lines += matched_markdown(details["matched_adaptation"]) + per_set_markdown(details["per_set"])
    lines += pairwise_markdown(details["pairwise_unseen"], "Who beats whom on unseen sets (near and far)")
    lines += pairwise_markdown(details["pairwise_ood"], "Who beats whom on every out-of-domain set")
    return "\n".join(lines) + "\n"
