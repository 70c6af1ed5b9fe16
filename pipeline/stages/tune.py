"""`python -m pipeline tune [method ...]`: the same small grid for every method, chosen on validation.

Each entry of `tuning:` in params.yaml (the suites under conf/suite/) names one method, its one main
knob (a key of its fine-tuning recipe: the LR for naive / LP-FT / LoRA, the λ of a regulariser) and a
grid of values. For every value the method is fine-tuned with the `finetune` stage's own loop, in this
process, and the validation criterion of its selected checkpoint is recorded (`select_on: all`, the
mean of target-val and replay-val mAP@k, whatever the method's own selection rule). The value with
the highest criterion is the choice. Nothing here reads a test split.

Writes reports/tuning.json (every value's criterion, the choice) and reports/tuning.md. Results are
saved after each run, so a killed tune resumes where it stopped. The chosen values go into the
suite file by hand; tests/test_tuning.py checks that the configured values are the recorded choices.
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
from pipeline.config import ConfigError, Params, load_params, method_config

CRITERION = "all"  # every method is compared on the same validation criterion


def grid_configs(params: Params, method: str) -> list[tuple[float, Any]]:
    """(value, recipe) for each grid value of one method: its recipe with the knob set to the value."""
    entry = params.tuning[method]
    base = method_config(params, method)
    return [(value, dataclasses.replace(base, **{entry.key: type(getattr(base, entry.key))(value),
                                                 "select_on": CRITERION}))
            for value in entry.grid]


def recipe_digest(params: Params, cfg: Any) -> str:
    """What a recorded result was computed from: the recipe, the data, the teacher (a stale record is rerun)."""
    blob = {"cfg": dataclasses.asdict(cfg), "datasets": {k: dataclasses.asdict(v) for k, v in params.datasets.items()},
            "roles": dataclasses.asdict(params.roles), "teacher": dataclasses.asdict(params.teacher)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def choose(results: dict[str, dict[str, float]]) -> str:
    """The grid value (as recorded, a string) with the highest criterion; ties go to the first listed."""
    return max(results, key=lambda v: (results[v]["criterion"], -list(results).index(v)))


def tune_method(params: Params, method: str, state: dict[str, dict]) -> None:
    """Fine-tune one method at every grid value not yet recorded for the same recipe, recording each
    result in `state[method]` (and on disk) as soon as it is known."""
    from pipeline.lib import distributed
    from pipeline.lib.training.loop import fine_tune
    from pipeline.stages.inputs import DiskResume, evaluation, load_inputs, run_key, runtime

    entry = params.tuning[method]
    old = state.get(method, {})
    results = dict(old.get("results", {})) if old.get("key") == entry.key else {}
    state[method] = record = {"key": entry.key, "grid": [f"{v:g}" for v in entry.grid], "results": results,
                              "criterion": CRITERION}
    for value, cfg in grid_configs(params, method):
        tag, digest = f"{value:g}", recipe_digest(params, cfg)
        if results.get(tag, {}).get("digest") == digest:
            print(f"[tune {method}] {entry.key}={tag}: recorded, criterion {results[tag]['criterion']:.4f}")
            continue
        start = time.time()
        ctx = distributed.setup(params.runtime.device)
        run_name = f"tune/{method}/{entry.key}={tag}"
        resume = DiskResume(run_name, run_key(params, run_name, cfg))
        try:
            best = fine_tune(load_inputs(params, cfg, ctx.device), cfg, runtime(params, ctx), evaluation(params),
                             resume, label=f"tune {method}")["best"]
        finally:
            distributed.teardown(ctx)
        resume.clear()  # finished: nothing left to resume
        results[tag] = {"criterion": round(best["criterion"], 6), "val_target": round(best["target"], 6),
                        "val_replay": round(best["generic"], 6), "step": best["step"],
                        "seconds": round(time.time() - start, 1), "digest": digest}
        print(f"[tune {method}] {entry.key}={tag}: criterion {best['criterion']:.4f} "
              f"(val target {best['target']:.4f}, replay {best['generic']:.4f}, step {best['step']})")
        write(params, state)  # after every run: a killed tune keeps what it finished
    record["choice"] = choose({tag: results[tag] for tag in record["grid"]})


def write(params: Params, state: dict[str, dict]) -> None:
    pio.write_json({"experiment": params.experiment, "methods": state}, paths.tuning())
    with pio.atomic_path(paths.tuning_md()) as tmp:
        tmp.write_text(markdown(state))


def markdown(methods: dict[str, dict]) -> str:
    lines = ["# Tuning: one knob per method, the same grid size, chosen on validation", "",
             f"Criterion: the selected checkpoint's mean of target-val and replay-val mAP@k (`select_on: {CRITERION}`).",
             "", "| method | knob | grid: criterion ×100 | choice |", "|---|---|---|---|"]
    for method, rec in methods.items():
        cells = ", ".join(f"{v}: {100 * rec['results'][v]['criterion']:.2f}" if v in rec.get("results", {})
                          else f"{v}: –" for v in rec.get("grid", []))
        lines.append(f"| {method} | `{rec.get('key')}` | {cells} | {rec.get('choice', '–')} |")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    wanted = args.methods or list(params.tuning)
    unknown = [m for m in wanted if m not in params.tuning]
    if unknown:
        raise ConfigError(f"no tuning grid for {unknown}: `tuning:` defines {sorted(params.tuning)}")
    previous = pio.read_json(paths.tuning()) if paths.tuning().is_file() else {}
    state = dict(previous.get("methods", {})) if previous.get("experiment") == params.experiment else {}
    for method in wanted:
        tune_method(params, method, state)
        write(params, state)
        entry = params.tuning[method]
        configured, choice = f"{getattr(method_config(params, method), entry.key):g}", state[method]["choice"]
        hint = "" if configured == choice else f"  <- params has {configured}: set methods.{method}.{entry.key} to {choice}"
        print(f"[tune {method}] choice {entry.key}={choice}{hint}")
