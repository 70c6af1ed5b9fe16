"""Where every artifact lives. dvc.yaml declares the same paths (a test checks they agree)."""
from __future__ import annotations

from pathlib import Path

DATA = Path("data")
REPORTS = Path("reports")


def prepared(dataset: str) -> Path:
    """Manifest (and packed images) of one dataset."""
    return DATA / "prepared" / dataset


def downloads(dataset: str) -> Path:
    """Fetched archives of one dataset and what they extract to (outside DVC's outputs: a rerun of
    `prepare` reuses them instead of downloading again)."""
    return DATA / "downloads" / dataset


def fingerprints() -> Path:
    """Stage `fingerprint`'s output: one file per dataset (DVC runs the stage on every repro)."""
    return DATA / "fingerprints"


def fingerprint(dataset: str) -> Path:
    """What one dataset's files are (names, bytes, content hashes): `prepare` depends on it, so it
    reruns when those files change."""
    return fingerprints() / f"{dataset}.json"


def file_stats(dataset: str) -> Path:
    """Size, mtime, inode and content hash of every file a dataset reads (outside DVC's outputs):
    the next fingerprint re-hashes only the files whose size, mtime or inode moved."""
    return DATA / ".fingerprints" / f"{dataset}.json"


def teacher() -> Path:
    """The pretrained model spec (and, for the embedded default, its open_clip local-dir folder)."""
    return DATA / "teacher"


def features() -> Path:
    """Frozen-teacher features: generic-set distillation targets, caption and prompt embeddings."""
    return DATA / "features"


def run(method: str) -> Path:
    """A fine-tuned vision tower (best checkpoint) and its training record."""
    return DATA / "runs" / method


def checkpoint(method: str) -> Path:
    """The selected vision-tower weights of one fine-tune (what `embed` and `wiseft` load)."""
    return run(method) / "visual.pt"


def train_record(method: str) -> Path:
    """What one fine-tune did: its config, the selected step and criterion, timings."""
    return run(method) / "train.json"


def embeddings(method: str) -> Path:
    """Evaluation-set embeddings of one method's encoder."""
    return DATA / "embeddings" / method


def index(method: str) -> Path:
    """FAISS indices over one method's evaluation-set embeddings."""
    return DATA / "indices" / method


def evaluation(method: str) -> Path:
    """One method's detailed metrics (JSON)."""
    return DATA / "eval" / f"{method}.json"


def neighbours() -> Path:
    """Fixed queries' top neighbours under every method and set, with thumbnails (the report page's grids)."""
    return DATA / "neighbours"


def neighbour_grid() -> Path:
    """The record of those neighbours (JSON) inside `neighbours()`."""
    return neighbours() / "neighbours.json"


def wise_ft_curve() -> Path:
    """WiSE-FT's evaluations at each α (a name no method can take: method names have no '-')."""
    return DATA / "eval" / "wise-ft.json"


def coverage() -> Path:
    """How close each evaluation set is to the replay data, on teacher features (stage `coverage`)."""
    return DATA / "eval" / "coverage.json"


def fewshot() -> Path:
    """The adapter family's K-shot results (stage `fewshot`)."""
    return DATA / "eval" / "fewshot.json"


def tuning() -> Path:
    """Every method's tuning grid results and choice (`python -m pipeline tune`; git-tracked)."""
    return REPORTS / "tuning.json"


def resume(method: str) -> Path:
    """Resumable training state (outside DVC outputs, which DVC clears before a stage runs)."""
    return DATA / ".resume" / method


def train_log(method: str) -> Path:
    """dvclive folder of one fine-tune: curves for `dvc plots`."""
    return REPORTS / "train" / method


def split_file(dataset: str, split: str, kind: str = "images") -> str:
    """File name of a per-(dataset, split) table: images embeddings, captions or prompts."""
    return f"{dataset}__{split}__{kind}.parquet"


# ------------------------------------------------------------------ reports/: small, git-tracked results
def metrics() -> Path:
    """The headline numbers per method: the declared DVC metrics (`dvc metrics diff`)."""
    return REPORTS / "metrics.json"


def details() -> Path:
    """Every other number of the report (per-set metrics, WiSE-FT curve, few-shot cells)."""
    return REPORTS / "details.json"


def report_md() -> Path:
    return REPORTS / "report.md"


def report_html() -> Path:
    """The report as one self-contained page."""
    return REPORTS / "report.html"


def screenshot() -> Path:
    """`python -m pipeline snapshot`'s screenshot of the page."""
    return REPORTS / "report.png"


def deltas_figure() -> Path:
    """Δ vs pretrained per headline (the paper's Fig. 1)."""
    return REPORTS / "fig1_deltas.png"


def retention_figure() -> Path:
    """Retention against adaptation, with the WiSE-FT curve."""
    return REPORTS / "retention.png"


def fewshot_figure() -> Path:
    return REPORTS / "fewshot.png"


def neighbours_figure() -> Path:
    """The compact neighbours grid of report.md."""
    return REPORTS / "neighbours.png"


def teacher_metrics() -> Path:
    """What the teacher stage measured (zero-shot accuracy on val, training time)."""
    return REPORTS / "teacher.json"


def tuning_md() -> Path:
    return REPORTS / "tuning.md"


def seeds_json() -> Path:
    """Headline Δs over fine-tuning seeds (`python -m pipeline seeds`)."""
    return REPORTS / "seeds.json"


def seeds_md() -> Path:
    return REPORTS / "seeds.md"


def export(method: str) -> Path:
    """`python -m pipeline export <method>`'s default folder (an open_clip local-dir model)."""
    return Path("exports") / method
