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
from pathlib import Path

import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params, load_params
from pipeline.stages.common import HEADLINES
from pipeline.stages import report_html
from pipeline.stages.seeds import seed_table

BASELINE = "pretrained"
METRICS = paths.REPORTS / "metrics.json"
DETAILS = paths.REPORTS / "details.json"
FIGURE = paths.REPORTS / "fig1_deltas.png"
RETENTION = paths.REPORTS / "retention.png"
FEWSHOT = paths.REPORTS / "fewshot.png"
REPORT = paths.REPORTS / "report.md"
# few-shot methods shown under another name than their key: the hyperbolic adapter is built from the
# LatHAdapter abstract alone (its equations were not available), so it is "LatHAdapter-style"
FEWSHOT_LABELS = {"lathadapter": "LatHAdapter-style"}


def fewshot_label(method: str) -> str:
    return FEWSHOT_LABELS.get(method, method)


def headline(result: dict, k: int) -> dict[str, float]:
    """The Fig. 1 numbers for one method (absolute, in points), retention split by kind of set:

    in_domain (target test), ood_image_image (mean over every out-of-domain image-image set, as the
    paper averages), ood_replay (the sets of the replay domain, e.g. ImageNet val), ood_unseen (the
    domains no fine-tuning input touches), ood_image_text (every image-text set) and its replay /
    unseen parts, zero_shot. A group without sets is left out.
    """
    ii = result["image_image"]
    key = f"map@{k}"
    groups = {
        "in_domain": [100 * m[key] for m in ii.values() if m["domain"] == "in"],
        "ood_image_image": [100 * m[key] for m in ii.values() if m["domain"] == "out"],
        "ood_replay": [100 * m[key] for m in ii.values() if m["domain"] == "out" and m.get("kind") == "replay"],
        "ood_unseen": [100 * m[key] for m in ii.values() if m["domain"] == "out" and m.get("kind") == "unseen"],
        "ood_image_text": [100 * m["mean_r@1"] for m in result["image_text"].values()],
        "ood_image_text_replay": [100 * m["mean_r@1"] for m in result["image_text"].values() if m.get("kind") == "replay"],
        "ood_image_text_unseen": [100 * m["mean_r@1"] for m in result["image_text"].values() if m.get("kind") == "unseen"],
        "zero_shot": [100 * m["accuracy"] for m in result["zero_shot"].values()],
    }
    return {name: float(np.mean(values)) for name, values in groups.items() if values}


def summarize(results: dict[str, dict], k: int) -> dict[str, dict[str, float]]:
    """Absolute headline numbers per method and their Δ against the pretrained model."""
    if BASELINE not in results:
        raise ValueError(f"methods must include '{BASELINE}' (the reference for every delta)")
    base = headline(results[BASELINE], k)
    out = {}
    for method, result in results.items():
        h = headline(result, k)
        row = {name: round(v, 3) for name, v in h.items()}
        if method != BASELINE:
            row.update({f"delta_{name}": round(h[name] - base[name], 3) for name in h})
        out[method] = row
    return out


def wise_ft_summary(curve: dict, baseline: dict, k: int) -> dict[str, dict[str, float]]:
    """α (as a string key, for `dvc metrics diff`) → headline numbers and Δ vs pretrained."""
    base = headline(baseline, k)
    out = {}
    for point in curve["curve"]:
        h = headline(point, k)
        out[f"{point['alpha']:g}"] = {**{n: round(v, 3) for n, v in h.items()},
                                      **{f"delta_{n}": round(h[n] - base[n], 3) for n in h}}
    return out


# Fixed colours for the methods every reader compares (the baseline, naive fine-tuning, the paper's
# method); the paper method's variants get blues, every other method a hue from neither family.
KEY_COLOURS = {BASELINE: "#4d4d4d", "naive": "#d62728", "infuse": "#1f77b4"}
INFUSE_SHADES = ("#6baed6", "#08519c", "#9ecae1", "#4292c6", "#c6dbef")
OTHER_COLOURS = ("#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ffbb78",
                 "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h", "p", "d")
