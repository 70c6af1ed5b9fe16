"""`python -m pipeline.benchmark_data`: what watching a large dataset root costs, printed.

Builds a folder dataset of `--files` small files in `--classes` class folders (or reads `--root`,
changing nothing in it but the stats file, kept in a temporary folder) and times the fingerprint
that `prepare` depends on (pipeline.sources.fingerprint): the first one (every file hashed), a
re-check with nothing changed, then after a touch, an edit, a move between classes and an added
file (each re-hashes only what moved). With `--dvc`, the same checks through DVC's own tracking
of the folder as a dependency (`dvc status` of a stage that depends on it), for comparison.

Wall and CPU seconds (CPU: this process's threads and the commands it ran) and peak resident
memory; nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from pipeline.sources.fingerprint import fingerprint


def make_tree(root: Path, files: int, classes: int, size: int) -> None:
    for i in range(files):
        path = root / f"class_{i % classes:04d}" / f"{i:08d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def _first_file(root: Path) -> Path:
    return next(p for p in sorted(root.rglob("*")) if p.is_file())


def changes(root: Path) -> list[tuple[str, Callable[[], None]]]:
    """(label, apply) of each change, in order; each leaves the tree valid for the next."""
    target = _first_file(root)
    other = next(d for d in sorted(root.iterdir()) if d.is_dir() and d != target.parent)

    def touch() -> None:
        st = target.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    return [
        ("nothing changed", lambda: None),
        ("one file touched", touch),
        ("one file edited", lambda: target.write_bytes(os.urandom(target.stat().st_size))),
        ("one file moved to another class", lambda: shutil.move(target, other / target.name)),
        ("one file added", lambda: (other / "added.jpg").write_bytes(os.urandom(2048))),
    ]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of the commands it ran: on a shared machine it
    moves less than the wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(run: Callable[[], int]) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), _cpu_seconds()
    read = run()
    return time.perf_counter() - wall, _cpu_seconds() - cpu, read


def time_fingerprints(root: Path, stats: Path) -> list[tuple[str, float, float, int]]:
    cfg = {"source": "folder", "root": str(root)}
    check = lambda: fingerprint("bench", cfg, stats).read  # noqa: E731
    rows = [("first fingerprint (every file hashed)", *_timed(check))]
    for label, apply in changes(root):
        apply()
        rows.append((label, *_timed(check)))
    return rows


def time_dvc(root: Path, work: Path) -> list[tuple[str, float, float, int]]:
    """DVC's own tracking of `root` as a stage's dependency: `dvc status` after each change."""
    dvc = [sys.executable, "-m", "dvc"]
    repo = work / "dvc_repo"
    repo.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    call = lambda *args: subprocess.run([*dvc, *args], cwd=repo, env=env, check=True,  # noqa: E731
                                        capture_output=True, text=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    call("init", "-q")
    call("stage", "add", "-q", "-n", "watch", "-d", str(root), "-o", "out.txt", "echo done > out.txt")
    status = lambda: subprocess.run([*dvc, "status"], cwd=repo, env=env, capture_output=True).returncode  # noqa: E731
    rows = [("dvc repro (every file hashed)", *_timed(lambda: call("repro", "-q").returncode))]
    for label, apply in changes(root):
        apply()
        rows.append((f"dvc status: {label}", *_timed(status)))
        call("commit", "-q", "-f")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2048, help="bytes per generated file")
    parser.add_argument("--root", help="an existing folder to fingerprint instead (it is changed: use a copy)")
    parser.add_argument("--dvc", action="store_true", help="also time DVC's own tracking of the folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="benchmark_data.") as tmp:
        work = Path(tmp)
        root = Path(args.root) if args.root else work / "root"
        if not args.root:
            start = time.perf_counter()
            make_tree(root, args.files, args.classes, args.size)
            print(f"made {args.files} files of {args.size} B in {args.classes} folders: "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        files = sum(1 for _ in root.rglob("*") if _.is_file())
        print(f"{'check':<45} {'wall s':>8} {'cpu s':>8} {'files read':>10}   ({files} files under {root})", flush=True)
        for label, wall, cpu, read in time_fingerprints(root, work / "stats.json"):
            print(f"{label:<45} {wall:8.2f} {cpu:8.2f} {read:>10}", flush=True)
        print(f"peak resident memory: {_peak_rss_mib():.0f} MiB", flush=True)
        if args.dvc:
            for label, wall, cpu, _ in time_dvc(root, work):
                print(f"{label:<45} {wall:8.2f} {cpu:8.2f}", flush=True)


if __name__ == "__main__":
    main()
