"""Snakemake on SLURM: each rule asks for its stage's resources from params.yaml, passes its threads
to the stage, logs to logs/<rule>.log; the jobs' conda environment mirrors pyproject.toml."""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_parser, param_overrides
from pipeline.config import StageResources, load_params
from pipeline.dag import job_for, load_stages
from pipeline.commands import ENCODER_STAGES
from tests.conftest import ROOT, copy_project, run

LIGHT_STAGES = {"index", "evaluate", "neighbours", "report"}
CORES = 64  # a dry run caps threads at --cores: leave room for every rule's own


def dry_run_jobs(output: str) -> dict[str, dict]:
    """rule → {threads, resources, shell} from `snakemake -n --printshellcmds` output."""
    jobs: dict[str, dict] = {}
    current: dict | None = None
    for line in output.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            current = jobs.setdefault(m.group(1), {"threads": 1, "resources": {}})
        elif current is not None and (m := re.match(r"^\s+threads: (\d+)$", line)):
            current["threads"] = int(m.group(1))
        elif current is not None and (m := re.match(r"^\s+resources: (.*)$", line)):
            current["resources"] = dict(item.split("=", 1) for item in m.group(1).split(", "))
        elif current is not None and line.startswith("Shell command: "):
            current["shell"] = line.removeprefix("Shell command: ")
    return jobs


def slurm_dry_run_of(project: Path, *configure: str) -> dict[str, dict]:
    """The jobs of a dry run under profiles/slurm (after `configure` with these overrides, if any),
    with an account set the way a user sets one in the profile."""
    if configure:
        run([sys.executable, "-m", "pipeline", "configure", *configure], project)
    profile = project / "profiles" / "slurm" / "config.yaml"
    settings = yaml.safe_load(profile.read_text())
    settings["default-resources"] = {"slurm_account": "proj42"}
    profile.write_text(yaml.safe_dump(settings))
    out = run([str(Path(sys.executable).parent / "snakemake"), "-n", "--profile", "profiles/slurm",
               "--printshellcmds", "--cores", str(CORES)], project)
    return dry_run_jobs(out.stdout)


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """A dry run of the embedded default under profiles/slurm."""
    project = copy_project(tmp_path_factory.mktemp("hpc") / "project")
    return project, slurm_dry_run_of(project)


def submitted(project: Path) -> list:
    """The stages that become jobs. The fingerprint stage ran on the submit host when the Snakefile was
    read (it writes a file per dataset, rewritten only when the dataset's files change): nothing to submit."""
    specs = load_stages(project)
    made = [s for s in specs if s.always_changed]
    assert [s.kind for s in made] == ["fingerprint"] and all((project / o).is_file() for s in made for o in s.outs)
    assert all(job_for(s, load_params(project / "params.yaml"), {}).local for s in made)
    return [s for s in specs if not s.always_changed]


def test_every_rule_asks_slurm_for_its_stage_resources(slurm_dry_run: tuple[Path, dict[str, dict]]) -> None:
    project, jobs = slurm_dry_run
    params = load_params(project / "params.yaml")
    cluster = {"slurm_gpu_partition": "gpu", "slurm_cpu_partition": "cpu"}  # the profile's names
    specs = submitted(project)
    assert {s.rule for s in specs} | {"all"} == set(jobs)
    for spec in specs:
        res, job = params.resources[spec.kind], jobs[spec.rule]
        assert job["threads"] == res.threads, spec.rule
        assert int(job["resources"]["mem_mb"]) == res.mem_mb, spec.rule
        assert int(job["resources"]["runtime"]) == res.runtime_min, spec.rule
        assert int(job["resources"]["gpu"]) == res.gpu, spec.rule
        assert job["resources"]["slurm_partition"] == job_for(spec, params, cluster).resources["slurm_partition"]
        assert job["resources"]["slurm_account"] == "proj42", spec.rule
        assert job["shell"] == f"{spec.cmd} --threads {res.threads} 2>&1 | tee logs/{spec.rule}.log"
    assert "dvc commit" in jobs["all"]["shell"]


