"""The one configuration: a typed schema for params.yaml, loading, validation and presets.

params.yaml is the resolved configuration that DVC, Snakemake and every stage read. Hydra presets
under `conf/` compose it (`python -m pipeline configure experiment=...`, or DVC's Hydra mode on
`dvc exp run -S ...`). Loading goes through OmegaConf structured configs, so an unknown key or a
wrong type fails before any work with the dotted key in the message; `validate` then checks ranges.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.lib import retention

PARAMS_FILE = Path("params.yaml")


MIN_VALIDATIONS = 5  # finetune.validations: fewer points make checkpoint selection a coin toss


class ConfigError(ValueError):
    """A params.yaml problem, always naming the offending key."""


# ----------------------------------------------------------------------------------- schema
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
    size: Optional[int] = None    # bytes, checked when given
    filename: Optional[str] = None  # name to save as (default: the URL's last part)


EMBEDDED_SOURCES = ("embedded_flags", "embedded_glyphs", "embedded_web")
VERIFY_MODES = ("open", "exists", "none")  # datasets.<name>.verify_images: how hard `prepare` checks images
REAL_SOURCES = ("sop", "cars196", "inshop", "inat2018", "food2k", "imagenet", "flickr30k", "coco", "folder", "csv")


@dataclass
class DatasetCfg:
    """One dataset. `source` picks the reader; the other keys are that reader's options."""
    source: str = MISSING         # embedded_glyphs | embedded_web | one of REAL_SOURCES
    seed: int = 0                 # split draws (ImageNet: the shuffle seed of the 80/20 split, 42 in the reference)
    # embedded_flags: n_classes flags drawn with `seed`; embedded_glyphs: letters [class_offset,
    # class_offset + n_classes) of the fixed shuffle of all letters; both class-disjoint splits
    n_classes: int = 300
    per_class: int = 16
    class_offset: int = 0
    # embedded_web: subset name → options (pipeline.lib.worlds.embedded.WEB_SUBSETS): image counts per
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
    verify_images: str = "open"   # open (parse every header) | exists | none
    skip_corrupt: bool = False    # count and skip unreadable images instead of failing


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


@dataclass
class FinetuneCfg:
    """Shared fine-tuning recipe; `methods.<name>` overrides any of these keys."""
    kind: str = "finetune"        # finetune | pretrained (no training: the teacher itself)
    seed: int = 0                 # classifier init, batch order, augmentations (teacher keeps `seed`)
    steps: int = 300              # target-domain steps
    batch_size: int = 128
    lr_backbone: float = 1e-4
    lr_head: float = 1e-2
    weight_decay: float = 1e-6
    train_resize: int = 36        # train view: resize to this square, random crop image_size, flip
    hflip: bool = False
    classifier: str = "normface"  # normface | arcface | cosface
    scale: float = 16.0
    margin: float = 0.0
    # retention terms: one λ per entry of pipeline.lib.retention.TERMS (a test keeps the two lists equal)
    lambda_distill: float = 0.0   # λ_d on generic batches: embedding distillation (the paper)
    lambda_weights: float = 0.0   # λ_w on every batch: R_w, uniform pull to θ0 (the paper)
    lambda_lwf: float = 0.0       # target batches: KL of θ0's / θ's zero-shot logits over the generic class prompts (LwF)
    lambda_replay_logits: float = 0.0  # generic batches: the same KL on generic (replayed) images
    lwf_temperature: float = 2.0  # τ of both teacher and student softmax (LwF, replay logits)
    lambda_gram: float = 0.0      # generic batches: batch similarity-structure distillation
    lambda_ewc: float = 0.0       # every batch: Σ F(θ−θ0)², EWC's unnormalised per-sample Fisher from generic data
    fisher_batches: int = 20      # EWC Fisher: over fisher_batches × batch_size generic train images (eval view)
    lambda_gift: float = 0.0      # generic batches: GIFT L_cd + gift_ita_weight·L_ita against the class prompts
    gift_ita_weight: float = 0.25  # GIFT's λ_ita relative to L_cd (GIFT: 0.25)
    gift_temperature: float = 2.0  # GIFT's distillation temperature T (GIFT: 2)
    gift_label_smoothing: float = 0.2  # GIFT's label smoothing of the L_ita targets (GIFT: 0.2)
    lambda_awc: float = 0.0       # every batch: GIFT's AWC Σ F̂(θ−θ0)², F̂ = (∇L_gift)² / per-tensor mean (GIFT: 1)
    # LP-FT: first the head alone on the frozen encoder's features, to convergence, then full fine-tuning
    lp_max_steps: int = 0         # > 0: LP-FT; full-batch probe steps at most
    lp_patience: int = 20         # the probe stops when its loss fell by < lp_tol (relative) over this many steps
    lp_tol: float = 1e-3
    lora_rank: int = 0            # > 0: train LoRA updates of rank r on attention/MLP weights (θ0 frozen)
    lora_alpha: float = 16.0      # LoRA scale α (the update is (α/r)·B·A)
    teacher_targets: str = "precomputed"  # precomputed (eval view, as the reference) | online
    schedule: str = "round_robin"  # round_robin | target_only
    validations: int = 5          # validation points: after target step 1, then spread evenly to the last step
    select_on: str = "all"        # all | in-domain | last
    checkpoint_every: int = 50