# Headline metrics in reading order; names not listed here (new summary keys) follow, labelled by name.
METRIC_LABELS = {"in_domain": "In-domain image-image", "ood_image_image": "Out-of-domain image-image (all)",
                 "ood_replay": "Replay-domain image-image", "ood_unseen": "Unseen-domain image-image",
                 "ood_image_text": "Out-of-domain image-text (all)", "ood_image_text_replay": "Replay-domain image-text",
                 "ood_image_text_unseen": "Unseen-domain image-text", "zero_shot": "Zero-shot accuracy"}


def metric_label(name: str) -> str:
    """Readable name of a headline metric (`ood_image_text` → 'Out-of-domain image-text')."""
    name = name.removeprefix("delta_")
    return METRIC_LABELS.get(name, name.replace("ood_", "out-of-domain ").replace("_", " ").capitalize())


def delta_names(summary: dict[str, dict[str, float]]) -> list[str]:
    """Every `delta_*` key of the summary, the known headline metrics first."""
    present = list(dict.fromkeys(k for row in summary.values() for k in row if k.startswith("delta_")))
    known = [f"delta_{n}" for n, _ in HEADLINES if f"delta_{n}" in present]
    return known + [k for k in present if k not in known]


def method_colours(methods: list[str]) -> dict[str, str]:
    """One colour per method: fixed ones for pretrained / naive / infuse, blues for infuse variants,
    the other hues for the rest (repeating only past that many methods)."""
    out, shades, others = {}, iter(INFUSE_SHADES), iter(OTHER_COLOURS)
    for i, m in enumerate(methods):
        if m in KEY_COLOURS:
            out[m] = KEY_COLOURS[m]
        elif m.startswith("infuse"):
            out[m] = next(shades, None) or next(others, None) or OTHER_COLOURS[i % len(OTHER_COLOURS)]
        else:
            out[m] = next(others, None) or OTHER_COLOURS[i % len(OTHER_COLOURS)]
    return out


def seed_spread(seeds: dict | None, method: str, key: str) -> dict | None:
    """{mean, std, n} of one method's Δ over fine-tuning seeds (reports/seeds.json), when there are several."""
    cell = (seeds or {}).get(method, {}).get(key)
    return cell if cell and cell.get("n", 0) > 1 else None


