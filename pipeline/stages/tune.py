"""`python -m pipeline tune [method ...]`: every method's knobs by the one rule, on validation only.

The rule (`pipeline.lib.tuning`, docs/protocol.md#tuning): the whole grid of `tuning.<method>.knobs`
with the first fine-tuning seed; an edge choice extends its knob one step beyond (at most three
rounds); the best two points rerun with seeds 1 and 2, and the best mean criterion is the choice (a
choice on an edge extends too, from the same rounds). A
point is a full fine-tune with the library's loop (`pipeline.lib.training.loop`), in this process, at
`select_on: all` (the mean of target-val and replay-val mAP@k); nothing reads a test split.

Runs are kept by what they were computed from (the recipe, the data, the teacher): a run two methods
share (λ = 0 is naive) is computed once, and a killed tune resumes where it stopped. Writes
reports/tuning.json (every run, each method's final grid, extensions, finalists and choice) and
reports/tuning.md. The choices go into the suite by hand; tests/test_tuning.py checks that the
configured values are the recorded choices.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from typing import Any

from pipeline import io as pio
from pipeline import paths
from pipeline.config import ConfigError, FinetuneCfg, Params, load_params, method_config
from pipeline.lib.tuning import Knob, Outcome, Point, tune

CRITERION = "all"  # every method is compared on the same validation criterion
SEEDS = (0, 1, 2)
LR_FIRST = "naive"  # the regularisers are tuned at naive's tuned learning rate


def knobs(params: Params, method: str) -> list[Knob]:
    return [Knob(key, list(k.values), k.step) for key, k in params.tuning[method].knobs.items()]


def recipe(params: Params, method: str, point: Point, seed: int) -> FinetuneCfg:
    """The method's recipe with its knobs at `point`, the fine-tuning seed and the common criterion."""
    values = {k.key: type(getattr(method_config(params, method), k.key))(v) for k, v in zip(knobs(params, method), point)}
    return dataclasses.replace(method_config(params, method), **values, seed=params.finetune.seed + seed,
                               select_on=CRITERION)


def recipe_digest(params: Params, cfg: FinetuneCfg) -> str:
    """What a recorded run was computed from: the recipe, the data, the teacher (a stale record is rerun)."""
    blob = {"cfg": dataclasses.asdict(cfg), "datasets": {k: dataclasses.asdict(v) for k, v in params.datasets.items()},
            "roles": dataclasses.asdict(params.roles), "teacher": dataclasses.asdict(params.teacher)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fine_tune_once(params: Params, cfg: FinetuneCfg, label: str) -> dict[str, Any]:
    """One fine-tune with the library's loop, in this process: its selected checkpoint's criterion."""
    from pipeline.lib import distributed
    from pipeline.lib.training.loop import fine_tune
    from pipeline.stages.inputs import DiskResume, evaluation, load_inputs, run_key, runtime

    start = time.time()
    ctx = distributed.setup(params.runtime.device)
    resume = DiskResume(f"tune/{label}", run_key(params, label, cfg))
    try:
        best = fine_tune(load_inputs(params, cfg, ctx), cfg, runtime(params, ctx), evaluation(params),
                         resume, label=f"tune {label}")["best"]
    finally:
        distributed.teardown(ctx)
    resume.clear()  # finished: nothing left to resume
    return {"criterion": round(best["criterion"], 6), "val_target": round(best["target"], 6),
            "val_replay": round(best["generic"], 6), "step": best["step"], "seconds": round(time.time() - start, 1)}


def tune_method(params: Params, method: str, state: dict[str, Any]) -> Outcome:
    """The rule over one method's knobs; every run recorded in `state['runs']` (and on disk) when known."""
    runs = state.setdefault("runs", {})

    def run(point: Point, seed: int) -> float:
        cfg = recipe(params, method, point, seed)
        digest = recipe_digest(params, cfg)
        if digest not in runs:
            tag = ",".join(f"{k.key}={v:g}" for k, v in zip(knobs(params, method), point))
            runs[digest] = {"method": method, "point": tag, "seed": cfg.seed,
                            **fine_tune_once(params, cfg, f"{method}/{tag}/seed{cfg.seed}")}
            write(params, state)  # after every run: a killed tune keeps what it finished
        r = runs[digest]
        print(f"[tune {method}] {r['point']} seed {r['seed']}: criterion {r['criterion']:.4f} "
              f"(val target {r['val_target']:.4f}, replay {r['val_replay']:.4f}, step {r['step']})")
        return r["criterion"]

    return tune(knobs(params, method), run, SEEDS)


def method_record(outcome: Outcome) -> dict[str, Any]:
    keys = [k.key for k in outcome.knobs]
    scores = [{"point": dict(zip(keys, p)), "seed": s, "criterion": c} for (p, s), c in outcome.scores.items()]
    return {"key": keys, "grid": {k.key: k.values for k in outcome.knobs},
            "chosen": dict(zip(keys, outcome.chosen)), "extensions": outcome.extensions,
            "stopped": outcome.stopped, "runs": outcome.runs, "scores": scores, "criterion": CRITERION,
            "finalists": [{"point": dict(zip(keys, p)), "mean_criterion": round(m, 6), "seeds": list(SEEDS)}
                          for p, m in outcome.finalists.items()]}


def write(params: Params, state: dict[str, Any]) -> None:
    from pipeline.stages.tune_report import markdown

    pio.write_json({"experiment": params.experiment, **state}, paths.tuning())
    with pio.atomic_path(paths.tuning_md()) as tmp:
        methods = state.get("methods", {})
        tmp.write_text(markdown(methods, [m for m in params.tuning if m not in methods]))


def check_learning_rate(params: Params, state: dict[str, Any], wanted: list[str]) -> None:
    """The regularisers are tuned at naive's tuned LR: refuse to tune them at another one."""
    chosen = state.get("methods", {}).get(LR_FIRST, {}).get("chosen", {}).get("lr_backbone")
    others = [m for m in wanted if m != LR_FIRST and "lr_backbone" not in params.tuning[m].knobs]
    if others and chosen is not None and abs(chosen - params.finetune.lr_backbone) > 1e-12:
        raise ConfigError(f"finetune.lr_backbone: {params.finetune.lr_backbone:g}, but tuning chose {chosen:g} for "
                          f"{LR_FIRST}: set finetune.lr_backbone to {chosen:g} before tuning {', '.join(others)}")


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    from pipeline.lib.models import set_threads

    set_threads(params.runtime.threads)   # --threads N: two tuning processes share the cores
    wanted = args.methods or list(params.tuning)
    unknown = [m for m in wanted if m not in params.tuning]
    if unknown:
        raise ConfigError(f"no tuning grid for {unknown}: `tuning:` defines {sorted(params.tuning)}")
    previous = pio.read_json(paths.tuning()) if paths.tuning().is_file() else {}
    state = {k: v for k, v in previous.items() if k != "experiment"} if previous.get("experiment") == params.experiment else {}
    check_learning_rate(params, state, wanted)
    for method in wanted:
        record = method_record(tune_method(params, method, state))
        state.setdefault("methods", {})[method] = record
        write(params, state)
        configured = {k: getattr(method_config(params, method), k) for k in record["key"]}
        hint = "" if configured == record["chosen"] else f"  <- params has {configured}: set methods.{method} to it"
        print(f"[tune {method}] choice {record['chosen']} after {record['runs']} runs ({record['stopped']}){hint}")
