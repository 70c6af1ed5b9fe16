"""Stage `report`: compare every method with the pretrained model, as the paper's Fig. 1 does.

Writes `reports/metrics.json`, the declared DVC metrics: only the headline numbers per method
(`summary.<method>.<group>` and `summary.<method>.delta_<group>`), so `dvc metrics diff` and
`dvc exp show` stay readable; `reports/details.json` (not a DVC metric): the WiSE-FT curve
(`wise_ft.<α>.delta_*`), the few-shot cells, every per-set metric and the teacher's zero-shot
accuracy; `reports/fig1_deltas.png`,
`reports/retention.png` (retention vs adaptation: one point per method, the WiSE-FT curve) and
`reports/report.md`.
Deltas are in points: mAP@k ×100 for image-image, mean of I→T and T→I R@1 ×100 for image-text.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params, load_params

BASELINE = "pretrained"
METRICS = paths.REPORTS / "metrics.json"
DETAILS = paths.REPORTS / "details.json"
FIGURE = paths.REPORTS / "fig1_deltas.png"
RETENTION = paths.REPORTS / "retention.png"
FEWSHOT = paths.REPORTS / "fewshot.png"
REPORT = paths.REPORTS / "report.md"
GROUPS = {"delta_in_domain": "In-domain image-image", "delta_ood_image_image": "Out-of-domain image-image",
          "delta_ood_image_text": "Out-of-domain image-text"}


def headline(result: dict, k: int) -> dict[str, float]:
    """The three numbers of Fig. 1 for one method (absolute, in points)."""
    ii = result["image_image"]
    key = f"map@{k}"
    in_dom = [100 * m[key] for m in ii.values() if m["domain"] == "in"]
    ood = [100 * m[key] for m in ii.values() if m["domain"] == "out"]
    text = [100 * m["mean_r@1"] for m in result["image_text"].values()]
    zs = [100 * m["accuracy"] for m in result["zero_shot"].values()]
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"in_domain": mean(in_dom), "ood_image_image": mean(ood), "ood_image_text": mean(text),
            "zero_shot": mean(zs)}


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


def method_colours(methods: list[str]) -> dict[str, tuple]:
    """One distinct colour per method (tab10 for a few, tab20 beyond: tab10 repeats after ten)."""
    import matplotlib.pyplot as plt

    cmap, n = (plt.cm.tab10, 10) if len(methods) <= 10 else (plt.cm.tab20, 20)
    return {m: cmap(i % n) for i, m in enumerate(methods)}


def plot_retention(summary: dict[str, dict[str, float]], wise: dict[str, dict[str, float]], base: str,
                   dest: Path) -> None:
    """Retention (OOD Δ, y) against adaptation (in-domain Δ, x): a point per method + WiSE-FT's curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {"delta_ood_image_image": "Out-of-domain image-image Δ", "delta_ood_image_text": "Out-of-domain image-text Δ"}
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.6), dpi=120)
    methods = [m for m in summary if m != BASELINE]
    colours = method_colours(methods)
    for ax, (key, title) in zip(axes, panels.items()):
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.scatter([0], [0], marker="*", s=140, color="black", zorder=3)
        ax.annotate(BASELINE, (0, 0), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if wise:
            xs = [p["delta_in_domain"] for p in wise.values()]
            ys = [p[key] for p in wise.values()]
            ax.plot(xs, ys, "--", color="grey", linewidth=1, label=f"WiSE-FT of {base}", zorder=1)
            for alpha, x, y in zip(wise, xs, ys):
                ax.annotate(f"α={alpha}", (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7,
                            color="grey")
        for m in methods:
            x, y = summary[m]["delta_in_domain"], summary[m][key]
            ax.scatter([x], [y], s=50, color=colours[m], zorder=4, label=m)
            ax.annotate(m, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel("In-domain image-image Δ (adaptation, points)")
        ax.set_ylabel(f"{title} (retention, points)")
        ax.set_title(title.replace(" Δ", "") + ": up and right is better", fontsize=10)
    axes[1].legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    with pio.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
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
        ax.plot(ks, [by_k[str(k)]["base"] for k in ks], "-o", color=colour, label=f"{method} (base)")
        novel = [by_k[str(k)]["novel"] for k in ks]
        if None not in novel:
            ax.plot(ks, novel, "--", marker="x", color=colour, label=f"{method} (novel)")
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
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + ["", "![few-shot](fewshot.png)", ""]


def detailed(results: dict[str, dict]) -> dict:
    """Every metric, nested method → group → set → metric (values in [0, 1])."""
    keep = ("image_image", "image_image_merged", "image_text", "zero_shot", "selection")
    return {m: {g: r[g] for g in keep if g in r} for m, r in results.items()}


def plot_deltas(summary: dict[str, dict[str, float]], dest: Path) -> None:
    """Fig.-1-style grouped bars: Δ vs pretrained per group, one bar per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in summary if m != BASELINE]
    colours = method_colours(methods)
    x = np.arange(len(GROUPS))
    width = 0.8 / max(1, len(methods))
    many = len(methods) > 4  # beyond a few bars per group the value labels collide: the table has them
    fig, ax = plt.subplots(figsize=(10.5 if many else 7.5, 4.2), dpi=120)
    for i, method in enumerate(methods):
        values = [summary[method][g] for g in GROUPS]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=method, color=colours[method])
        if not many:
            ax.bar_label(bars, fmt="%+.1f", padding=2, fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, list(GROUPS.values()))
    ax.set_ylabel("Δ vs pretrained (points)")
    ax.set_title("Adaptation vs forgetting (cf. paper Fig. 1)")
    if many:
        ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(frameon=False)
    ax.margins(y=0.15)
    fig.tight_layout()
    with pio.atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def markdown(params: Params, summary: dict, results: dict, teacher: dict, wise: dict, fs: dict) -> str:
    k = params.eval.k
    lines = ["# Results", "", f"Experiment `{params.experiment}`, teacher seed {params.seed}, fine-tuning seed {params.finetune.seed}. All numbers in points "
             f"(×100). Image-image: mAP@{k}; image-text: mean of I→T and T→I R@1. Δ = method − pretrained.", ""]
    if teacher.get("zero_shot"):
        zs = ", ".join(f"{n} {z['zero_shot_accuracy']:.1f} % (chance {z['chance']:.1f} %)"
                       for n, z in teacher["zero_shot"].items())
        lines += [f"Teacher ({teacher.get('model')}): zero-shot accuracy on val: {zs}.", ""]
    lines += ["| method | in-domain | Δ | OOD image-image | Δ | OOD image-text | Δ | zero-shot | Δ |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m, row in summary.items():
        cells = []
        for name in ("in_domain", "ood_image_image", "ood_image_text", "zero_shot"):
            cells += [f"{row[name]:.2f}", f"{row.get('delta_' + name, 0.0):+.2f}" if m != BASELINE else "–"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "![deltas](fig1_deltas.png)", ""]
    if wise:
        lines += [f"## WiSE-FT of `{params.wise_ft.base}` (no retraining)", "",
                  "| α | in-domain Δ | OOD image-image Δ | OOD image-text Δ | zero-shot Δ |", "|---|---|---|---|---|"]
        lines += [f"| {a} | {p['delta_in_domain']:+.2f} | {p['delta_ood_image_image']:+.2f} | "
                  f"{p['delta_ood_image_text']:+.2f} | {p['delta_zero_shot']:+.2f} |" for a, p in wise.items()]
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
    lines += ["", "## Checkpoint selection", "", "| method | rule | step | val target mAP | val generic mAP |",
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
    plot_deltas(summary, FIGURE)
    plot_retention(summary, wise, params.wise_ft.base, RETENTION)
    if fs:
        plot_fewshot(fs, FEWSHOT)
    with pio.atomic_path(REPORT) as tmp:
        tmp.write_text(markdown(params, summary, results, teacher, wise, fs))
    print_summary(summary)


def print_summary(summary: dict[str, dict[str, float]]) -> None:
    print(f"{'method':<16} {'in-domain':>10} {'Δ':>7} {'OOD img':>9} {'Δ':>7} {'OOD text':>9} {'Δ':>7}")
    for m, row in summary.items():
        d = lambda n: f"{row['delta_' + n]:+7.2f}" if "delta_" + n in row else f"{'':>7}"  # noqa: E731
        print(f"{m:<16} {row['in_domain']:10.2f} {d('in_domain')} {row['ood_image_image']:9.2f} "
              f"{d('ood_image_image')} {row['ood_image_text']:9.2f} {d('ood_image_text')}")


def summary(args: argparse.Namespace) -> None:
    """`python -m pipeline summary`: print the table of the last report."""
    print_summary(pio.read_json(METRICS)["summary"])
    print(f"details: {REPORT}, {FIGURE}")
