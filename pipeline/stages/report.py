"""Stage `report`: compare every method with the pretrained model, as the paper's Fig. 1 does.

Writes `reports/metrics.json`, the declared DVC metrics: only the headline numbers per method
(`summary.<method>.<group>` and `summary.<method>.delta_<group>`), so `dvc metrics diff` and
`dvc exp show` stay readable; `reports/details.json` (not a DVC metric): the WiSE-FT curve
(`wise_ft.<α>.delta_*`), the few-shot cells, every per-set metric and the teacher's zero-shot
accuracy; `reports/fig1_deltas.png`, `reports/retention.png` (retention vs adaptation: one point
per method, the WiSE-FT curve), `reports/report.md` and `reports/report.html` (the same report as one
self-contained page, with the neighbour grids of every method and set). Where `reports/seeds.json`
holds this experiment's fine-tuning seeds (`python -m pipeline seeds`), the plots show their spread.
Deltas are in points: mAP@k ×100 for image-image, mean of I→T and T→I R@1 ×100 for image-text.
"""
from __future__ import annotations

import argparse

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params, load_params
from pipeline.lib.comparison import matched_adaptation
from pipeline.lib.headlines import BASELINE, HEADLINES, IMAGE_IMAGE_METRICS, headline_values
from pipeline.stages import report_html
from pipeline.stages.report_md import markdown
from pipeline.stages.report_plots import plot_deltas, plot_fewshot, plot_retention
from pipeline.stages.common import set_kind
from pipeline.stages.seeds import seed_table


def summarize(results: dict[str, dict], k: int, metric: str | None = None) -> dict[str, dict[str, float]]:
    """Absolute headline numbers per method and their Δ against the pretrained model (the image-image
    ones at `metric` when given: top_1, map@r)."""
    if BASELINE not in results:
        raise ValueError(f"methods must include '{BASELINE}' (the reference for every delta)")
    base = headline_values(results[BASELINE], k, metric)
    out = {}
    for method, result in results.items():
        h = headline_values(result, k, metric)
        row = {name: round(v, 3) for name, v in h.items()}
        if method != BASELINE:
            row.update({f"delta_{name}": round(h[name] - base[name], 3) for name in h})
        out[method] = row
    return out


def wise_ft_summary(curve: dict, baseline: dict, k: int) -> dict[str, dict[str, float]]:
    """α (as a string key, for `dvc metrics diff`) → headline numbers and Δ vs pretrained, in α order."""
    base = headline_values(baseline, k)
    out = {}
    for point in sorted(curve["curve"], key=lambda p: p["alpha"]):
        h = headline_values(point, k)
        out[f"{point['alpha']:g}"] = {**{n: round(v, 3) for n, v in h.items()},
                                      **{f"delta_{n}": round(h[n] - base[n], 3) for n in h}}
    return out


def detailed(results: dict[str, dict]) -> dict:
    """Every metric, nested method → group → set → metric (values in [0, 1]), and each run's steps."""
    keep = ("image_image", "image_image_merged", "image_text", "zero_shot", "selection", "optimizer_steps",
            "target_batches", "schedule")
    return {m: {g: r[g] for g in keep if g in r} for m, r in results.items()}


def set_kinds(params: Params) -> dict[str, str]:
    """Every evaluation set's kind: target, replay, near or far (docs/protocol.md)."""
    groups = ("in_domain", "out_of_domain", "image_text", "zero_shot")
    return {name: set_kind(params, cfg) for group in groups for name, cfg in getattr(params.eval, group).items()}


def details(params: Params, results: dict, summary: dict, wise_file: dict) -> dict:
    """reports/details.json: everything the report shows besides the headline metrics."""
    k = params.eval.k
    wise = wise_ft_summary(wise_file, results[BASELINE], k) if wise_file else {}
    curve = list(wise.values())
    fs = pio.read_json(paths.fewshot()) if paths.fewshot().is_file() else {}
    teacher = pio.read_json(paths.teacher_metrics()) if paths.teacher_metrics().is_file() else {}
    coverage = pio.read_json(paths.coverage()).get("sets", {}) if paths.coverage().is_file() else {}
    return {"sets": set_kinds(params), "methods": detailed(results), "coverage": coverage,
            "headlines": {metric: summarize(results, k, metric) for metric in IMAGE_IMAGE_METRICS},
            "wise_ft": wise, "wise_ft_selected_alpha": wise_file.get("selected_alpha") if wise_file else None,
            "matched_adaptation": ({m: matched_adaptation(row, curve) for m, row in summary.items()
                                    if m not in (BASELINE, params.wise_ft.base)} if curve else {}),
            "fewshot": fs.get("results", {}), "fewshot_run": {k_: v for k_, v in fs.items() if k_ != "results"},
            "teacher": {"zero_shot": teacher.get("zero_shot", {}), "model": teacher.get("model")}}


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    results = {m: pio.read_json(paths.evaluation(m)) for m in params.methods}
    summary = summarize(results, params.eval.k)
    wise_file = pio.read_json(paths.wise_ft_curve()) if paths.wise_ft_curve().is_file() else {}
    info = details(params, results, summary, wise_file)
    pio.write_json({"summary": summary}, paths.metrics())
    pio.write_json(info, paths.details())
    seeds = seed_table(params.experiment, ((params.seed, params.finetune.seed), summary))
    plot_deltas(summary, paths.deltas_figure(), seeds)
    plot_retention(summary, info["wise_ft"], params.wise_ft.base, paths.retention_figure(), seeds)
    fs = pio.read_json(paths.fewshot()) if paths.fewshot().is_file() else {}
    if fs:
        plot_fewshot(fs, paths.fewshot_figure())
    tuning = pio.read_json(paths.tuning()) if paths.tuning().is_file() else {}
    text = markdown(params, summary, results, info, fs, tuning)
    with pio.atomic_path(paths.report_md()) as tmp:
        tmp.write_text(text)
    report_html.write_page(params, text)
    print_summary(summary)


def print_summary(summary: dict[str, dict[str, float]]) -> None:
    """The headline table: the pretrained model's values, then every method's Δ against it."""
    base = summary.get(BASELINE, {})
    columns = [(key, h.title) for key, h in HEADLINES.items() if key in base]
    widths = [max(9, len(title)) for _, title in columns]
    print(f"{'':<18}" + "".join(f" {title:>{w}}" for (_, title), w in zip(columns, widths)))
    if base:
        print(f"{BASELINE:<18}" + "".join(f" {base[key]:{w}.2f}" for (key, _), w in zip(columns, widths)))
    for method, row in summary.items():
        if method != BASELINE:
            print(f"{method + ' Δ':<18}" + "".join(f" {row.get('delta_' + key, float('nan')):+{w}.2f}"
                                                   for (key, _), w in zip(columns, widths)))


def summary(args: argparse.Namespace) -> None:
    """`python -m pipeline summary`: print the table of the last report."""
    print_summary(pio.read_json(paths.metrics())["summary"])
    print(f"details: {paths.report_md()}, {paths.deltas_figure()}")
