"""The written report (reports/report.md): headline tables per kind of set, the image-image headlines at
three metrics, WiSE-FT and retention at matched adaptation, few-shot cells, every set with its kind and
coverage, the tuning choices and checkpoint selection. The tables follow the headline declarations
(`pipeline.lib.headlines`)."""
from __future__ import annotations

from pipeline.config import Params, method_config
from pipeline.lib import retention
from pipeline.lib.headlines import BASELINE, HEADLINES, IMAGE_IMAGE_METRICS
from pipeline.lib.metrics import at
from pipeline.stages.report_plots import fewshot_label

GROUP_TITLES = {"image_image": "Image-image retrieval (mAP@{k})", "image_text": "Image-text retrieval (mean R@1)",
                "zero_shot": "Zero-shot classification (accuracy)"}


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


def replay_marks(params: Params) -> dict[str, list[str]]:
    """Method → what it reads of the replay domain's labels or class prompts while fine-tuning (the
    retention-term registry says), for the † marks of the tables."""
    return {m: retention.uses_generic_labels_or_prompts(method_config(params, m)) for m in params.methods}


def headline_table(summary: dict, names: list[str], marks: dict[str, list[str]], absolute: bool = True) -> list[str]:
    """The pretrained model's values (when `absolute`), then every method's Δ, one column per headline."""
    lines = ["| method | " + " | ".join(HEADLINES[n].title for n in names) + " |", "|---|" + "---|" * len(names)]
    for m, row in summary.items():
        if m == BASELINE:
            if absolute:
                lines.append(f"| {m} (absolute) | " + " | ".join(f"{row[n]:.2f}" for n in names) + " |")
            continue
        lines.append(f"| {m}{' †' if marks.get(m) else ''} | "
                     + " | ".join(f"{row.get('delta_' + n, float('nan')):+.2f}" for n in names) + " |")
    return lines + [""]


def headline_sections(params: Params, summary: dict, info: dict) -> list[str]:
    marks, base, lines = replay_marks(params), summary[BASELINE], []
    for group, title in GROUP_TITLES.items():
        names = [n for n, h in HEADLINES.items() if h.group == group and n in base]
        if names:
            lines += [f"## {title.format(k=params.eval.k)}: Δ vs pretrained", ""] + headline_table(summary, names, marks)
    marked = {m: why for m, why in marks.items() if why}
    if marked:
        lines += ["† reads replay-domain labels or class prompts while fine-tuning: " +
                  "; ".join(f"{m} ({', '.join(why)})" for m, why in marked.items()) + ".", ""]
    ii = [n for n, h in HEADLINES.items() if h.group == "image_image" and n in base]
    for metric in IMAGE_IMAGE_METRICS:
        rows = info.get("headlines", {}).get(metric)
        if rows:
            lines += [f"### Image-image at {metric.replace('@k', f'@{params.eval.k}')}", ""] + headline_table(rows, ii, marks)
    return lines + ["![deltas](fig1_deltas.png)", ""]