def test_encoder_stages_get_a_gpu_and_light_stages_run_on_the_submit_host(
        slurm_dry_run: tuple[Path, dict[str, dict]]) -> None:
    project, jobs = slurm_dry_run
    params = load_params(project / "params.yaml")
    for spec in submitted(project):
        gpu = int(jobs[spec.rule]["resources"]["gpu"])
        assert (gpu > 0) == (spec.kind in ENCODER_STAGES), spec.rule
        assert jobs[spec.rule]["resources"]["slurm_partition"] == ("gpu" if gpu else "cpu")
        assert job_for(spec, params, {}).local == (spec.kind in LIGHT_STAGES), spec.rule
    assert jobs["finetune__infuse"]["threads"] > jobs["report"]["threads"]


def test_the_paper_preset_submits_index_and_evaluate_as_sized_cluster_jobs(tmp_path: Path) -> None:
    """Exact search at the paper's set sizes is O(N²): no longer a 2-thread job on the submit host.
    (A dry run does not print whether a rule is local: the Snakefile's `localrule:` is job_for's.)"""
    project = copy_project(tmp_path / "project")
    jobs = slurm_dry_run_of(project, "experiment=paper_sop_siglip")
    params = load_params(project / "params.yaml")
    sized = {"index": (16, 16000, 60), "evaluate": (16, 16000, 60)}  # conf/experiment/paper_sop_siglip.yaml
    specs = [s for s in load_stages(project) if s.kind in sized]
    assert {s.kind for s in specs} == set(sized) and len(specs) == 2 * len(params.methods)
    for spec in specs:
        job = jobs[spec.rule]
        assert not job_for(spec, params, {}).local, spec.rule
        assert (job["threads"], int(job["resources"]["mem_mb"]), int(job["resources"]["runtime"])) == sized[spec.kind]
        assert int(job["resources"]["gpu"]) == 0 and job["resources"]["slurm_partition"] == "cpu", spec.rule
        assert job["shell"].startswith(f"{spec.cmd} --threads 16 ")
    # the embedded default keeps them light
    default = load_params(ROOT / "params.yaml")
    assert all(default.resources[kind].local and default.resources[kind].threads == 2 for kind in sized)


def test_data_parallel_finetune_asks_for_one_gpu_threads_and_memory_per_process() -> None:
    single = load_params(ROOT / "params.yaml")
    params = load_params(ROOT / "params.yaml", ["runtime.processes=4"])
    spec = next(s for s in load_stages(ROOT) if s.kind == "finetune")
    one, four = job_for(spec, single, {}), job_for(spec, params, {})
    assert four.resources["gpu"] == 4 and four.threads == 4 * one.threads
    assert four.resources["mem_mb"] == 4 * one.resources["mem_mb"]
    params.resources.pop("finetune")
    with pytest.raises(ValueError, match=r"resources\.finetune: missing"):
        job_for(spec, params, {})


def test_threads_flag_overrides_runtime_threads() -> None:
    args = build_parser().parse_args(["finetune", "infuse", "--threads", "7"])
    params = load_params(ROOT / "params.yaml", param_overrides(args))
    assert params.runtime.threads == 7
    assert load_params(ROOT / "params.yaml", param_overrides(build_parser().parse_args(["report"]))).runtime.threads \
        == load_params(ROOT / "params.yaml").runtime.threads  # DVC's command: params.yaml as it is


def test_resources_are_validated_naming_the_key() -> None:
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"resources\.finetun: not a stage, did you mean resources\.finetune\?"):
        load_params(ROOT / "params.yaml", ["resources.finetun.threads=2"])
    with pytest.raises(ConfigError, match=r"resources\.finetune\.threads: must be > 0"):
        load_params(ROOT / "params.yaml", ["resources.finetune.threads=0"])
    assert StageResources().gpu == 0


def test_conda_environment_mirrors_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == project["dependencies"], "environment.yml drifted from pyproject.toml's dependencies"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python.removeprefix("python=") in project["requires-python"]  # ">=3.11,<3.12" holds 3.11
    deploy = ROOT / "environment.post-deploy.sh"  # Snakemake runs it after creating the environment
    assert deploy.stat().st_mode & 0o111 and ".ci/requirements-nodeps.txt" in deploy.read_text()
    assert "conda:" in (ROOT / "Snakefile").read_text()
