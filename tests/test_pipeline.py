"""The real pipeline on the tiny preset: DVC twice (no-op), a param change reruns only dependents,
`dvc metrics diff`, Snakemake from the same definition (then DVC knows its results), and a killed
fine-tune that resumes."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import torch

from tests.conftest import FINGERPRINT, OFFLINE, clone, copy_project, outdated_stages, run

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def ran_stages(output: str) -> set[str]:
    """The stages a repro ran, less the fingerprint stage (DVC runs it every time)."""
    return set(re.findall(r"Running stage '([^']+)'", output)) - {FINGERPRINT}


def summary(project: Path) -> dict:
    return json.loads((project / "reports" / "metrics.json").read_text())["summary"]


@pytest.fixture(scope="module")
def reproduced(reproduced_tiny: Path) -> Path:
    """The tiny project after one full `dvc repro`, committed with its dvc.lock (conftest)."""
    return reproduced_tiny


def test_repro_writes_the_report_with_fig1_deltas(reproduced: Path) -> None:
    s = summary(reproduced)
    for method in ("naive", "infuse"):
        for key in ("delta_in_domain", "delta_ood_image_image", "delta_ood_image_text"):
            assert isinstance(s[method][key], float)
    assert "delta_in_domain" not in s["pretrained"]
    assert (reproduced / "reports" / "fig1_deltas.png").stat().st_size > 10_000
    assert (reproduced / "reports" / "neighbours.png").stat().st_size > 10_000
    assert (reproduced / "reports" / "fewshot.png").stat().st_size > 10_000
    details = json.loads((reproduced / "reports" / "details.json").read_text())
    assert set(json.loads((reproduced / "reports" / "metrics.json").read_text())) == {"summary"}  # headline only
    assert {"wise_ft", "fewshot", "methods", "teacher"} <= set(details)
    fewshot = details["fewshot"]
    assert set(fewshot) == {"zero_shot", "linear_probe", "clip_adapter", "tip_adapter", "lathadapter"}
    assert fewshot["linear_probe"]["1"]["novel"] is None and fewshot["lathadapter"]["1"]["novel"] is not None
    report = (reproduced / "reports" / "report.md").read_text()
    assert "| naive |" in report and "| infuse |" in report
    page = (reproduced / "reports" / "report.html").read_text()
    assert "<td>naive</td>" in page and page.count("data:image/png;base64,") >= 4
    teacher = json.loads((reproduced / "reports" / "teacher.json").read_text())
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    assert set(teacher["zero_shot"]) == set(params["eval"]["zero_shot"])
    assert {"animals", "shapes_novel"} <= set(params["eval"]["zero_shot"])  # a far and a near set
    assert {"delta_ood_replay", "delta_ood_near", "delta_ood_far"} <= set(s["infuse"])
    for name, kind in (("shapes", "replay"), ("shapes_novel", "near"), ("animals", "far")):
        assert f"| {name} | {kind} | " in report, name


def test_fewshot_reads_the_teachers_features_and_uses_its_logit_scale(reproduced: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import io as pio
    from pipeline.config import load_params
    from pipeline.stages.fewshot import frozen_features

    monkeypatch.chdir(reproduced)  # data/ is relative to the project root
    params = load_params("params.yaml")
    assert params.fewshot.dataset == params.roles.generic
    # no model: embedding anything would fail, so the train features come from the `features` stage
    emb, labels, names = frozen_features(params, "train", None, {}, torch.device("cpu"))
    shared, table = pio.read_embeddings(Path("data/features") / f"{params.roles.generic}__train__images.parquet")
    keep = (table["subset"] == params.fewshot.subset).to_numpy()
    assert torch.equal(emb, torch.from_numpy(shared[keep])) and labels.tolist() == table["label"].to_numpy()[keep].tolist()
    result = json.loads(Path("data/eval/fewshot.json").read_text())
    teacher = json.loads(Path("data/teacher/teacher.json").read_text())
    assert result["settings"]["logit_scale"] == teacher["logit_scale"]
    assert set(result["tip_adapter_search"]) == {str(k) for k in params.fewshot.shots} and result["val_images"] > 0


def test_second_repro_is_a_noop(reproduced: Path) -> None:
    out = run([str(BIN / "dvc"), "repro"], reproduced)
    assert ran_stages(out.stdout) == set(), out.stdout


def test_param_change_reruns_only_finetuning_and_dependents(reproduced: Path) -> None:
    out = run([str(BIN / "dvc"), "exp", "run", "-S", "experiment=tiny", "-S", "finetune.select_on=last",
               "-S", "finetune.lr_backbone=0.003"], reproduced)
    ran = ran_stages(out.stdout)
    assert "finetune@infuse" in ran and "evaluate@infuse" in ran and "report" in ran
    assert not ran & {"prepare@flags", "prepare@web", "teacher", "features"}, ran
    diff = run([str(BIN / "dvc"), "metrics", "diff", "--md"], reproduced).stdout
    assert "summary.infuse.delta_in_domain" in diff, diff
    assert "methods.infuse" not in diff and "fewshot." not in diff, diff  # details are not DVC metrics


def test_compare_suite_runs_every_method_and_the_wise_ft_curve(reproduced: Path) -> None:
    out = run([str(BIN / "dvc"), "exp", "run", "-S", "experiment=tiny", "-S", "suite=compare",
               "-S", "methods.lp_ft.lp_max_steps=3"], reproduced)
    ran = ran_stages(out.stdout)
    new = {"infuse_distill", "infuse_weights", "infuse_online", "lp_ft", "lwf", "gram", "ewc", "lora", "gift"}
    assert {f"finetune@{m}" for m in new} <= ran
    # shared work is reused: data, teacher, features, and the baselines' fine-tunes (run cache)
    assert not ran & {"prepare@flags", "prepare@web", "teacher", "features", "finetune@naive"}, ran
    s = summary(reproduced)
    for method in new | {"naive", "infuse"}:
        assert all(isinstance(s[method][f"delta_{k}"], float) for k in ("in_domain", "ood_image_image",
                                                                          "ood_image_text")), method
    # WiSE-FT: α = 0 is the pretrained model, α = 1 the base method, exactly
    curve = json.loads((reproduced / "data/eval/wise-ft.json").read_text())["curve"]
    for point, method in ((curve[0], "pretrained"), (curve[-1], "naive")):
        evaluated = json.loads((reproduced / f"data/eval/{method}.json").read_text())
        for group in ("image_image", "image_text", "zero_shot"):
            assert point[group] == evaluated[group], (method, group)
    wise = json.loads((reproduced / "reports/details.json").read_text())["wise_ft"]
    alphas = yaml.safe_load((reproduced / "params.yaml").read_text())["wise_ft"]["alphas"]
    assert set(wise) == {f"{a:g}" for a in alphas} and {"0", "1"} <= set(wise)
    assert (reproduced / "data/runs/ewc/fisher.pt").is_file()
    lp_ft = json.loads((reproduced / "data/runs/lp_ft/train.json").read_text())
    assert lp_ft["steps"] == lp_ft["config"]["steps"] and 1 <= lp_ft["probe_steps"] <= 3  # the probe runs first
    assert (reproduced / "reports/retention.png").stat().st_size > 10_000


def snakemake_rules(output: str) -> set[str]:
    return set(re.findall(r"^(?:local)?rule (\w+):$", output, re.M))


def test_snakemake_runs_the_same_pipeline_and_dvc_knows_its_results(reproduced: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "snake")
    run([sys.executable, "-m", "pipeline", "configure", "experiment=tiny"], project)
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "2"], project)
    assert "finetune__infuse" in dry.stdout
    start = time.time()
    first = run([str(BIN / "snakemake"), "--cores", "2"], project)
    print(f"snakemake --cores 2 on the tiny preset: {time.time() - start:.0f} s")
    assert (project / "logs" / "finetune__infuse.log").stat().st_size > 0  # a log per rule
    # same commands, same params, deterministic CPU runs: the numbers DVC committed (HEAD)
    committed = subprocess.run(["git", "show", "HEAD:reports/metrics.json"], cwd=reproduced, capture_output=True,
                               text=True, check=True).stdout
    for method in ("pretrained", "naive", "infuse"):
        assert summary(project)[method] == pytest.approx(json.loads(committed)["summary"][method], abs=1e-3)
    # the default target ends with `dvc commit`: DVC sees Snakemake's results as its own
    assert "all" in snakemake_rules(first.stdout + first.stderr)
    assert outdated_stages(project) == {}
    assert ran_stages(run([str(BIN / "dvc"), "repro"], project).stdout) == set()
    again = run([str(BIN / "snakemake"), "--cores", "2"], project)
    assert snakemake_rules(again.stdout + again.stderr) == {"all"}  # no stage reruns, only the commit


def test_killed_finetune_resumes_to_the_same_weights(reproduced: Path, tmp_path: Path) -> None:
    # a clone of the committed tiny results: its data, teacher and features come from the DVC cache
    project = clone(reproduced, tmp_path / "resume", share_cache=True)
    overrides = ["experiment=tiny", "finetune.steps=120", "finetune.checkpoint_every=10"]
    run([sys.executable, "-m", "pipeline", "configure", *overrides], project)
    cmd = [sys.executable, "-m", "pipeline", "finetune", "infuse"]
    run(cmd, project)
    uninterrupted = torch.load(project / "data/runs/infuse/visual.pt", weights_only=True)
    record = json.loads((project / "data/runs/infuse/train.json").read_text())

    proc = subprocess.Popen(cmd, cwd=project, env={**os.environ, **OFFLINE},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    resume_dir = project / "data/.resume/infuse"
    deadline = time.time() + 120
    while not any(resume_dir.glob("*.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(resume_dir.glob("*.pt")), "no checkpoint was written before the kill"
    resumed = run(cmd, project)
    assert "resuming at step" in resumed.stdout + resumed.stderr
    weights = torch.load(project / "data/runs/infuse/visual.pt", weights_only=True)
    assert weights.keys() == uninterrupted.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], uninterrupted[name], rtol=0, atol=0)
    assert json.loads((project / "data/runs/infuse/train.json").read_text())["selected"]["step"] == \
        record["selected"]["step"]
    assert not any(resume_dir.glob("*.pt")), "resume state must be removed once the run finishes"
