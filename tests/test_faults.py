"""Faults leave nothing behind and nothing loaded is trusted blindly: temporaries outside every DVC
dependency, swept after a SIGKILL, removed on SIGTERM / SIGINT; outputs with the umask's
permissions; resume state read with torch's weights-only loader."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.transformer import VisionTransformer
from PIL import Image

from pipeline import io as pio
from pipeline.lib.embedding import View
from pipeline.lib.recipes import FinetuneCfg
from pipeline.lib.training.loop import Evaluation, Inputs, Split, fine_tune
from pipeline.lib.training.trainer import Runtime
from pipeline.stages.inputs import DiskResume
from tests.conftest import OFFLINE, run

BIN = Path(sys.executable).parent


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder (with its data/) as the working directory, as stages run."""
    (tmp_path / "data" / "eval").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def host() -> str:
    return socket.gethostname().split(".")[0].replace("_", "-")


# ------------------------------------------------------------------------------ atomic outputs
def test_a_temporary_lives_in_data_tmp_not_in_the_folder_a_stage_depends_on(project_dir: Path) -> None:
    dest = Path("data/eval/naive.json")
    with pio.atomic_path(dest) as tmp:
        assert tmp.parent.resolve() == (project_dir / "data" / ".tmp").resolve()
        assert tmp.name.startswith(f".naive.json.{os.getpid()}.") and tmp.name.endswith(".tmp")
        assert list((project_dir / "data" / "eval").iterdir()) == []  # DVC's hash of data/eval is untouched
        tmp.write_text("{}")
    assert dest.read_text() == "{}" and not (project_dir / "data" / ".tmp").exists()
    with pytest.raises(RuntimeError, match="boom"), pio.atomic_path(dest, directory=True) as tmp:
        (tmp / "half.json").write_text("{")
        raise RuntimeError("boom")
    assert dest.read_text() == "{}" and not (project_dir / "data" / ".tmp").exists()


