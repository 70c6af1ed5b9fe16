"""The schema of params.yaml: one typed section per part of the pipeline.

OmegaConf structured configs: an unknown key or a wrong type fails on loading, naming the dotted
key (`pipeline.config.load`); ranges and cross-references are checked by `pipeline.config.validate`.
The fine-tuning and few-shot recipes are library declarations (`pipeline.lib.recipes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from pipeline.lib.recipes import FEWSHOT_METHODS, FewShotSettings, FinetuneCfg  # noqa: F401 - part of the schema


@dataclass
class RuntimeCfg:
    device: str = "auto"          # auto | cpu | cuda
    threads: int = 2              # torch intra-op threads (0 = torch's default)
    precision: str = "fp32"       # fp32 | bf16 (autocast; bf16 is meant for CUDA)
    compile: bool = False         # torch.compile the vision tower (CUDA)
    num_workers: int = 0          # DataLoader workers for file-backed datasets
    processes: int = 1            # data-parallel fine-tuning processes (torchrun; one per GPU)


@dataclass
class DownloadCfg:
    """One file of a dataset's release: fetched with resume and retries, checked, extracted if an archive."""
    url: str = MISSING
    sha256: Optional[str] = None  # checked when given; else the digest of what arrived is recorded and printed
    md5: Optional[str] = None     # checked when given (for publishers that give only an MD5, e.g. iNaturalist)
    size: Optional[int] = None    # bytes, checked when given
    filename: Optional[str] = None  # a bare file name to save as (default: the URL's last part)


def is_bare_name(name: str) -> bool:
    """A file name with no folder in it (a download is saved under it, inside data/downloads/<name>/)."""
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


VERIFY_MODES = ("decode", "open", "exists", "none")  # datasets.<name>.verify_images: how hard `prepare` checks images


@dataclass
class DatasetCfg:
    """One dataset. `source` picks the reader; the other keys are that reader's options."""
    source: str = MISSING         # a key of pipeline.sources.registry.SOURCES
    seed: int = 0                 # split draws (ImageNet: the shuffle seed of the 80/20 split, 42 in the reference)
    # embedded_flags: n_classes flags drawn with `seed`; embedded_glyphs: letters [class_offset,
    # class_offset + n_classes) of the fixed shuffle of all letters; both class-disjoint splits
    n_classes: int = 300
    per_class: int = 16
    class_offset: int = 0
    # embedded_web: subset name → options (pipeline.lib.worlds.embedded.web.WEB_SUBSETS): image counts per
    # split for shapes / patterns, shares of each class's images for animals / symbols
    subsets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # real / user data: a local folder, or files to download (official URLs, or `mirror` + their names)
    root: Optional[str] = None
    downloads: list[DownloadCfg] = field(default_factory=list)
    mirror: Optional[str] = None  # base URL of a copy of the downloads (same file names)
    download_retries: int = 4     # tries after the first, with exponential back-off
    annotations: Optional[str] = None  # csv: the CSV file; flickr30k / coco: the Karpathy split JSON's name
    split_files: Optional[str] = None  # folder of <split>.json lists (the reference's info files) to use as is
    keep_splits: Optional[list[str]] = None  # keep only these splits (e.g. [test] of an image-text set)
    val_class_fraction: float = 0.2   # class-disjoint validation share of the training classes
    test_class_fraction: float = 0.5  # class-disjoint test share, for datasets that come without a split
    verify_images: str = "decode"  # decode (every image, as training will) | open (headers only) | exists | none
    skip_corrupt: bool = False    # count and skip unreadable or oversized images instead of failing


@dataclass
class RolesCfg:
    target: str = "glyphs"        # the fine-grained domain we adapt to (train / val / test splits)
    generic: str = "web"          # the replay domain: distillation (train split), checkpoint selection (val split)
    generic_subsets: Optional[list[str]] = None  # only these subsets of `generic` are replay (None = all)
    generic_val_fraction: float = 1.0  # share of the generic val split used for selection (reference: first 10 %)


@dataclass
class EvalSetCfg:
    dataset: str = MISSING
    split: str = "test"
    subset: Optional[str] = None  # keep only rows of this `subset` (e.g. the animals of the web set)
    index_split: Optional[str] = None  # separate gallery split (InShop style); None = query vs itself
    # near | far for a set of a dataset other than the target and the replay dataset: near when the
    # replay covers its kind of images but not its classes (Cars to ImageNet), far otherwise (default).
    # Sets of the target and replay datasets get their kind from the roles (pipeline.stages.common.set_kind)
    kind: Optional[str] = None


@dataclass
class EvalCfg:
    k: int = 20
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    text_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    in_domain: dict[str, EvalSetCfg] = field(default_factory=dict)
    out_of_domain: dict[str, EvalSetCfg] = field(default_factory=dict)
    image_text: dict[str, EvalSetCfg] = field(default_factory=dict)
    zero_shot: dict[str, EvalSetCfg] = field(default_factory=dict)
    prompt_template: str = "a photo of a {}"
    merged: bool = True           # also evaluate all image-image sets in one merged index


@dataclass
class VisionArchCfg:
    """Vision tower of the embedded teacher (an open_clip VisionTransformer)."""
    image_size: int = 32
    patch_size: int = 4
    width: int = 128
    layers: int = 3
    head_width: int = 32


