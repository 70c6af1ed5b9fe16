"""Shared fixtures: offline switches, a throw-away copy of the project, tiny params."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "DVC_NO_ANALYTICS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
os.environ.update(OFFLINE)


def tool_env() -> dict[str, str]:
    """The environment commands run in: the venv's tools (dvc, snakemake, python) first on PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **OFFLINE)


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command with the venv's tools first on PATH; on failure show its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


REPORT_INPUTS = ("reports/tuning.json", "reports/seeds.json")
# DVC runs the fingerprint stage on every repro (it watches the datasets' files, docs/pipeline.md):
# every `dvc repro` runs it and `dvc status` lists it as "always changed"
FINGERPRINT = "fingerprint/dvc.yaml:fingerprint"


def outdated_stages(project: Path) -> dict[str, list]:
    """What `dvc status` says is out of date, less the fingerprint stage's "always changed"."""
    status = json.loads(run([str(Path(sys.executable).parent / "dvc"), "status", "--json"], project).stdout)
    return {stage: why for stage, why in status.items() if stage != FINGERPRINT}


def copy_project(dest: Path) -> Path:
    """The tracked project files (what a fresh clone has) in a new git repo at `dest`."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        # reports/ holds results, except the inputs the report stage reads (what `tune` and `seeds` wrote)
        if src.is_file() and (not rel.startswith(("data/", "reports/", "tests/")) or rel in REPORT_INPUTS):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "data").mkdir(exist_ok=True)
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "test@example.com"], dest)
    run(["git", "config", "user.name", "test"], dest)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project configured with the tiny preset, committed."""
    dest = copy_project(tmp_path / "project")
    run([sys.executable, "-m", "pipeline", "configure", "experiment=tiny"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "tiny"], dest)
    return dest


def clone(source: Path, dest: Path, share_cache: bool = False) -> Path:
    """`git clone`; with `share_cache`, its outputs checked out from the source's own DVC cache."""
    run(["git", "clone", "-q", str(source), str(dest)], dest.parent)
    if share_cache:
        run([str(Path(sys.executable).parent / "dvc"), "cache", "dir", "--local", str(source / ".dvc" / "cache")], dest)
        run([str(Path(sys.executable).parent / "dvc"), "checkout", "--quiet"], dest)
    return dest


@pytest.fixture(scope="session")
def reproduced_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after one full `dvc repro`, committed with its dvc.lock (shared by the slow
    modules: clone it, or change only what a test puts back)."""
    project = copy_project(tmp_path_factory.mktemp("dvc") / "project")
    run([sys.executable, "-m", "pipeline", "configure", "experiment=tiny"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny"], project)
    out = run([str(Path(sys.executable).parent / "dvc"), "repro"], project)
    target = yaml.safe_load((project / "params.yaml").read_text())["roles"]["target"]
    assert {f"prepare@{target}", "teacher", "features", "finetune@infuse", "report"} <= \
        set(re.findall(r"Running stage '([^']+)'", out.stdout))
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "results"], project)
    return project


@pytest.fixture(scope="session")
def tiny_params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml of the tiny preset (for tests that call library/stage code in-process)."""
    out = tmp_path_factory.mktemp("params") / "params.yaml"
    run([sys.executable, "-m", "pipeline", "configure", "experiment=tiny", "--output", str(out)], ROOT)
    return out
