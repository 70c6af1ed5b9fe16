"""The report's figures: Δ bars per headline (the paper's Fig. 1), retention against adaptation with the
WiSE-FT curve, and the few-shot curves; seed spread as error bars where `seeds` has it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io as pio
from pipeline.lib.headlines import BASELINE, HEADLINES, label as metric_label
from pipeline.lib.recipes import FEWSHOT_METHODS


def fewshot_label(method: str) -> str:
    return FEWSHOT_METHODS[method].title if method in FEWSHOT_METHODS else method


# Fixed colours for the methods every reader compares (the baseline, naive fine-tuning, the paper's
# method); the paper method's variants get blues, every other method a hue from neither family.
KEY_COLOURS = {BASELINE: "#4d4d4d", "naive": "#d62728", "infuse": "#1f77b4"}
INFUSE_SHADES = ("#6baed6", "#08519c", "#9ecae1", "#4292c6", "#c6dbef")
OTHER_COLOURS = ("#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ffbb78",
                 "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h", "p", "d")
def delta_names(summary: dict[str, dict[str, float]]) -> list[str]:
    """Every `delta_*` key of the summary, the known headline metrics first."""
    present = list(dict.fromkeys(k for row in summary.values() for k in row if k.startswith("delta_")))
    known = [f"delta_{n}" for n in HEADLINES if f"delta_{n}" in present]
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