def plot_retention(summary: dict[str, dict[str, float]], wise: dict[str, dict[str, float]], base: str,
                   dest: Path, seeds: dict | None = None) -> None:
    """Retention (each other Δ, y) against adaptation (in-domain Δ, x): a point per method, WiSE-FT's
    curve, seed std as error bars. Methods are told apart by colour and marker in one legend, with no
    text next to the points, so labels never overlap however close the points are."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in delta_names(summary) if k != "delta_in_domain"]
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols + 2.2, 4.0 * rows), dpi=120, squeeze=False)
    methods = [m for m in summary if m != BASELINE]
    colours = method_colours(methods)
    for ax, key in zip(axes.flat, keys):
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.scatter([0], [0], marker="*", s=160, color=KEY_COLOURS[BASELINE], zorder=3, label=BASELINE)
        if wise:
            xs = [p["delta_in_domain"] for p in wise.values()]
            ys = [p.get(key, float("nan")) for p in wise.values()]
            ax.plot(xs, ys, "--", color="grey", linewidth=1, marker=".", markersize=6, zorder=1,
                    label=f"WiSE-FT of {base}, α = {', '.join(wise)} ({BASELINE} → {base})")
        for i, m in enumerate(methods):
            x, y = summary[m]["delta_in_domain"], summary[m].get(key, float("nan"))
            sx, sy = seed_spread(seeds, m, "delta_in_domain"), seed_spread(seeds, m, key)
            if sx or sy:
                ax.errorbar([x], [y], xerr=[sx["std"]] if sx else None, yerr=[sy["std"]] if sy else None,
                            fmt="none", ecolor=colours[m], elinewidth=1, capsize=3, alpha=0.8, zorder=3)
            ax.scatter([x], [y], s=60 if m in KEY_COLOURS else 45, marker=MARKERS[i % len(MARKERS)],
                       color=colours[m], edgecolor="black", linewidth=0.5, zorder=4, label=m)
        ax.set_xlabel("In-domain image-image Δ (adaptation, points)")
        ax.set_ylabel(f"{metric_label(key)} Δ (retention, points)")
        ax.set_title(f"{metric_label(key)}: up and right is better", fontsize=10)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    note = " (error bars: std over fine-tuning seeds)" if any(
        seed_spread(seeds, m, "delta_in_domain") for m in methods) else ""
    fig.legend(handles, labels, frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5),
               title=f"method{note}", title_fontsize=8)
    fig.tight_layout()
    with pio.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def plot_fewshot(fs: dict, dest: Path) -> None:
    """Accuracy against K shots per adapter method: base classes (solid) and novel classes (dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=120)
    for i, (method, by_k) in enumerate(fs["results"].items()):
        ks = sorted(int(k) for k in by_k)  # JSON keys are strings: "16" sorts before "2"
        colour = plt.cm.tab10(i % 10)
        ax.plot(ks, [by_k[str(k)]["base"] for k in ks], "-o", color=colour, label=f"{fewshot_label(method)} (base)")
        novel = [by_k[str(k)]["novel"] for k in ks]
        if None not in novel:
            ax.plot(ks, novel, "--", marker="x", color=colour, label=f"{fewshot_label(method)} (novel)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("shots per base class (K)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Few-shot, encoders frozen: {fs['dataset']}/{fs['subset']} "
                 f"({fs['base_classes']} base, {fs['novel_classes']} novel classes)", fontsize=10)
    ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    with pio.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def fewshot_markdown(fs: dict) -> list[str]:
    ks = sorted(next(iter(fs["results"].values())), key=int)
    lines = [f"## Few-shot adapters, encoders frozen ({fs['dataset']}/{fs['subset']}: {fs['base_classes']} base, "
             f"{fs['novel_classes']} novel classes, mean of {fs['repeats']} shot draws)", "",
             "Accuracy (%) base / novel; novel is n/a for the linear probe (no head for unseen classes).", "",
             "| method | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for method, by_k in fs["results"].items():
        cells = [f"{by_k[k]['base']:.1f} / " + ("n/a" if by_k[k]["novel"] is None else f"{by_k[k]['novel']:.1f}")
                 for k in ks]
        lines.append(f"| {fewshot_label(method)} | " + " | ".join(cells) + " |")
    return lines + ["", "![few-shot](fewshot.png)", ""]


def detailed(results: dict[str, dict]) -> dict:
    """Every metric, nested method → group → set → metric (values in [0, 1])."""
    keep = ("image_image", "image_image_merged", "image_text", "zero_shot", "selection")
    return {m: {g: r[g] for g in keep if g in r} for m, r in results.items()}


def plot_deltas(summary: dict[str, dict[str, float]], dest: Path, seeds: dict | None = None) -> None:
    """Fig.-1-style Δ vs pretrained: one panel per headline metric (zero-shot included), one
    horizontal bar per method with its value; where several fine-tuning seeds exist, their
    mean ± std is drawn on the bar (black dot and whisker)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in summary if m != BASELINE]
    keys = delta_names(summary)
    colours = method_colours(methods)
    y = np.arange(len(methods))[::-1]  # first method on top
    height = max(2.6, 1.3 + 0.34 * len(methods))
    cols = min(4, len(keys))                     # panels wrap into rows of four
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 + 3.1 * cols, height * rows), dpi=120, sharey=True,
                             squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    any_seeds = False
    for ax, key in zip(axes.flat, keys):
        values = np.array([summary[m].get(key, np.nan) for m in methods])
        ax.barh(y, values, color=[colours[m] for m in methods], height=0.7)
        ends = values.copy()
        for yi, m, v in zip(y, methods, values):
            spread = seed_spread(seeds, m, key)
            if spread:
                any_seeds = True
                ax.errorbar(spread["mean"], yi, xerr=spread["std"], fmt="o", color="black", markersize=3,
                            elinewidth=1, capsize=2.5, zorder=3)
                ends[methods.index(m)] = spread["mean"] + np.sign(v or 1) * spread["std"]
        width = max(0.5, float(np.nanmax(np.abs(np.concatenate([values, ends])))))  # all-zero Δs: a readable axis
        for yi, v, end in zip(y, values, ends):  # each value just past its bar (or whisker), never on another
            if np.isfinite(v):
                side = 1 if v >= 0 else -1
                ax.text(side * max(abs(v), abs(end)) + side * 0.04 * width, yi, f"{v:+.1f}", va="center",
                        ha="left" if side > 0 else "right", fontsize=7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlim(-1.45 * width if np.nanmin(ends) < 0 else -0.1 * width,
                    1.45 * width if np.nanmax(ends) > 0 else 0.1 * width)
        ax.set_title(metric_label(key), fontsize=9)
        ax.set_xlabel("Δ vs pretrained (points)", fontsize=8)
        ax.tick_params(labelsize=7)
    for row in axes:
        row[0].set_yticks(y, methods, fontsize=8)
        for label, m in zip(row[0].get_yticklabels(), methods):
            label.set_color(colours[m] if m in KEY_COLOURS else "black")
    title = "Adaptation (in-domain) vs forgetting (the rest), Δ vs pretrained"
    if any_seeds:
        title += "; ● mean ± std over fine-tuning seeds"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with pio.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def replay_marks(params: Params) -> dict[str, list[str]]:
    """Method → what it reads of the replay domain's labels or class prompts while fine-tuning (the
    retention-term registry says), for the † marks of the summary table."""
    from pipeline.config import method_config
    from pipeline.lib import retention

    return {m: retention.uses_generic_labels_or_prompts(method_config(params, m)) for m in params.methods}


def sets_markdown(params: Params, results: dict) -> list[str]:
    """Which evaluation set is target, replay (touched by fine-tuning) or unseen."""
    from pipeline.stages.common import set_kind

    lines = ["## Evaluation sets", "", "Replay sets come from the domain fine-tuning reads (its train split for "
             "distillation, its val split for selection, and its labels or class prompts for the † methods); "
             "unseen sets come from domains no fine-tuning loss, selection rule, label or prompt touches.", "",
             "| set | used for | dataset / split / subset | kind |", "|---|---|---|---|"]
    groups = (("in_domain", "image-image"), ("out_of_domain", "image-image"), ("image_text", "image-text"),
              ("zero_shot", "zero-shot"))
    for group, use in groups:
        for name, cfg in getattr(params.eval, group).items():
            lines.append(f"| {name} | {use} | {cfg.dataset} / {cfg.split} / {cfg.subset or 'all'} | "
                         f"{set_kind(params, cfg)} |")
    return lines + [""]


def tuning_markdown(params: Params, tuning: dict) -> list[str]:
    """Each method's grid, the validation criterion of every value (reports/tuning.json) and the value used."""
    from pipeline.config import method_config

    if not params.tuning:
        return []
    recorded = tuning.get("methods", {}) if tuning.get("experiment") == params.experiment else {}
    lines = ["## Tuning (validation only)", "", "Every method gets the same budget: one main knob, a 3-value grid, "
             "chosen by the selected checkpoint's mean of target-val and replay-val mAP@k "
             "(`python -m pipeline tune`).", "",
             "| method | knob | grid (criterion ×100) | used |", "|---|---|---|---|"]
    for method, entry in params.tuning.items():
        results = recorded.get(method, {}).get("results", {})
        cells = ", ".join(f"{v:g}" + (f" ({100 * results[f'{v:g}']['criterion']:.2f})" if f"{v:g}" in results else "")
                          for v in entry.grid)
        lines.append(f"| {method} | `{entry.key}` | {cells} | {getattr(method_config(params, method), entry.key):g} |")
    return lines + [""]