@dataclass
class TuningCfg:
    """One method's main knob and the grid it is tuned over (`python -m pipeline tune`)."""
    key: str = MISSING            # a key of the method's fine-tuning recipe, e.g. lr_backbone or lambda_distill
    grid: list[float] = field(default_factory=list)


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


FEWSHOT_METHODS = ("zero_shot", "linear_probe", "clip_adapter", "tip_adapter", "lathadapter")


@dataclass
class FewShotSettings:
    """Hyper-parameters of the few-shot adapters (`fewshot.settings` overrides them; pipeline.lib.fewshot)."""
    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    logit_scale: Optional[float] = None  # None: the model's own (the teacher spec's `logit_scale`)
    tip_search_scale: list[float] = field(default_factory=lambda: [7.0, 3.0])  # Tip-Adapter: β_max, α_max
    tip_search_steps: list[int] = field(default_factory=lambda: [200, 20])    # Tip-Adapter: grid points of β, α
    attributes: int = 8           # LatHAdapter: shared attribute vectors
    curvature: float = 1.0        # LatHAdapter: the ball has curvature −c
    temperature: float = 0.1      # LatHAdapter: τ of −d/τ logits
    hierarchy_weight: float = 0.1  # LatHAdapter: λ of the hierarchy terms
    geometry: str = "hyperbolic"  # LatHAdapter: hyperbolic | cosine
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
    methods: list[str] = field(default_factory=lambda: list(FEWSHOT_METHODS))
    settings: dict[str, Any] = field(default_factory=dict)  # FewShotSettings overrides


@dataclass
class IndexCfg:
    kind: str = "flat"            # flat (exact) | ivf | hnsw
    nlist: int = 64
    nprobe: int = 8


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
    eval: EvalCfg = field(default_factory=EvalCfg)
    resources: dict[str, StageResources] = field(default_factory=dict)  # per stage (cli.STAGES name)