def test_outside_the_project_a_temporary_is_a_hidden_sibling(tmp_path: Path, project_dir: Path) -> None:
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere" / "out.json"
    try:
        with pio.atomic_path(elsewhere) as tmp:
            assert tmp.parent == elsewhere.parent and tmp.name.startswith(".out.json.")
            tmp.write_text("1")
        assert [p.name for p in elsewhere.parent.iterdir()] == ["out.json"]
    finally:
        elsewhere.unlink(missing_ok=True)
        elsewhere.parent.rmdir()


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                        (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask(project_dir: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    old = os.umask(umask)
    try:
        pio.write_json({"a": 1}, "reports/metrics.json")
        with pio.atomic_path("data/embeddings/naive", directory=True) as out:
            pio.write_json([], out / "x.json")
    finally:
        os.umask(old)
    assert (project_dir / "reports/metrics.json").stat().st_mode & 0o777 == file_mode
    assert (project_dir / "data/embeddings/naive").stat().st_mode & 0o777 == dir_mode
    assert (project_dir / "data/embeddings/naive/x.json").stat().st_mode & 0o777 == file_mode


def test_a_killed_runs_temporaries_are_swept_and_no_live_or_foreign_one(project_dir: Path) -> None:
    scratch = project_dir / "data" / ".tmp"
    scratch.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        stale = scratch / f".pretrained.{dead_pid()}.{host()}.0123abcd.tmp"
        live = scratch / f".naive.{sleeper.pid}.{host()}.0123abcd.tmp"
        foreign = scratch / f".infuse.{dead_pid()}.othernode-7.0123abcd.tmp"  # another node of a shared disk
        (stale / "sop__test__images.parquet").parent.mkdir()
        (stale / "sop__test__images.parquet").write_bytes(b"half")
        live.mkdir()
        foreign.write_text("")
        old_style = project_dir / "data" / "eval" / ".naive.json.k2_x9q0a.tmp"  # tempfile's name, earlier versions
        old_style.write_text("")
        pio.write_json({}, "data/eval/naive.json")
        assert sorted(p.name for p in scratch.iterdir()) == sorted([live.name, foreign.name])
        assert [p.name for p in (project_dir / "data" / "eval").iterdir()] == ["naive.json"]
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------------------ resume state
def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), (i * 37) % 255, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def split(n: int, classes: int) -> Split:
    return Split([png(i) for i in range(n)], np.arange(n) % classes, [f"{i}.png" for i in range(n)], np.arange(n))


@pytest.mark.parametrize("schedule", ["joint", "round_robin"])
def test_the_resume_state_of_a_real_run_loads_weights_only(project_dir: Path, schedule: str) -> None:
    torch.manual_seed(0)
    teacher = VisionTransformer(image_size=16, patch_size=4, width=32, layers=1, heads=2, mlp_ratio=2.0,
                                output_dim=24)
    data = Inputs(teacher, View(16, (0.5,) * 3, (0.5,) * 3, 24, 10.0), split(16, 4), split(8, 4), split(16, 4),
                  split(8, 4), targets=torch.randn(16, 24))
    cfg = FinetuneCfg(steps=6, batch_size=4, train_resize=18, checkpoint_every=1, schedule=schedule,
                      lambda_weights=1.0, lambda_distill=1.0)
    resume = DiskResume("trust", "key")
    fine_tune(data, cfg, Runtime(), Evaluation(k=2, batch_size=8), resume)
    state = resume.load(torch.device("cpu"))  # weights_only=True: fails on anything but tensors and plain values
    assert state is not None and {"tuner", "step", "best", "history", "probe", "rng"} <= set(state)
    assert state["step"] > 0 and isinstance(state["best"]["weights"], dict)


class Payload:
    """What a planted resume file could hold: unpickling it runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_resume_file_with_a_code_payload_is_refused_not_run(project_dir: Path) -> None:
    resume = DiskResume("trust", "key")
    marker = project_dir / "payload-ran"
    resume.file.parent.mkdir(parents=True)
    torch.save({"step": 3, "tuner": Payload(marker)}, resume.file)
    with pytest.raises(ValueError, match=r"key\.pt holds more than tensors and plain values, so it was not loaded "
                                         r"\(Trying to load unsupported GLOBAL posix\.system.*delete it"):
        resume.load(torch.device("cpu"))
    assert not marker.exists()


# ------------------------------------------------------------------------------ a real stage, stopped
def tmp_leftovers(project: Path) -> list[str]:
    return sorted(str(p.relative_to(project)) for p in project.rglob("*.tmp") if ".git" not in p.parts)


def dvc_status(project: Path) -> dict:
    return json.loads(run([str(BIN / "dvc"), "status", "--json"], project).stdout)


# Two places lose what a signal handler raises, and a stop must still happen: a finalizer (Python only
# reports what a `__del__` raises), and a module being imported (a compiled extension's initialisation
# turns it into an ImportError, which an optional import catches: torch's probe for triton).
RUNS_ON = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from pipeline.stop import Stopped, stop_on_signals
try:
    with stop_on_signals():
        {body}
        time.sleep(30)
    print("ran on")
except (Stopped, KeyboardInterrupt) as stop:
    print("stopped by", type(stop).__name__)
"""
IN_A_FINALIZER = """class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.{sig})
                for _ in range(10_000):
                    pass
        Finalized()"""
IN_AN_IMPORT = """try:
            import extension_initialisation  # (written by the test)
        except ImportError:
            pass  # an optional feature: off"""
EXTENSION_INITIALISATION = """import os, signal
try:  # as pybind11 runs a compiled module's initialisation
    os.kill(os.getpid(), signal.{sig})
    for _ in range(10_000):
        pass
except BaseException as exc:
    raise ImportError("initialization failed") from exc
"""


@pytest.mark.parametrize("where", ["finalizer", "import"])
@pytest.mark.parametrize("sig, raised", [("SIGTERM", "Stopped"), ("SIGINT", "KeyboardInterrupt")])
def test_a_signal_that_lands_where_python_loses_exceptions_still_stops_the_run(tmp_path: Path, where: str, sig: str,
                                                                              raised: str) -> None:
    (tmp_path / "extension_initialisation.py").write_text(EXTENSION_INITIALISATION.format(sig=sig))
    body = (IN_A_FINALIZER if where == "finalizer" else IN_AN_IMPORT).format(sig=sig)
    proc = subprocess.run([sys.executable, "-c", RUNS_ON.format(body=body), str(tmp_path)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert proc.stdout.strip() == f"stopped by {raised}", proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def start_teacher(project: Path, **popen) -> tuple[subprocess.Popen, Path]:
    """`python -m pipeline teacher`, returned once its output is under construction in data/.tmp."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "teacher"], cwd=project,
                            env={**os.environ, **OFFLINE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)
    scratch, deadline = project / "data" / ".tmp", time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        found = [p for p in scratch.glob(".teacher.*.tmp")] if scratch.is_dir() else []
        if found:
            time.sleep(0.5)  # inside the training loop
            return proc, found[0]
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the teacher never started its output: {proc.communicate()}")


@pytest.mark.slow
def test_a_stopped_stage_leaves_no_temporary_and_a_killed_ones_is_swept(project: Path) -> None:
    run([sys.executable, "-m", "pipeline", "configure", "experiment=tiny", "teacher.steps=3000"], project)
    run([str(BIN / "dvc"), "repro", "prepare@web"], project)
    before = dvc_status(project)
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc, _ = start_teacher(project)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == code, stderr
        assert f"error [teacher]: stopped by {sig.name}" in stderr and "Traceback" not in stderr, stderr
        assert tmp_leftovers(project) == [] and not (project / "data" / "teacher").exists()
        assert dvc_status(project) == before
    proc, leftover = start_teacher(project)
    proc.send_signal(signal.SIGKILL)  # no cleanup can run: the temporary stays, outside every DVC path
    proc.wait()
    assert tmp_leftovers(project) == ["data/.tmp", str(leftover.relative_to(project))]
    assert leftover.parent == project / "data" / ".tmp" and dvc_status(project) == before
    # the next run of a stage on this host sweeps it (its process is gone); outputs get the umask's permissions
    proc = subprocess.run([sys.executable, "-m", "pipeline", "prepare", "flags"], cwd=project,
                          env={**os.environ, **OFFLINE}, capture_output=True, text=True, umask=0o027, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert tmp_leftovers(project) == [] and not (project / "data" / ".tmp").exists()
    assert (project / "data" / "prepared" / "flags").stat().st_mode & 0o777 == 0o750
    assert (project / "data" / "prepared" / "flags" / "manifest.parquet").stat().st_mode & 0o777 == 0o640
    assert (project / "data" / "prepared" / "flags" / "splits" / "train.json").stat().st_mode & 0o777 == 0o640
