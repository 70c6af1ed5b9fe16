"""Range and cross-reference checks of a loaded params.yaml; every error names its key."""
from __future__ import annotations

import dataclasses

from pipeline.config.keys import ConfigError, suggestion, unknown_key
from pipeline.config.methods import recipes
from pipeline.config.schema import DatasetCfg, FewShotSettings, FinetuneCfg, INDEX_DEVICES, Params, VERIFY_MODES, is_bare_name
from pipeline.lib import retention
from pipeline.lib.recipes import FEWSHOT_METHODS, SUITE_WIDE
from pipeline.sources.registry import SOURCES

MIN_VALIDATIONS = 20  # finetune.validations: with fewer, selection is nearly always the last point


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    _require(value in allowed, key, f"'{value}' is not one of {list(allowed)}")


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    _require(value >= 0 if allow_zero else value > 0, key,
             f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate_recipe(cfg: FinetuneCfg, prefix: str) -> None:
    """One fine-tuning recipe's ranges and retention terms; errors name `<prefix>.<key>`."""
    _one_of(cfg.kind, ("finetune", "pretrained"), f"{prefix}.kind")
    _positive(cfg.steps, f"{prefix}.steps", allow_zero=True)
    _require(cfg.kind == "pretrained" or cfg.steps >= 1, f"{prefix}.steps",
             "a fine-tuning run needs >= 1 step (its checkpoints are taken after updates, never θ0)")
    _positive(cfg.batch_size, f"{prefix}.batch_size")
    _positive(cfg.lr_backbone, f"{prefix}.lr_backbone", allow_zero=True)
    _positive(cfg.head_lr_ratio, f"{prefix}.head_lr_ratio")
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
    _positive(cfg.lp_lr, f"{prefix}.lp_lr")
    _positive(cfg.lora_rank, f"{prefix}.lora_rank", allow_zero=True)
    _positive(cfg.lora_alpha, f"{prefix}.lora_alpha")
    _one_of(cfg.teacher_targets, ("precomputed", "online"), f"{prefix}.teacher_targets")
    _one_of(cfg.schedule, ("joint", "round_robin"), f"{prefix}.schedule")
    _require(cfg.validations >= MIN_VALIDATIONS, f"{prefix}.validations",
             f"must be >= {MIN_VALIDATIONS} (checkpoint selection needs points spread over the run), "
             f"got {cfg.validations}")
    _one_of(cfg.select_on, ("all", "in-domain", "last"), f"{prefix}.select_on")
    _positive(cfg.checkpoint_every, f"{prefix}.checkpoint_every")


def _validate_dataset(name: str, ds: DatasetCfg) -> None:
    key = f"datasets.{name}"
    _require(name.replace("_", "").isalnum(), key, "dataset names are letters, digits and '_' (they name folders)")
    _one_of(ds.source, tuple(SOURCES), f"{key}.source")
    _require(0 < ds.val_class_fraction < 1, f"{key}.val_class_fraction", f"must be in (0, 1), got {ds.val_class_fraction}")
    _require(0 < ds.test_class_fraction < 1, f"{key}.test_class_fraction",
             f"must be in (0, 1), got {ds.test_class_fraction}")
    source = SOURCES[ds.source]
    for option, problem in (source.check(ds) if source.check else []):
        raise ConfigError(f"{key}.{option}: {problem}")
    if not source.embedded:
        _require(bool(ds.root or ds.downloads), key,
                 f"source '{ds.source}' needs `root` (a local folder) or `downloads` (files to fetch)")
        _require(not source.needs_annotations or ds.annotations is not None, f"{key}.annotations",
                 f"the {ds.source} source needs its annotation file (datasets.{name}.annotations)")
    _one_of(ds.verify_images, VERIFY_MODES, f"{key}.verify_images")
    _positive(ds.download_retries, f"{key}.download_retries", allow_zero=True)
    for i, d in enumerate(ds.downloads):
        _require(d.url.startswith(("http://", "https://", "ftp://", "file://")), f"{key}.downloads.{i}.url",
                 f"must be an http(s), ftp or file URL, got {d.url!r}")
        for field, digits in (("sha256", 64), ("md5", 32)):
            value = getattr(d, field)
            _require(value is None or (len(value) == digits and all(c in "0123456789abcdefABCDEF" for c in value)),
                     f"{key}.downloads.{i}.{field}", f"must be {digits} hex digits")
        _require(d.filename is None or is_bare_name(d.filename), f"{key}.downloads.{i}.filename",
                 f"must be a bare file name (no folder, not '.' or '..'), got {d.filename!r}")


def _validate_fewshot(params: Params) -> None:
    fs = params.fewshot
    _require(fs.dataset in params.datasets, "fewshot.dataset", f"'{fs.dataset}' is not a key of datasets")
    _require(bool(fs.shots) and all(k >= 1 for k in fs.shots), "fewshot.shots", f"must be >= 1, got {fs.shots}")
    _positive(fs.repeats, "fewshot.repeats")
    _require(0 < fs.base_fraction <= 1, "fewshot.base_fraction", f"must be in (0, 1], got {fs.base_fraction}")
    for m in fs.methods:
        _one_of(m, tuple(FEWSHOT_METHODS), "fewshot.methods")
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
    """Each grid tunes numeric keys of a known method, over at least two distinct values each; a
    regulariser's grid (a λ key) holds 0, so 'no regularisation' competes on the same terms."""
    numeric = {f.name for f in dataclasses.fields(FinetuneCfg) if f.type in ("int", "float", int, float)}
    suite_wide = set(SUITE_WIDE)
    for method, entry in params.tuning.items():
        key = f"tuning.{method}"
        _require(method in params.methods, key, f"'{method}' is not a key of methods {sorted(params.methods)}")
        _require(bool(entry.knobs), f"{key}.knobs", "at least one knob")
        for name, knob in entry.knobs.items():
            where = f"{key}.knobs.{name}"
            _require(name in numeric and name not in suite_wide, where,
                     f"'{name}' is not a numeric fine-tuning key a method may set")
            _require(len(knob.values) >= 2 and len(set(knob.values)) == len(knob.values), f"{where}.values",
                     f"needs at least two distinct values, got {knob.values}")
            _require(all(v >= 0 for v in knob.values), f"{where}.values", "values must be >= 0")
            _require(not name.startswith("lambda_") or 0 in knob.values, f"{where}.values",
                     "a regulariser's grid holds λ = 0 (no regularisation competes on the same terms)")
            _require(knob.step > 1, f"{where}.step", f"must be > 1, got {knob.step}")


def _validate_world(params: Params) -> None:
    """The replay subsets are subsets of the replay dataset; a declared set kind is near or far, and only
    on a dataset that is neither the target nor the replay dataset (their sets' kinds follow the roles)."""
    generic = params.datasets[params.roles.generic]
    if params.roles.generic_subsets is not None:
        _require(bool(params.roles.generic_subsets), "roles.generic_subsets", "must name at least one subset (or be null)")
        if generic.source == "embedded_web":
            missing = sorted(set(params.roles.generic_subsets) - set(generic.subsets))
            _require(not missing, "roles.generic_subsets", f"{missing} are not subsets of datasets.{params.roles.generic}")
    for group in ("in_domain", "out_of_domain", "image_text", "zero_shot"):
        for name, es in getattr(params.eval, group).items():
            key = f"eval.{group}.{name}.kind"
            if es.kind is not None:
                _one_of(es.kind, ("near", "far"), key)
                _require(es.dataset not in (params.roles.target, params.roles.generic), key,
                         "the kind of a set of the target or replay dataset follows the roles: remove it")


def _validate_resources(params: Params) -> None:
    from pipeline.commands import STAGES  # the stages a job can be asked for

    for stage, res in params.resources.items():
        key = f"resources.{stage}"
        if stage not in STAGES:
            raise ConfigError(f"{key}: not a stage" + suggestion(stage, list(STAGES), "resources"))
        _positive(res.threads, f"{key}.threads")
        _positive(res.mem_mb, f"{key}.mem_mb")
        _positive(res.runtime_min, f"{key}.runtime_min")
        _positive(res.gpu, f"{key}.gpu", allow_zero=True)


def _validate_runtime(params: Params) -> None:
    rt = params.runtime
    _one_of(rt.device, ("auto", "cpu", "cuda"), "runtime.device")
    _one_of(rt.precision, ("fp32", "bf16"), "runtime.precision")
    _positive(rt.threads, "runtime.threads", allow_zero=True)
    _positive(rt.num_workers, "runtime.num_workers", allow_zero=True)
    _positive(rt.processes, "runtime.processes")
    shards = [(f"finetune.batch_size", params.finetune.batch_size)] + [
        (f"methods.{m}.batch_size", (o or {}).get("batch_size")) for m, o in params.methods.items()]
    for key, size in shards:
        _require(size is None or size % rt.processes == 0, key,
                 f"{size} does not divide into runtime.processes = {rt.processes} equal shards (every rank "
                 "must hold the same number of images of each global batch)")


def _validate_data(params: Params) -> None:
    _require(bool(params.datasets), "datasets", "at least one dataset is required")
    for name, ds in params.datasets.items():
        _validate_dataset(name, ds)
    for role in ("target", "generic"):
        name = getattr(params.roles, role)
        _require(name in params.datasets, f"roles.{role}", f"'{name}' is not a key of datasets")
    _require(0 < params.roles.generic_val_fraction <= 1, "roles.generic_val_fraction",
             f"must be in (0, 1], got {params.roles.generic_val_fraction}")
    _validate_world(params)


def _validate_teacher(params: Params) -> None:
    _one_of(params.teacher.source, ("embedded", "open_clip"), "teacher.source")
    _require(params.teacher.corpus in params.datasets, "teacher.corpus",
             f"'{params.teacher.corpus}' is not a key of datasets")
    for key in ("steps", "batch_size", "lr"):
        _positive(getattr(params.teacher, key), f"teacher.{key}")
    _positive(params.teacher.zero_shot_max_images, "teacher.zero_shot_max_images", allow_zero=True)
    _positive(params.features.batch_size, "features.batch_size")
    _positive(params.features.chunk_rows, "features.chunk_rows")
    _one_of(params.features.dtype, ("float32", "float16"), "features.dtype")


def _validate_methods(params: Params) -> None:
    validate_recipe(params.finetune, "finetune")
    _require(bool(params.methods), "methods", "at least one method is required")
    for method in params.methods:
        _require(method.replace("_", "").isalnum(), f"methods.{method}",
                 "method names are letters, digits and '_' (they name stages and folders)")
    for method, cfg in recipes(params).items():
        validate_recipe(cfg, f"methods.{method}")
        for key in SUITE_WIDE:
            _require(key not in (params.methods[method] or {}), f"methods.{method}.{key}",
                     f"every method of a suite shares finetune.{key} (the same target batches and optimizer "
                     f"steps for all): set it under finetune, not per method")
    _validate_tuning(params)
    _require(params.wise_ft.base in params.methods, "wise_ft.base",
             f"'{params.wise_ft.base}' is not a key of methods {sorted(params.methods)}")
    _require(recipes(params)[params.wise_ft.base].kind != "pretrained", "wise_ft.base",
             "must be a fine-tuned method (interpolating the pretrained model with itself is a no-op)")
    _require(all(0.0 <= a <= 1.0 for a in params.wise_ft.alphas), "wise_ft.alphas",
             f"every α must be in [0, 1], got {params.wise_ft.alphas}")
    for method in params.qualitative.methods:
        _require(method in params.methods, "qualitative.methods", f"'{method}' is not a key of methods")
    _positive(params.qualitative.queries, "qualitative.queries")
    _positive(params.qualitative.neighbours, "qualitative.neighbours")


def _validate_index(params: Params) -> None:
    ix = params.index
    _one_of(ix.kind, ("flat", "ivf", "hnsw"), "index.kind")
    for key in ("nlist", "nprobe", "ef_search", "recall_queries"):
        _positive(getattr(ix, key), f"index.{key}")
    _require(ix.nprobe <= ix.nlist, "index.nprobe", f"{ix.nprobe} probes more lists than index.nlist = {ix.nlist}")
    _require(ix.hnsw_m >= 2, "index.hnsw_m", f"must be >= 2 (links per vector), got {ix.hnsw_m}")
    _one_of(ix.device, INDEX_DEVICES, "index.device")
    _require(ix.device != "cuda" or ix.kind == "flat", "index.device",
             f"cuda searches exactly (torch) and needs index.kind=flat, not {ix.kind}: "
             "FAISS searches an approximate index on the CPU")


def _validate_eval(params: Params) -> None:
    _positive(params.coverage.max_images, "coverage.max_images")
    _positive(params.eval.k, "eval.k")
    _require(all(k > 0 for k in params.eval.ks), "eval.ks", "all entries must be > 0")
    _require(params.eval.k in params.eval.ks, "eval.k",
             f"{params.eval.k} must be one of eval.ks {params.eval.ks} (the headline metric is mAP@k)")
    _require(bool(params.eval.in_domain), "eval.in_domain", "at least one in-domain set is required")
    for group in ("in_domain", "out_of_domain", "image_text", "zero_shot"):
        for name, es in getattr(params.eval, group).items():
            _require(es.dataset in params.datasets, f"eval.{group}.{name}.dataset",
                     f"'{es.dataset}' is not a key of datasets")
    _require("{}" in params.eval.prompt_template, "eval.prompt_template", "must contain '{}'")


def validate(params: Params) -> None:
    """Range and cross-reference checks; raises ConfigError naming the key."""
    _validate_runtime(params)
    _validate_data(params)
    _validate_teacher(params)
    _validate_methods(params)
    _validate_fewshot(params)
    _validate_index(params)
    _validate_eval(params)
    _validate_resources(params)
