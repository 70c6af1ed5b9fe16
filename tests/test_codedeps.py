"""Code deps are derived: each stage's `pipeline/...` deps in dvc.yaml are its module's import closure."""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.codedeps import import_closure, stage_code_deps
from pipeline.dag import DVC_FILES, affected_stages, load_stages, sync_code_deps
from pipeline.commands import ENCODER_STAGES
from tests.conftest import ROOT, copy_project, run



def test_dvc_yaml_lists_exactly_each_stage_import_closure() -> None:
    for path in DVC_FILES:
        differences = sync_code_deps(ROOT / path, ROOT)
        assert differences == {}, f"{path}'s code deps drifted: run `python -m pipeline dag --write`: {differences}"


def test_closure_follows_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    files = {
        "pipeline/__init__.py": "",
        "pipeline/a.py": "import os\n\ndef f():\n    from pipeline.b import thing  # lazy\n    return thing\n",
        "pipeline/b.py": "from . import c\nfrom .sub import d\nthing = 1\n",
        "pipeline/c.py": "",
        "pipeline/sub/__init__.py": "",
        "pipeline/sub/d.py": "from ..c import *\n",
        "pipeline/sub/table.csv": "package data read by d\n",
        "pipeline/unused.py": "",
        "other/x.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert import_closure(["pipeline.a"], tmp_path) == [
        "pipeline/__init__.py", "pipeline/a.py", "pipeline/b.py", "pipeline/c.py",
        "pipeline/sub/__init__.py", "pipeline/sub/d.py", "pipeline/sub/table.csv"]


def test_stages_depend_on_what_they_import() -> None:
    """The files the stale-cache reports named: image preprocessing and the embedding code."""
    kinds = {spec.kind for spec in load_stages(ROOT)}
    closures = {kind: stage_code_deps(kind, ROOT) for kind in kinds}
    for kind in ENCODER_STAGES:
        assert {"pipeline/lib/images.py", "pipeline/lib/embedding.py"} <= set(closures[kind]), kind
    for kind in kinds:  # every stage runs through the CLI and reads params.yaml
        assert {"pipeline/cli.py", "pipeline/__main__.py"} <= set(closures[kind]), kind
        assert f"pipeline/stages/{kind}.py" in closures[kind]
        # fingerprint reads params.yaml's datasets as written: DVC starts it on every repro (no omegaconf)
        assert ("pipeline/config/load.py" in closures[kind]) == (kind != "fingerprint"), kind
    assert [k for k in kinds if "pipeline/lib/fewshot.py" in closures[k]] == ["fewshot"]
    assert affected_stages("pipeline/lib/fewshot.py", ROOT) == ["fewshot"]
    assert set(affected_stages("pipeline/lib/embedding.py", ROOT)) == \
        {s.name for s in load_stages(ROOT) if s.kind in ENCODER_STAGES}
    assert "pipeline/lib/embedding.py" not in closures["report"]  # the light stages stay light


def test_dag_check_fails_on_drift_and_write_restores_dvc_yaml(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    dvc_yaml = project / "dvc.yaml"
    committed = dvc_yaml.read_text()
    drifted = committed.replace("      - pipeline/lib/embedding.py\n", "", 1)  # the teacher stage's
    drifted = drifted.replace("      - pipeline/stages/report.py\n",
                              "      - pipeline/stages/report.py\n      - pipeline/lib/worlds\n", 1)
    assert drifted.count("pipeline/lib/worlds\n") == 1 and drifted != committed
    dvc_yaml.write_text(drifted)

    check = run([sys.executable, "-m", "pipeline", "dag", "--check"], project, check=False)
    assert check.returncode != 0
    assert "teacher: + pipeline/lib/embedding.py" in check.stdout
    assert "report: - pipeline/lib/worlds" in check.stdout
    assert "dag --write" in check.stderr and dvc_yaml.read_text() == drifted  # --check writes nothing

    run([sys.executable, "-m", "pipeline", "dag", "--write"], project)
    assert dvc_yaml.read_text() == committed  # comments, data deps, params and layout kept
    run([sys.executable, "-m", "pipeline", "dag", "--check"], project)