def wise_sections(params: Params, info: dict) -> list[str]:
    wise, matched = info.get("wise_ft", {}), info.get("matched_adaptation", {})
    if not wise:
        return []
    names = [n for n in HEADLINES if f"delta_{n}" in next(iter(wise.values()))]
    lines = [f"## WiSE-FT of `{params.wise_ft.base}` (no retraining); α = {info.get('wise_ft_selected_alpha')} "
             "chosen on validation", "", "| α | " + " | ".join(f"{HEADLINES[n].title} Δ" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    lines += [f"| {a} | " + " | ".join(f"{p[f'delta_{n}']:+.2f}" for n in names) + " |" for a, p in wise.items()]
    if matched:
        kept = [n for n in names if n != "in_domain"]
        lines += ["", "### Retention at matched adaptation: each method minus WiSE-FT(naive) at the same in-domain gain",
                  "", "Positive: more retained than interpolating naive fine-tuning back toward the teacher would "
                  "keep at that gain (‡: the method gained more than naive; compared with naive itself).", "",
                  "| method | " + " | ".join(HEADLINES[n].title for n in kept) + " |", "|---|" + "---|" * len(kept)]
        lines += [f"| {m}{' ‡' if row.get('beyond_naive_gain') else ''} | "
                  + " | ".join(f"{row.get(n, float('nan')):+.2f}" for n in kept) + " |" for m, row in matched.items()]
    return lines + ["", "![retention vs adaptation](retention.png)", "", "![neighbours](neighbours.png)", ""]


def sets_markdown(params: Params, results: dict, info: dict) -> list[str]:
    """Every image-image set: its kind, its coverage by the replay, the teacher's value and each Δ."""
    k, coverage = params.eval.k, info.get("coverage", {})
    methods = [m for m in results if m != BASELINE]
    lines = ["## Per evaluation set (image-image mAP@{}, Δ vs pretrained)".format(k), "",
             "Kinds (docs/protocol.md): replay sets come from the data fine-tuning reads; near sets are held-out "
             "classes of kinds the replay covers, far sets a kind it never shows. Coverage: the median best "
             "teacher cosine of a test image to the replay train images over the same to its own train split.", "",
             "| set | kind | coverage | pretrained | " + " | ".join(methods) + " |", "|---|---|---|---|" + "---|" * len(methods)]
    base = results[BASELINE]["image_image"]
    for name, m in base.items():
        cov = coverage.get(name, {}).get("coverage")
        lines.append(f"| {name} | {info['sets'].get(name)} | {'–' if cov is None else f'{cov:.3f}'} | "
                     f"{100 * m[at('map', k)]:.2f} | " + " | ".join(
                         f"{100 * (results[x]['image_image'][name][at('map', k)] - m[at('map', k)]):+.2f}"
                         for x in methods) + " |")
    others = {n: kind for n, kind in info["sets"].items() if n not in base}
    if others:
        lines += ["", "Image-text and zero-shot sets: " + ", ".join(f"{n} ({kind})" for n, kind in others.items()) + "."]
    return lines + [""]


def tuning_markdown(params: Params, tuning: dict) -> list[str]:
    """Each method's tuned knobs (reports/tuning.json), the runs it took and the values used."""
    recorded = tuning.get("methods", {}) if tuning.get("experiment") == params.experiment else {}
    if not params.tuning:
        return []
    lines = ["## Tuning (validation only; docs/protocol.md#tuning, reports/tuning.md)", "",
             "| method | chosen | runs | extensions | stopped | used |", "|---|---|---|---|---|---|"]
    for method, entry in params.tuning.items():
        rec = recorded.get(method, {})
        used = ", ".join(f"{k} = {getattr(method_config(params, method), k):g}" for k in entry.knobs)
        chosen = ", ".join(f"{k} = {v:g}" for k, v in rec.get("chosen", {}).items()) or "–"
        lines.append(f"| {method} | {chosen} | {rec.get('runs', '–')} | {len(rec.get('extensions', []))} | "
                     f"{rec.get('stopped', '–')} | {used} |")
    return lines + [""]


def selection_markdown(results: dict) -> list[str]:
    lines = ["## Checkpoint selection and steps", "",
             "| method | rule | selected step | val target mAP | val replay mAP | optimizer steps | target batches |",
             "|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        s = r["selection"]
        lines.append(f"| {m} | {s['select_on']} | {s['step']} | {100 * s['target']:.2f} | {100 * s['generic']:.2f} | "
                     f"{r.get('optimizer_steps', '–')} | {r.get('target_batches', '–')} |")
    return lines


def markdown(params: Params, summary: dict, results: dict, info: dict, fs: dict, tuning: dict | None = None) -> str:
    k, teacher = params.eval.k, info.get("teacher", {})
    lines = ["# Results", "", f"Experiment `{params.experiment}`, teacher seed {params.seed}, fine-tuning seed "
             f"{params.finetune.seed}. All numbers in points (×100). Image-image: mAP@{k}; image-text: mean of I→T "
             "and T→I R@1; zero-shot: accuracy. Δ = method − pretrained. Kinds of sets: docs/protocol.md.", ""]
    if teacher.get("zero_shot"):
        zs = ", ".join(f"{n} {z['zero_shot_accuracy']:.1f} % (chance {z['chance']:.1f} %)"
                       for n, z in teacher["zero_shot"].items())
        lines += [f"Teacher ({teacher.get('model')}): zero-shot accuracy on val: {zs}.", ""]
    lines += headline_sections(params, summary, info) + wise_sections(params, info)
    if fs:
        lines += fewshot_markdown(fs)
    lines += sets_markdown(params, results, info) + tuning_markdown(params, tuning or {}) + selection_markdown(results)
    return "\n".join(lines) + "\n"
