"""Every command of `python -m pipeline`, declared once: the CLI, the params validation (which stages
a job can ask resources for), the code-dependency closures and the tests all read this table.

Pure data and the standard library only, so anything may import it without paying for torch.
A new command is one entry here (and, for a DVC stage, its entry in dvc.yaml and in
conf/resources/default.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Option:
    """One command-line argument: its flags (or name) and argparse's keyword arguments."""
    flags: tuple[str, ...]
    help: str = ""
    kwargs: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Exclusive:
    """Options of which at most one (exactly one when `required`) may be given."""
    options: tuple[Option, ...]
    required: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    module: str                   # what `python -m pipeline <name>` imports and runs
    help: str
    entry: str = "main"           # the function of `module` it calls with the parsed arguments
    target: str | None = None     # the positional argument naming what it works on (a dataset, a method)
    stage: bool = False           # a DVC stage of dvc.yaml (it gets `resources.<name>` for Snakemake)
    encoder: bool = False         # runs an image or text encoder (a GPU job on a cluster)
    reads_params: bool = True     # takes --params and --threads
    options: tuple[Option | Exclusive, ...] = ()
    reports_time: bool = True     # prints "[<name>] done in N s" when it ends


def _opt(*flags: str, help: str = "", **kwargs: Any) -> Option:
    return Option(flags, help, kwargs)


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("fingerprint", "pipeline.stages.fingerprint",
            "fingerprint every dataset's files (sizes, content hashes): prepare reruns when they change",
            stage=True, reports_time=False),
    Command("prepare", "pipeline.stages.prepare", "prepare one dataset: manifest + class-disjoint splits",
            target="dataset", stage=True),
    Command("teacher", "pipeline.stages.teacher", "build (embedded) or load (open_clip) the pretrained VLM",
            stage=True, encoder=True),
    Command("features", "pipeline.stages.features", "frozen-teacher features: distillation targets, text",
            stage=True, encoder=True),
    Command("finetune", "pipeline.stages.finetune", "fine-tune the vision encoder with one method",
            target="method", stage=True, encoder=True),
    Command("embed", "pipeline.stages.embed", "embed the evaluation sets with one method's encoder",
            target="method", stage=True, encoder=True),
    Command("index", "pipeline.stages.index", "build FAISS indices over one method's embeddings",
            target="method", stage=True),
    Command("evaluate", "pipeline.stages.evaluate", "kNN, image-text and zero-shot metrics of one method",
            target="method", stage=True),
    Command("wiseft", "pipeline.stages.wiseft", "WiSE-FT: evaluate (1-α)θ0 + αθ_ft of wise_ft.base at each α",
            stage=True, encoder=True),
    Command("neighbours", "pipeline.stages.neighbours", "qualitative grid: top neighbours of fixed queries per method",
            stage=True),
    Command("coverage", "pipeline.stages.coverage", "how close each evaluation set is to the replay, teacher features",
            stage=True, encoder=True),
    Command("fewshot", "pipeline.stages.fewshot", "K-shot adapters on frozen encoders (LatHAdapter family)",
            stage=True, encoder=True),
    Command("report", "pipeline.stages.report", "reports/metrics.json, plots and report.md", stage=True),
    Command("summary", "pipeline.stages.report", "print the summary table of reports/metrics.json",
            entry="summary", reports_time=False),
    Command("seeds", "pipeline.stages.seeds", "summary Δs as mean ± std over the seed experiments, suite comparison",
            options=(_opt("--out", help="folder to write (default reports/; a suite's folder also gets details.json)"),)),
    Command("tune", "pipeline.stages.tune", "the `tuning:` grid of each method's main knob, chosen on validation",
            encoder=True,
            options=(_opt("methods", nargs="*", help="methods to tune (default: every entry of `tuning:`)"),)),
    Command("export", "pipeline.stages.export",
            "write one method's model as an open_clip local-dir folder + model card", target="method",
            encoder=True, options=(_opt("--out", help="folder to write (default exports/<method>)"),)),
    Command("search", "pipeline.stages.search", "search an evaluation set's index with an image file or a text",
            target="method", encoder=True, reports_time=False, options=(
                Exclusive((_opt("--image", help="an image file to search with"),
                           _opt("--text", help="a text to search with (the frozen text tower embeds it)")),
                          required=True),
                _opt("--set", help="image-image evaluation set to search (default: the first one)"),
                _opt("-k", type=int, default=10, help="results to print (default 10)"))),
    Command("snapshot", "pipeline.stages.snapshot",
            "check reports/report.html in headless Chromium, save a screenshot", options=(
                _opt("--page", default=None, help="the page to open (default reports/report.html)"),
                _opt("--out", default=None, help="where to save the screenshot (default reports/report.png)"))),
    Command("configure", "pipeline.stages.configure", "compose params.yaml from a Hydra preset + overrides",
            reads_params=False, reports_time=False, options=(
                _opt("overrides", nargs="*", help="Hydra overrides, e.g. experiment=paper_sop_siglip"),
                _opt("--output", default="params.yaml"),
                _opt("--reset", action="store_true",
                     help="start from the presets alone, not from the overrides recorded in --output"))),
    Command("dag", "pipeline.dag",
            "check (--check) or rewrite (--write) dvc.yaml's code deps: each stage's import closure",
            reads_params=False, reports_time=False, options=(
                Exclusive((_opt("--check", action="store_true", help="exit non-zero when dvc.yaml differs"),
                           _opt("--write", action="store_true", help="write the closures into dvc.yaml"),
                           _opt("--affected", metavar="FILE",
                                help="list the stages whose code deps contain FILE"))),)),
)}

STAGES: tuple[str, ...] = tuple(name for name, c in COMMANDS.items() if c.stage)
ENCODER_STAGES: tuple[str, ...] = tuple(name for name in STAGES if COMMANDS[name].encoder)