@dataclass
class TeacherCfg:
    source: str = "embedded"      # embedded: train a small tower against frozen MiniLM | open_clip
    corpus: str = "web"           # embedded: the dataset whose train split (every subset) the teacher pretrains on
    model: str = "ViT-B-16-SigLIP"  # open_clip name, 'hf-hub:org/repo' or 'local-dir:/path' (open_clip)
    pretrained: Optional[str] = None  # open_clip tag ('webli') or a local checkpoint file
    vision: VisionArchCfg = field(default_factory=VisionArchCfg)
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    logit_scale: float = 20.0
    zero_shot_max_images: int = 0  # teacher report: first N val images per zero-shot set (0 = all)


@dataclass
class FeaturesCfg:
    batch_size: int = 256
    chunk_rows: int = 65536       # images embedded (and kept for a resume) at a time; a Parquet row group each
    dtype: str = "float32"        # float32 | float16 (halves the replay targets on disk and in memory)


@dataclass
class KnobCfg:
    """One knob's starting values and the ratio by which an edge extends (docs/protocol.md#tuning)."""
    values: list[float] = field(default_factory=list)
    step: float = 10.0


@dataclass
class TuningCfg:
    """A method's knobs (keys of its fine-tuning recipe: the LR, or a regulariser's λ with 0 in its grid)
    and their grids (`python -m pipeline tune`)."""
    knobs: dict[str, KnobCfg] = field(default_factory=dict)


@dataclass
class WiseFtCfg:
    """WiSE-FT: θ_α = (1−α)θ0 + α·θ_ft of one fine-tuned method, evaluated at each α (no retraining)."""
    base: str = "naive"           # a fine-tuning method of `methods`
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])


@dataclass
class QualitativeCfg:
    """The neighbours grid of the report: fixed queries, their top neighbours under each method."""
    methods: list[str] = field(default_factory=lambda: ["pretrained", "naive", "infuse"])
    queries: int = 3              # per set (the first in-domain and the first out-of-domain set)
    neighbours: int = 5
    seed: int = 0


@dataclass
class FewShotCfg:
    """The adapter family (encoders frozen): K-shot on base classes, tested on base and novel classes."""
    dataset: str = "web"
    subset: Optional[str] = "shapes"
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    repeats: int = 3              # shot draws averaged per K
    base_fraction: float = 0.5    # share of the classes used as base classes (the rest are novel)
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: list(FEWSHOT_METHODS))  # keys of pipeline.lib.recipes.FEWSHOT_METHODS
    settings: dict[str, Any] = field(default_factory=dict)  # FewShotSettings overrides


INDEX_DEVICES = ("cpu", "cuda", "auto")  # index.device: auto follows runtime.device


@dataclass
class CoverageCfg:
    """The coverage figure of each evaluation set (stage `coverage`)."""
    max_images: int = 2000        # test images per set (and per own train split), drawn with `seed`
    seed: int = 0


@dataclass
class IndexCfg:
    """The `index` stage's FAISS indices and how every search of them runs (evaluate, search)."""
    kind: str = "flat"            # flat (exact) | ivf | hnsw
    nlist: int = 64               # IVF lists (fewer on a gallery under 39 vectors per list)
    nprobe: int = 8               # IVF lists visited per query, in every search of the index
    hnsw_m: int = 32              # HNSW links per vector
    ef_search: int = 64           # HNSW candidate list per query, in every search of the index
    recall_queries: int = 10000   # approximate kinds: queries (a seeded draw) of the recall check
    device: str = "cpu"           # cpu (FAISS) | cuda (exact torch top-k on the GPU, flat only) | auto


@dataclass
class StageResources:
    """What one stage's job asks a scheduler for (Snakemake, SLURM). DVC runs stages one at a time and
    ignores it; results do not depend on it (Snakemake passes `threads` as runtime.threads)."""
    threads: int = 2              # CPU cores of the job
    mem_mb: int = 8000            # memory (SLURM --mem)
    runtime_min: int = 60         # wall-clock limit in minutes (SLURM --time)
    gpu: int = 0                  # GPUs (SLURM --gpus): every stage that runs the encoder wants one
    local: bool = False           # run on the submitting host instead of as a cluster job (localrules)


@dataclass
class Params:
    experiment: str = "embedded"
    seed: int = 0
    runtime: RuntimeCfg = field(default_factory=RuntimeCfg)
    datasets: dict[str, DatasetCfg] = field(default_factory=dict)
    roles: RolesCfg = field(default_factory=RolesCfg)
    teacher: TeacherCfg = field(default_factory=TeacherCfg)
    features: FeaturesCfg = field(default_factory=FeaturesCfg)
    finetune: FinetuneCfg = field(default_factory=FinetuneCfg)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning: dict[str, TuningCfg] = field(default_factory=dict)
    wise_ft: WiseFtCfg = field(default_factory=WiseFtCfg)
    qualitative: QualitativeCfg = field(default_factory=QualitativeCfg)
    fewshot: FewShotCfg = field(default_factory=FewShotCfg)
    index: IndexCfg = field(default_factory=IndexCfg)
    coverage: CoverageCfg = field(default_factory=CoverageCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    resources: dict[str, StageResources] = field(default_factory=dict)  # per stage (pipeline.commands.STAGES)