def markdown(params: Params, summary: dict, results: dict, teacher: dict, wise: dict, fs: dict,
             tuning: dict | None = None) -> str:
    k = params.eval.k
    lines = ["# Results", "", f"Experiment `{params.experiment}`, teacher seed {params.seed}, fine-tuning seed "
             f"{params.finetune.seed}. All numbers in points (×100). Image-image: mAP@{k}; image-text: mean of I→T "
             "and T→I R@1; zero-shot: accuracy. Δ = method − pretrained. OOD image-image is the mean over every "
             "out-of-domain set, replay and unseen alike.", ""]
    if teacher.get("zero_shot"):
        zs = ", ".join(f"{n} {z['zero_shot_accuracy']:.1f} % (chance {z['chance']:.1f} %)"
                       for n, z in teacher["zero_shot"].items())
        lines += [f"Teacher ({teacher.get('model')}): zero-shot accuracy on val: {zs}.", ""]
    columns = [(key, title) for key, title in HEADLINES if key in summary[BASELINE]]
    marks = replay_marks(params)
    lines += ["| method | " + " | ".join(f"{title} | Δ" for _, title in columns) + " |",
              "|---|" + "---|---|" * len(columns)]
    for m, row in summary.items():
        cells = []
        for key, _ in columns:
            cells += [f"{row[key]:.2f}", f"{row.get('delta_' + key, 0.0):+.2f}" if m != BASELINE else "–"]
        lines.append(f"| {m}{' †' if marks.get(m) else ''} | " + " | ".join(cells) + " |")
    marked = {m: why for m, why in marks.items() if why}
    if marked:
        lines += ["", "† reads replay-domain labels or class prompts while fine-tuning: " +
                  "; ".join(f"{m} ({', '.join(why)})" for m, why in marked.items()) + "."]
    lines += ["", "![deltas](fig1_deltas.png)", ""]
    if wise:
        lines += [f"## WiSE-FT of `{params.wise_ft.base}` (no retraining)", "",
                  "| α | " + " | ".join(f"{title} Δ" for _, title in columns) + " |", "|---|" + "---|" * len(columns)]
        lines += [f"| {a} | " + " | ".join(f"{p[f'delta_{key}']:+.2f}" for key, _ in columns) + " |"
                  for a, p in wise.items()]
        lines += [""]
    lines += ["![retention vs adaptation](retention.png)", "", "![neighbours](neighbours.png)", ""]
    if fs:
        lines += fewshot_markdown(fs)
    lines += ["## Per evaluation set", ""]
    sets = list(next(iter(results.values()))["image_image"])
    lines += [f"| method | " + " | ".join(f"{s} mAP@{k} / top-1" for s in sets) + " |",
              "|---|" + "---|" * len(sets)]
    for m, r in results.items():
        lines.append(f"| {m} | " + " | ".join(f"{100 * r['image_image'][s][f'map@{k}']:.2f} / "
                                             f"{100 * r['image_image'][s]['top_1']:.2f}" for s in sets) + " |")
    lines += [""] + sets_markdown(params, results) + tuning_markdown(params, tuning or {})
    lines += ["## Checkpoint selection", "", "| method | rule | step | val target mAP | val replay mAP |",
              "|---|---|---|---|---|"]
    for m, r in results.items():
        s = r["selection"]
        lines.append(f"| {m} | {s['select_on']} | {s['step']} | {100 * s['target']:.2f} | {100 * s['generic']:.2f} |")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    results = {m: pio.read_json(paths.evaluation(m)) for m in params.methods}
    summary = summarize(results, params.eval.k)
    curve_file = paths.wise_ft_curve()
    wise = (wise_ft_summary(pio.read_json(curve_file), results[BASELINE], params.eval.k)
            if curve_file.is_file() and BASELINE in results else {})
    fs = pio.read_json(paths.fewshot()) if paths.fewshot().is_file() else {}
    teacher_file = paths.REPORTS / "teacher.json"
    teacher = pio.read_json(teacher_file) if teacher_file.is_file() else {}
    pio.write_json({"summary": summary}, METRICS)
    pio.write_json({"wise_ft": wise, "fewshot": fs.get("results", {}), "methods": detailed(results),
                    "teacher": {"zero_shot": teacher.get("zero_shot", {})}}, DETAILS)
    seeds = seed_table(params.experiment)
    plot_deltas(summary, FIGURE, seeds)
    plot_retention(summary, wise, params.wise_ft.base, RETENTION, seeds)
    if fs:
        plot_fewshot(fs, FEWSHOT)
    tuning = pio.read_json(paths.tuning()) if paths.tuning().is_file() else {}
    text = markdown(params, summary, results, teacher, wise, fs, tuning)
    with pio.atomic_path(REPORT) as tmp:
        tmp.write_text(text)
    report_html.write_page(params, text)
    print_summary(summary)


def print_summary(summary: dict[str, dict[str, float]]) -> None:
    """The headline table: the pretrained model's values, then every method's Δ against it."""
    base = summary.get(BASELINE, {})
    columns = [(key, title) for key, title in HEADLINES if key in base]
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
    print_summary(pio.read_json(METRICS)["summary"])
    print(f"details: {REPORT}, {FIGURE}")
