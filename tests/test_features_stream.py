"""Teacher features at the paper's scale: written a row group per chunk (never whole in memory), with a
memory-mappable .npy beside, optionally float16; a killed `features` resumes at its last chunk."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import io as pio
from pipeline.lib.data import StepBatches, epoch_permutation
from tests.conftest import OFFLINE, clone, run


def chunks_of(emb: np.ndarray, size: int):
    def chunks():
        for start in range(0, len(emb), size):
            part = emb[start:start + size]
            yield np.arange(start, start + len(part)), np.zeros(len(part), np.int64), part, {"subset": ["s"] * len(part)}
    return chunks


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_chunked_tables_hold_the_rows_in_row_groups_with_the_whole_arrays_hash(tmp_path: Path, dtype: str) -> None:
    emb = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    rows = pio.write_embedding_chunks(tmp_path / "t.parquet", chunks_of(emb, 300), {"model": "m"}, dtype,
                                      array=tmp_path / "t.npy")
    stored = emb.astype(np.float16) if dtype == "float16" else emb
    read, table = pio.read_embeddings(tmp_path / "t.parquet")
    assert rows == 1000 and read.dtype == np.float32 and np.array_equal(read, stored.astype(np.float32))
    assert table["id"].to_list() == list(range(1000)) and pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == 4
    meta = pio.parquet_metadata(tmp_path / "t.parquet")
    assert meta["sha256"] == pio.content_hash(stored) and meta["dtype"] == dtype and meta["rows"] == 1000
    mapped = np.load(tmp_path / "t.npy", mmap_mode="r")
    assert mapped.dtype == stored.dtype and np.array_equal(mapped, stored)
    assert not list(tmp_path.glob(".*.tmp"))


def test_epoch_permutations_are_computed_once_and_batches_stay_the_same() -> None:
    sampler = StepBatches(n=1000, batch_size=96, seed=3)
    before = epoch_permutation.cache_info().misses
    first = [sampler.indices(s).tolist() for s in range(40)]
    assert epoch_permutation.cache_info().misses - before <= 5  # 40 steps span 4 epochs: one draw each
    expected = np.concatenate([np.random.default_rng((3, e)).permutation(1000) for e in range(4)])
    assert first == [expected[s * 96:(s + 1) * 96].tolist() for s in range(40)]


def features_digest(project: Path) -> str:
    return hashlib.sha256(b"".join((project / "data/features" / f).read_bytes() for f in
                                   ("web__train__images.parquet", "web__train__images.npy"))).hexdigest()


@pytest.mark.slow
def test_a_killed_features_stage_resumes_at_its_last_chunk(reproduced_tiny: Path, tmp_path: Path) -> None:
    project = clone(reproduced_tiny, tmp_path / "features", share_cache=True)
    whole = features_digest(project)
    chunks = project / "data" / ".resume" / "features"
    env = dict(os.environ, **OFFLINE, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "features", "--threads", "1"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(chunks.glob("*/00000.npy")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = sorted(p.name for p in chunks.glob("*/*.npy"))
    assert kept and "00000.npy" in kept, "the first chunk was not kept for the resume"
    rerun = run([sys.executable, "-m", "pipeline", "features"], project)
    assert features_digest(project) == whole and "[features] web/train" in rerun.stdout
    assert not list(chunks.glob("*/*.npy"))  # written: nothing left to resume
