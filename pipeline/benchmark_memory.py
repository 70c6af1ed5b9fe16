"""`python -m pipeline.benchmark_memory`: peak memory of the paper-scale paths against the data's size.

Synthetic data at the paper's size (default 1,024,934 × 768 float32: the ImageNet train split the
replay distils on, 3.1 GB), each measurement in a fresh process (its peak RSS is its own):
- writing the teacher features: the whole table at once (how `features` wrote before) against the
  stream of row groups `features` writes now (`io.write_embedding_chunks`, with the .npy beside);
- a 2-rank fine-tune's set-up: every rank reading the distillation targets, as a private copy (the
  Parquet table read whole) against the shared memory-map of the .npy (PSS: each rank's share of the
  pages, which is what the machine really holds).
Figures are printed; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GiB = 2 ** 30


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def pss_gib() -> float:
    """This process's proportional share of its resident pages (shared pages split between sharers)."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 2 ** 20
    return float("nan")


def synthetic_chunks(rows: int, dim: int, chunk: int):
    def chunks():
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            emb = np.random.default_rng(start).standard_normal((n, dim), dtype=np.float32)
            yield np.arange(start, start + n), np.zeros(n, np.int64), emb, {}
    return chunks


def write_whole(rows: int, dim: int, folder: Path) -> dict:
    from pipeline import io as pio

    emb = np.concatenate([c[2] for c in synthetic_chunks(rows, dim, 65536)()])
    start = time.time()
    pio.write_embeddings(folder / "whole.parquet", np.arange(rows), np.zeros(rows, np.int64), emb, {})
    return {"seconds": round(time.time() - start, 1), "peak_rss_gib": round(peak_rss_gib(), 2)}


def write_streamed(rows: int, dim: int, folder: Path, chunk: int) -> dict:
    from pipeline import io as pio

    start = time.time()
    pio.write_embedding_chunks(folder / "streamed.parquet", synthetic_chunks(rows, dim, chunk), {},
                               array=folder / "streamed.npy")
    return {"seconds": round(time.time() - start, 1), "peak_rss_gib": round(peak_rss_gib(), 2)}


def rank_setup(folder: Path, mode: str, batches: int, batch: int) -> dict:
    """One rank: read the targets (copy | memory-map), then draw `batches` random batches of them."""
    from pipeline import io as pio  # noqa: F401 - the same imports as the other children

    if mode == "copy":
        emb, _ = pio.read_embeddings(folder / "streamed.parquet")
        targets = emb.copy()  # what each rank held before: the table's buffer and a writable copy
    else:
        targets = np.load(folder / "streamed.npy", mmap_mode="r")
    rng = np.random.default_rng(0)
    for _ in range(batches):
        np.asarray(targets[np.sort(rng.choice(len(targets), batch, replace=False))], np.float32)
    np.asarray(targets[::64]).sum()  # touch every part of the file, as a long run does
    return {"peak_rss_gib": round(peak_rss_gib(), 2), "pss_gib": round(pss_gib(), 2)}


def imports_only() -> dict:
    from pipeline import io as pio  # noqa: F401 - numpy, pyarrow, polars: what every child holds anyway

    return {"peak_rss_gib": round(peak_rss_gib(), 2)}


def child(task: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "pipeline.benchmark_memory", "--child", task, *args],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_024_934)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, folder, *rest = args.child
        tasks = {"imports": imports_only,
                 "whole": lambda: write_whole(args.rows, args.dim, Path(folder)),
                 "streamed": lambda: write_streamed(args.rows, args.dim, Path(folder), args.chunk),
                 "rank": lambda: rank_setup(Path(folder), rest[0], 200, 128)}
        print(json.dumps(tasks[task]()))
        return
    size = args.rows * args.dim * 4 / GiB
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        base = child("imports", tmp)["peak_rss_gib"]
        print(f"teacher features {args.rows:,} x {args.dim} float32 = {size:.2f} GiB; a process that only "
              f"imports the pipeline: {base:.2f} GiB")
        for task in ("whole", "streamed"):
            r = child(task, tmp, "--rows", str(args.rows), "--dim", str(args.dim), "--chunk", str(args.chunk))
            print(f"  write, {task:<8}: {r['seconds']:6.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB "
                  f"(above the imports: {(r['peak_rss_gib'] - base) / size:.2f}x the data)")
        for mode in ("copy", "mmap"):
            procs = [subprocess.Popen([sys.executable, "-m", "pipeline.benchmark_memory", "--child", "rank", tmp, mode],
                                      stdout=subprocess.PIPE, text=True) for _ in range(2)]
            ranks = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            rss = ", ".join(f"{r['peak_rss_gib']:.2f}" for r in ranks)
            pss = ", ".join(f"{r['pss_gib']:.2f}" for r in ranks)
            together = (sum(r["pss_gib"] for r in ranks) - 2 * base) / size
            print(f"  2 ranks, {mode:<4}: peak RSS {rss} GiB, PSS {pss} GiB (both, above the imports: "
                  f"{together:.2f}x the data)")


if __name__ == "__main__":
    main()
