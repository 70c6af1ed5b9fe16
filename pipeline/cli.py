"""`python -m pipeline <stage> [name]`: the one entry point used by DVC, Snakemake and people.

Imports are lazy so `--help` and light stages do not pay torch's start-up time.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time

# name → (module, help, takes a name argument)
STAGES: dict[str, tuple[str, str, str | None]] = {
    "prepare": ("pipeline.stages.prepare", "prepare one dataset: manifest + class-disjoint splits", "dataset"),
    "teacher": ("pipeline.stages.teacher", "build (embedded) or load (open_clip) the pretrained VLM", None),
    "features": ("pipeline.stages.features", "frozen-teacher features: distillation targets, text", None),
    "finetune": ("pipeline.stages.finetune", "fine-tune the vision encoder with one method", "method"),
    "embed": ("pipeline.stages.embed", "embed the evaluation sets with one method's encoder", "method"),
    "index": ("pipeline.stages.index", "build FAISS indices over one method's embeddings", "method"),
    "evaluate": ("pipeline.stages.evaluate", "kNN, image-text and zero-shot metrics of one method", "method"),
    "wiseft": ("pipeline.stages.wiseft", "WiSE-FT: evaluate (1-α)θ0 + αθ_ft of wise_ft.base at each α", None),
    "neighbours": ("pipeline.stages.neighbours", "qualitative grid: top neighbours of fixed queries per method", None),
    "fewshot": ("pipeline.stages.fewshot", "K-shot adapters on frozen encoders (LatHAdapter family)", None),
    "report": ("pipeline.stages.report", "reports/metrics.json, plots and report.md", None),
    "summary": ("pipeline.stages.report", "print the summary table of reports/metrics.json", None),
    "seeds": ("pipeline.stages.seeds", "summary Δs as mean ± std over the finetune.seed experiments", None),
    "tune": ("pipeline.stages.tune", "the `tuning:` grid of each method's main knob, chosen on validation", None),
    "export": ("pipeline.stages.export", "write one method's model as an open_clip local-dir folder + model card",
               "method"),
    "search": ("pipeline.stages.search", "search an evaluation set's index with an image file or a text", "method"),
    "snapshot": ("pipeline.stages.snapshot", "check reports/report.html in headless Chromium, save a screenshot",
                 None),
    "configure": ("pipeline.stages.configure", "compose params.yaml from a Hydra preset + overrides", None),
    "dag": ("pipeline.dag", "check (--check) or rewrite (--write) dvc.yaml's code deps: each stage's import closure", None),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, (_, help_text, arg) in STAGES.items():
        p = sub.add_parser(name, help=help_text)
        if name == "configure":
            p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=paper_sop_siglip")
            p.add_argument("--output", default="params.yaml")
            p.add_argument("--reset", action="store_true",
                           help="start from the presets alone, not from the overrides recorded in --output")
            continue
        if name == "dag":
            mode = p.add_mutually_exclusive_group()
            mode.add_argument("--check", action="store_true", help="exit non-zero when dvc.yaml differs")
            mode.add_argument("--write", action="store_true", help="write the closures into dvc.yaml")
            mode.add_argument("--affected", metavar="FILE", help="list the stages whose code deps contain FILE")
            continue
        if arg:
            p.add_argument(arg)
        p.add_argument("--params", default="params.yaml", help="the configuration file (default params.yaml)")
        p.add_argument("--threads", type=int, default=None,
                       help="override runtime.threads (Snakemake passes the cores its job was given)")
        add_tool_arguments(name, p)
    return parser


def param_overrides(args: argparse.Namespace) -> list[str]:
    """`key=value` overrides of params.yaml that come from command-line flags."""
    return [] if args.threads is None else [f"runtime.threads={args.threads}"]


def add_tool_arguments(name: str, p: argparse.ArgumentParser) -> None:
    """The options of the commands people run on a finished pipeline (export, search, snapshot, tune)."""
    if name == "export":
        p.add_argument("--out", help="folder to write (default exports/<method>)")
    elif name == "tune":
        p.add_argument("methods", nargs="*", help="methods to tune (default: every entry of `tuning:`)")
    elif name == "search":
        query = p.add_mutually_exclusive_group(required=True)
        query.add_argument("--image", help="an image file to search with")
        query.add_argument("--text", help="a text to search with (the frozen text tower embeds it)")
        p.add_argument("--set", help="image-image evaluation set to search (default: the first one)")
        p.add_argument("-k", type=int, default=10, help="results to print (default 10)")
    elif name == "snapshot":
        p.add_argument("--page", default="reports/report.html", help="the page to open")
        p.add_argument("--out", default="reports/report.png", help="where to save the screenshot")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if hasattr(args, "params"):  # a stage that reads params.yaml: `load_params(args.params, args.overrides)`
        args.overrides = param_overrides(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    module = importlib.import_module(STAGES[args.stage][0])
    start = time.time()
    from pipeline.config import ConfigError
    try:
        entry = getattr(module, "summary" if args.stage == "summary" else "main")
        entry(args)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error [{args.stage}]: {err}", file=sys.stderr)
        sys.exit(1)
    if args.stage not in ("summary", "configure", "search", "dag"):
        print(f"[{args.stage}] done in {time.time() - start:.1f} s", file=sys.stderr)
