"""The written report (reports/report.md): the summary table, the WiSE-FT curve, few-shot cells, per-set
results, which set is what, the tuning grids and checkpoint selection. The tables follow the
headline declarations (`pipeline.lib.headlines`)."""
from __future__ import annotations

from pipeline.config import Params
from pipeline.lib.headlines import BASELINE, HEADLINES
from pipeline.lib.metrics import at
from pipeline.stages.report_plots import fewshot_label


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
    columns = [(key, h.title) for key, h in HEADLINES.items() if key in summary[BASELINE]]
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
        lines.append(f"| {m} | " + " | ".join(f"{100 * r['image_image'][s][at('map', k)]:.2f} / "
                                             f"{100 * r['image_image'][s]['top_1']:.2f}" for s in sets) + " |")
    lines += [""] + sets_markdown(params, results) + tuning_markdown(params, tuning or {})
    lines += ["## Checkpoint selection", "", "| method | rule | step | val target mAP | val replay mAP |",
              "|---|---|---|---|---|"]
    for m, r in results.items():
        s = r["selection"]
        lines.append(f"| {m} | {s['select_on']} | {s['step']} | {100 * s['target']:.2f} | {100 * s['generic']:.2f} |")
    return "\n".join(lines) + "\n"
