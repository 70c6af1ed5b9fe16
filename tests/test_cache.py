"""The cache never serves stale results: editing a file reruns exactly the stages that import it;
a DVC remote restores a clone without rerunning anything; a second `dvc repro` in the same
workspace stops on DVC's lock and corrupts nothing. Each test works in a clone of the tiny
project reproduced once (conftest), sharing its DVC cache."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_params
from pipeline.dag import affected_stages
from tests.conftest import FINGERPRINT, clone, outdated_stages, run, tool_env

pytestmark = pytest.mark.slow
DVC = str(Path(sys.executable).parent / "dvc")
# DVC's LockError: the workspace lock, or a stage's inputs/outputs held by the running repro
LOCK_MESSAGE = re.compile(r"Unable to acquire lock|is busy, it is being blocked by")


@pytest.fixture
def workspace(reproduced_tiny: Path, tmp_path: Path) -> Path:
    """A fresh clone of the reproduced tiny project, its outputs in place and up to date."""
    project = clone(reproduced_tiny, tmp_path / "workspace", share_cache=True)
    assert changed_stages(project) == set()
    return project


def changed_stages(project: Path) -> set[str]:
    return set(outdated_stages(project))


def ran_stages(output: str) -> set[str]:
    """The stages a repro ran, less the fingerprint stage (DVC runs it every time)."""
    return set(re.findall(r"Running stage '([^']+)'", output)) - {FINGERPRINT}


def touch_source(project: Path, rel: str) -> None:
    with (project / rel).open("a") as f:
        f.write("# an edit that changes no behaviour, only the file's hash\n")


@pytest.mark.parametrize("source, picked", [
    ("pipeline/lib/fewshot.py", {"fewshot"}),
    ("pipeline/lib/images.py", {"prepare@<target>", "teacher", "features", "finetune@infuse", "embed@naive",
                                "wiseft", "fewshot", "neighbours"}),
])
def test_editing_a_source_file_outdates_exactly_the_stages_that_import_it(workspace: Path, source: str,
                                                                           picked: set[str]) -> None:
    target = load_params(workspace / "params.yaml").roles.target
    picked = {name.replace("<target>", target) for name in picked}
    touch_source(workspace, source)
    changed = changed_stages(workspace)
    assert changed == set(affected_stages(source, workspace))  # the stages whose import closure holds it
    assert picked <= changed
    if source == "pipeline/lib/images.py":  # searching embeddings reads no image
        assert not changed & {"index@pretrained", "evaluate@infuse"}, changed
    if source == "pipeline/lib/fewshot.py":
        assert changed == {"fewshot"}  # the report reruns later only if fewshot's output changes


def test_remote_push_fresh_clone_pull_then_repro_is_a_noop(workspace: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    run([DVC, "remote", "add", "-d", "storage", str(remote)], workspace)
    run(["git", "commit", "-qam", "DVC remote"], workspace)
    run([DVC, "push"], workspace)
    fresh = clone(workspace, tmp_path / "fresh")
    assert not (fresh / "data" / "teacher").exists()
    run([DVC, "pull"], fresh)
    assert changed_stages(fresh) == set()
    repro = run([DVC, "repro"], fresh)
    assert ran_stages(repro.stdout) == set() and "Stage 'report' didn't change, skipping" in repro.stdout


def test_second_repro_in_the_same_workspace_stops_on_the_lock(workspace: Path) -> None:
    touch_source(workspace, "pipeline/lib/fewshot.py")  # something real to rerun: the fewshot stage
    first = subprocess.Popen([DVC, "repro"], cwd=workspace, env=tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in first.stdout:  # while a stage runs, DVC locks its deps and outs (rwlock)
        seen.append(line)
        if "Running stage 'fewshot'" in line:
            break
    assert first.poll() is None, "".join(seen)
    second = run([DVC, "repro"], workspace, check=False)
    rest, _ = first.communicate(timeout=900)
    assert second.returncode != 0 and LOCK_MESSAGE.search(second.stderr), second.stdout + second.stderr
    assert first.returncode == 0, "".join(seen) + rest
    assert "fewshot" in ran_stages("".join(seen) + rest)
    assert changed_stages(workspace) == set()  # dvc.lock and every output agree: nothing half-written
    again = run([DVC, "repro"], workspace)  # and no lock is left behind
    assert ran_stages(again.stdout) == set() and "busy" not in again.stdout + again.stderr