# ----------------------------------------------------------------------------------- loading
def load_params(path: Path | str = PARAMS_FILE, overrides: list[str] | None = None,
                label: str | None = None) -> Params:
    """Read params.yaml (plus optional `key=value` overrides), type-check and validate it. Messages
    name the key, prefixed by `label` (default: the file's path; '' for none)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path} (run from the project root)")
    prefix = f"{path if label is None else label}: " if label != "" else ""
    schema = OmegaConf.structured(Params)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.load(path))
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
        params: Params = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise ConfigError(prefix + describe_error(err)) from None
    validate(params)
    return params


def describe_error(err: OmegaConfBaseException) -> str:
    """One line naming the key: an unknown key with what it could have meant, or the bad value."""
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, (KeyError, AttributeError)):  # ConfigKeyError / ConfigAttributeError: not in the schema
        return unknown_key(key)
    return f"{key}: {err.msg.splitlines()[0]}"


def unknown_key(key: str, tree: dict[str, Any] | None = None) -> str:
    """'finetune.stpes: unknown key, did you mean finetune.steps?': the first part of a dotted key
    that neither the schema nor, below a free-named level (datasets.<name>), `tree` (the composed
    configuration) knows, with its closest sibling."""
    parts = key.split(".")
    for i, name in enumerate(parts):
        parent = ".".join(parts[:i])
        known = known_keys(parent, tree)
        if known is not None and name not in known:
            return f"{parent + '.' if parent else ''}{name}: unknown key" + _suggestion(name, known, parent)
    return f"{key}: unknown key"


def _suggestion(name: str, known: list[str], parent: str) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f", did you mean {parent + '.' if parent else ''}{close[0]}?"
    return f" (valid: {', '.join(sorted(known))})" if known else ""


def _override_table(parts: list[str]) -> type | None:
    """Plain dicts whose keys are another schema's: a method's entries override `finetune`."""
    if len(parts) == 2 and parts[0] == "methods":
        return FinetuneCfg
    return FewShotSettings if parts == ["fewshot", "settings"] else None


def known_keys(dotted: str, tree: dict[str, Any] | None = None) -> list[str] | None:
    """The keys allowed under a dotted path ('' = top level): a dataclass's fields; at a free-named
    level (datasets, methods, eval.in_domain, resources) the names `tree` has there; None when
    unknowable (no tree) or below a leaf."""
    node: Any = Params
    parts = [p for p in dotted.split(".") if p]
    for i, part in enumerate(parts):
        if dataclasses.is_dataclass(node):
            hints = typing.get_type_hints(node)
            if part not in hints:
                return None
            node = _unwrap_optional(hints[part])
        elif typing.get_origin(node) is dict:
            node = _unwrap_optional(typing.get_args(node)[1])
        else:
            return None
        node = _override_table(parts[: i + 1]) or node
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    if typing.get_origin(node) is dict and tree is not None:
        sub: Any = tree
        for part in parts:
            sub = sub.get(part, {}) if isinstance(sub, dict) else {}
        return list(sub) if isinstance(sub, dict) else None
    return None


def _unwrap_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def method_config(params: Params, method: str) -> FinetuneCfg:
    """The fine-tuning recipe of one method: `finetune` with `methods.<method>` applied on top."""
    if method not in params.methods:
        raise ConfigError(f"unknown method '{method}': params.yaml defines {sorted(params.methods)}")
    overrides = params.methods[method] or {}
    known = [f.name for f in dataclasses.fields(FinetuneCfg)]
    for key in overrides:
        if key not in known:
            raise ConfigError(unknown_key(f"methods.{method}.{key}"))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(params.finetune), overrides)
    except OmegaConfBaseException as err:
        raise ConfigError(f"methods.{method}.{err.full_key}: {err.msg.splitlines()[0]}") from None
    cfg: FinetuneCfg = OmegaConf.to_object(merged)  # type: ignore[assignment]
    _validate_finetune(cfg, f"methods.{method}")
    return cfg


def to_dict(params: Params) -> dict[str, Any]:
    """Plain-dict view (for writing params.yaml and provenance metadata)."""
    return OmegaConf.to_container(OmegaConf.structured(params), resolve=True)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------- validation
def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    _require(value in allowed, key, f"'{value}' is not one of {list(allowed)}")


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    _require(value >= 0 if allow_zero else value > 0, key,
             f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _validate_finetune(cfg: FinetuneCfg, prefix: str) -> None:
    _one_of(cfg.kind, ("finetune", "pretrained"), f"{prefix}.kind")
    _positive(cfg.steps, f"{prefix}.steps", allow_zero=True)
    _require(cfg.kind == "pretrained" or cfg.steps >= 1, f"{prefix}.steps",
             "a fine-tuning run needs >= 1 step (its checkpoints are taken after updates, never θ0)")
    _positive(cfg.batch_size, f"{prefix}.batch_size")
    _positive(cfg.lr_backbone, f"{prefix}.lr_backbone", allow_zero=True)
    _positive(cfg.lr_head, f"{prefix}.lr_head", allow_zero=True)
    _positive(cfg.weight_decay, f"{prefix}.weight_decay", allow_zero=True)
    _one_of(cfg.classifier, ("normface", "arcface", "cosface"), f"{prefix}.classifier")
    _positive(cfg.scale, f"{prefix}.scale")
    _require(0 <= cfg.margin < 1.0, f"{prefix}.margin", f"must be in [0, 1), got {cfg.margin}")
    for key, message in retention.problems(cfg):
        raise ConfigError(f"{prefix}.{key}: {message}")
    _positive(cfg.lwf_temperature, f"{prefix}.lwf_temperature")
    _positive(cfg.fisher_batches, f"{prefix}.fisher_batches")
    _positive(cfg.gift_ita_weight, f"{prefix}.gift_ita_weight", allow_zero=True)
    _positive(cfg.gift_temperature, f"{prefix}.gift_temperature")
    _require(0 <= cfg.gift_label_smoothing < 1, f"{prefix}.gift_label_smoothing",
             f"must be in [0, 1), got {cfg.gift_label_smoothing}")
    _positive(cfg.lp_max_steps, f"{prefix}.lp_max_steps", allow_zero=True)
    _positive(cfg.lp_patience, f"{prefix}.lp_patience")
    _positive(cfg.lp_tol, f"{prefix}.lp_tol")
    _positive(cfg.lora_rank, f"{prefix}.lora_rank", allow_zero=True)
    _positive(cfg.lora_alpha, f"{prefix}.lora_alpha")
    _one_of(cfg.teacher_targets, ("precomputed", "online"), f"{prefix}.teacher_targets")
    _one_of(cfg.schedule, ("round_robin", "target_only"), f"{prefix}.schedule")
    _require(cfg.validations >= MIN_VALIDATIONS, f"{prefix}.validations",
             f"must be >= {MIN_VALIDATIONS} (checkpoint selection needs points spread over the run), "
             f"got {cfg.validations}")
    _one_of(cfg.select_on, ("all", "in-domain", "last"), f"{prefix}.select_on")
    _positive(cfg.checkpoint_every, f"{prefix}.checkpoint_every")


def _validate_dataset(name: str, ds: DatasetCfg) -> None:
    key = f"datasets.{name}"
    _require(name.replace("_", "").isalnum(), key, "dataset names are letters, digits and '_' (they name folders)")
    _one_of(ds.source, EMBEDDED_SOURCES + REAL_SOURCES, f"{key}.source")
    _require(0 < ds.val_class_fraction < 1, f"{key}.val_class_fraction", f"must be in (0, 1), got {ds.val_class_fraction}")
    _require(0 < ds.test_class_fraction < 1, f"{key}.test_class_fraction",
             f"must be in (0, 1), got {ds.test_class_fraction}")
    if ds.source in ("embedded_flags", "embedded_glyphs"):
        _require(ds.n_classes >= 3, f"{key}.n_classes", f"must be >= 3, got {ds.n_classes}")
        _require(ds.per_class >= 2, f"{key}.per_class", f"must be >= 2, got {ds.per_class}")
        _positive(ds.class_offset, f"{key}.class_offset", allow_zero=True)
    if ds.source == "embedded_web":
        from pipeline.lib.worlds.embedded import check_web_subset
        _require(bool(ds.subsets), f"{key}.subsets", "the embedded web needs at least one subset")
        for subset, options in ds.subsets.items():
            problem = check_web_subset(subset, dict(options or {}))
            _require(problem is None, f"{key}.subsets.{subset}", str(problem))
    if ds.source in REAL_SOURCES:
        _require(bool(ds.root or ds.downloads), key,
                 f"source '{ds.source}' needs `root` (a local folder) or `downloads` (files to fetch)")
        _require(ds.source != "csv" or ds.annotations is not None, f"{key}.annotations",
                 "the csv source needs the CSV file (path,label[,split,class_name,caption])")
    _one_of(ds.verify_images, VERIFY_MODES, f"{key}.verify_images")
    _positive(ds.download_retries, f"{key}.download_retries", allow_zero=True)
    for i, d in enumerate(ds.downloads):
        _require(d.url.startswith(("http://", "https://", "ftp://", "file://")), f"{key}.downloads.{i}.url",
                 f"must be an http(s), ftp or file URL, got {d.url!r}")
        _require(d.sha256 is None or (len(d.sha256) == 64 and all(c in "0123456789abcdefABCDEF" for c in d.sha256)),
                 f"{key}.downloads.{i}.sha256", "must be 64 hex digits")


def _validate_fewshot(params: Params) -> None:
    fs = params.fewshot
    _require(fs.dataset in params.datasets, "fewshot.dataset", f"'{fs.dataset}' is not a key of datasets")
    _require(bool(fs.shots) and all(k >= 1 for k in fs.shots), "fewshot.shots", f"must be >= 1, got {fs.shots}")
    _positive(fs.repeats, "fewshot.repeats")
    _require(0 < fs.base_fraction <= 1, "fewshot.base_fraction", f"must be in (0, 1], got {fs.base_fraction}")
    for m in fs.methods:
        _one_of(m, FEWSHOT_METHODS, "fewshot.methods")
    known = [f.name for f in dataclasses.fields(FewShotSettings) if f.name != "seed"]
    for key in fs.settings:
        if key not in known:
            raise ConfigError(unknown_key(f"fewshot.settings.{key}"))
    _one_of(fs.settings.get("geometry", "hyperbolic"), ("hyperbolic", "cosine"), "fewshot.settings.geometry")
    scale = fs.settings.get("logit_scale")
    _require(scale is None or scale > 0, "fewshot.settings.logit_scale", f"must be > 0 (or null: the model's), got {scale}")
    for key, low in (("tip_search_scale", 0.1), ("tip_search_steps", 1)):
        value = fs.settings.get(key, [low + 1, low + 1])
        _require(isinstance(value, (list, tuple)) and len(value) == 2 and all(v >= low for v in value)
                 and (key != "tip_search_scale" or all(v > low for v in value)),
                 f"fewshot.settings.{key}", f"must be [β, α], each {'>' if key == 'tip_search_scale' else '>='} {low}, "
                 f"got {value}")


def _validate_tuning(params: Params) -> None:
    """Each grid tunes a numeric key of a known method and holds the value the method is configured with."""
    numeric = {f.name for f in dataclasses.fields(FinetuneCfg) if f.type in ("int", "float", int, float)}
    for method, entry in params.tuning.items():
        key = f"tuning.{method}"
        _require(method in params.methods, key, f"'{method}' is not a key of methods {sorted(params.methods)}")
        _require(entry.key in numeric, f"{key}.key", f"'{entry.key}' is not a numeric fine-tuning key")
        _require(len(entry.grid) >= 2 and len(set(entry.grid)) == len(entry.grid), f"{key}.grid",
                 f"needs at least two distinct values, got {entry.grid}")
        value = getattr(method_config(params, method), entry.key)
        _require(any(abs(value - v) <= 1e-12 * max(1.0, abs(v)) for v in entry.grid), f"{key}.grid",
                 f"the configured methods.{method}.{entry.key} = {value:g} is not one of the grid {entry.grid}")


def _validate_world(params: Params) -> None:
    """The replay subsets are subsets of the replay dataset."""
    generic = params.datasets[params.roles.generic]
    if params.roles.generic_subsets is not None:
        _require(bool(params.roles.generic_subsets), "roles.generic_subsets", "must name at least one subset (or be null)")
        if generic.source == "embedded_web":
            missing = sorted(set(params.roles.generic_subsets) - set(generic.subsets))
            _require(not missing, "roles.generic_subsets", f"{missing} are not subsets of datasets.{params.roles.generic}")


def _validate_resources(params: Params) -> None:
    from pipeline.cli import STAGES  # the stage registry names the stages a job can be asked for

    for stage, res in params.resources.items():
        key = f"resources.{stage}"
        if stage not in STAGES:
            raise ConfigError(f"{key}: not a stage" + _suggestion(stage, list(STAGES), "resources"))
        _positive(res.threads, f"{key}.threads")
        _positive(res.mem_mb, f"{key}.mem_mb")
        _positive(res.runtime_min, f"{key}.runtime_min")
        _positive(res.gpu, f"{key}.gpu", allow_zero=True)


def validate(params: Params) -> None:
    """Range and cross-reference checks; raises ConfigError naming the key."""
    rt = params.runtime
    _one_of(rt.device, ("auto", "cpu", "cuda"), "runtime.device")
    _one_of(rt.precision, ("fp32", "bf16"), "runtime.precision")
    _positive(rt.threads, "runtime.threads", allow_zero=True)
    _positive(rt.num_workers, "runtime.num_workers", allow_zero=True)
    _positive(rt.processes, "runtime.processes")
    _require(bool(params.datasets), "datasets", "at least one dataset is required")
    for name, ds in params.datasets.items():
        _validate_dataset(name, ds)
    for role in ("target", "generic"):
        name = getattr(params.roles, role)
        _require(name in params.datasets, f"roles.{role}", f"'{name}' is not a key of datasets")
    _require(0 < params.roles.generic_val_fraction <= 1, "roles.generic_val_fraction",
             f"must be in (0, 1], got {params.roles.generic_val_fraction}")
    _one_of(params.teacher.source, ("embedded", "open_clip"), "teacher.source")
    _require(params.teacher.corpus in params.datasets, "teacher.corpus",
             f"'{params.teacher.corpus}' is not a key of datasets")
    _validate_world(params)
    for key in ("steps", "batch_size", "lr"):
        _positive(getattr(params.teacher, key), f"teacher.{key}")
    _positive(params.teacher.zero_shot_max_images, "teacher.zero_shot_max_images", allow_zero=True)
    _positive(params.features.batch_size, "features.batch_size")
    _validate_finetune(params.finetune, "finetune")
    _require(bool(params.methods), "methods", "at least one method is required")
    for method in params.methods:
        _require(method.replace("_", "").isalnum(), f"methods.{method}",
                 "method names are letters, digits and '_' (they name stages and folders)")
        method_config(params, method)
    _validate_tuning(params)
    _require(params.wise_ft.base in params.methods, "wise_ft.base",
             f"'{params.wise_ft.base}' is not a key of methods {sorted(params.methods)}")
    _require(method_config(params, params.wise_ft.base).kind != "pretrained", "wise_ft.base",
             "must be a fine-tuned method (interpolating the pretrained model with itself is a no-op)")
    _require(all(0.0 <= a <= 1.0 for a in params.wise_ft.alphas), "wise_ft.alphas",
             f"every α must be in [0, 1], got {params.wise_ft.alphas}")
    for method in params.qualitative.methods:
        _require(method in params.methods, "qualitative.methods", f"'{method}' is not a key of methods")
    _positive(params.qualitative.queries, "qualitative.queries")
    _positive(params.qualitative.neighbours, "qualitative.neighbours")
    _validate_fewshot(params)
    _one_of(params.index.kind, ("flat", "ivf", "hnsw"), "index.kind")
    _positive(params.eval.k, "eval.k")
    _require(all(k > 0 for k in params.eval.ks), "eval.ks", "all entries must be > 0")
    _require(bool(params.eval.in_domain), "eval.in_domain", "at least one in-domain set is required")
    for group in ("in_domain", "out_of_domain", "image_text", "zero_shot"):
        for name, es in getattr(params.eval, group).items():
            _require(es.dataset in params.datasets, f"eval.{group}.{name}.dataset",
                     f"'{es.dataset}' is not a key of datasets")
    _require("{}" in params.eval.prompt_template, "eval.prompt_template", "must contain '{}'")
    _validate_resources(params)
