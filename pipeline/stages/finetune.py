"""Stage `finetune <method>`: adapt the vision tower to the target domain with one retention method.

Reads the prepared target/generic splits, the teacher and its precomputed features
(`pipeline.stages.inputs`); runs the library's loop (`pipeline.lib.training.loop`); writes
`data/runs/<method>/` (the selected vision-tower weights + `train.json`) and the training curves in
`reports/train/<method>/` (dvclive). Every `checkpoint_every` target steps the full state (weights,
optimizer, step, best-so-far, history) goes to `data/.resume/<method>/`; a killed run started
again with the same configuration resumes there and ends with the same weights as an
uninterrupted one (the sampler and the augmentations are pure functions of (seed, step)).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

import torch

from pipeline import io as pio
from pipeline import paths
from pipeline.config import FinetuneCfg, Params, load_params, method_config
from pipeline.lib import distributed, retention
from pipeline.lib.models import set_threads
from pipeline.lib.training.loop import fine_tune
from pipeline.stages.inputs import DiskResume, evaluation, load_inputs, run_key, runtime

FISHER = "fisher.pt"


def train(params: Params, method: str, cfg: FinetuneCfg, ctx: distributed.Context) -> dict[str, Any]:
    """One method's run: its inputs, the loop, and (on the main process) the result with its Fisher."""
    data = load_inputs(params, cfg, ctx)
    resume = DiskResume(method, run_key(params, method, cfg))
    result = fine_tune(data, cfg, runtime(params, ctx), evaluation(params), resume, label=f"finetune {method}")
    if ctx.is_main:
        result.update(resume_state=str(resume.path), fisher=data.aids.fisher)
    return result


def write_curves(method: str, history: list[dict[str, float]]) -> None:
    """Training curves in dvclive's layout (`plots/metrics/<name>.tsv` + `metrics.json`), atomically.

    dvclive's `Live` is not used: it inspects (and may `dvc init`) the surrounding repo and fails
    in a git repo without commits; its `Metric` writer needs none of that.
    """
    from dvclive.plots import Metric

    with pio.atomic_path(paths.train_log(method), directory=True) as tmp:
        for row in history:
            for name, value in row.items():
                if name in ("step", "target_steps"):
                    continue
                metric = Metric(name, str(tmp / "plots"))
                metric.step = int(row["target_steps"])
                metric.dump(float(value))
        last = {k: float(v) for k, v in history[-1].items() if k not in ("step", "target_steps")} if history else {}
        if history:
            last["step"] = int(history[-1]["target_steps"])
        (tmp / "metrics.json").write_text(json.dumps(last, indent=4) + "\n")


def write_outputs(params: Params, method: str, cfg: FinetuneCfg, result: dict[str, Any]) -> None:
    """The selected weights + training record (atomically), curves, and no resume state left."""
    best = result.pop("best")
    weights = best.pop("weights")
    fisher = result.pop("fisher")
    record = {"method": method, "config": asdict(cfg), "selected": best,
              "uses_generic_labels_or_prompts": retention.uses_generic_labels_or_prompts(cfg), **result}
    with pio.atomic_path(paths.run(method), directory=True) as tmp:
        torch.save(weights, tmp / paths.checkpoint(method).name)
        if fisher is not None:  # EWC's Fisher: kept with the run it weighted
            torch.save([f.cpu() for f in fisher], tmp / FISHER)
        (tmp / paths.train_record(method).name).write_text(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
    write_curves(method, result["history"])
    DiskResume(method, "").clear()
    print(f"[finetune {method}] selected step {best['step']} ({cfg.select_on}): val target mAP@{params.eval.k} "
          f"{best['target']:.3f}, val generic {best['generic']:.3f}; {result['seconds']} s")


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params, args.overrides)
    cfg = method_config(params, args.method)
    if params.runtime.processes > 1 and not distributed.launched_by_torchrun() and cfg.kind != "pretrained":
        threads = [] if args.threads is None else ["--threads", str(args.threads)]
        distributed.relaunch_with_torchrun(params.runtime.processes, ["finetune", args.method, "--params", args.params,
                                                                     *threads])
        return
    # runtime.threads are the job's: under torchrun each of the runtime.processes ranks takes its share
    set_threads(max(1, params.runtime.threads // params.runtime.processes) if params.runtime.threads else 0)
    ctx = distributed.setup(params.runtime.device)
    try:
        result = train(params, args.method, cfg, ctx)
        if ctx.is_main:
            write_outputs(params, args.method, cfg, result)
    finally:
        distributed.teardown(ctx)
