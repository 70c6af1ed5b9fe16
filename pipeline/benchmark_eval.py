"""`python -m pipeline.benchmark_eval`: what exact evaluation costs next to one bare search, printed.

- one bare search of 20k x 768-d at k = 21, 101, 513, 1025, 2049: what a deeper list costs (the
  cost model `pipeline.lib.evaluation.width_groups` uses);
- 20k queries x 768-d (queries = gallery, each query excluded from its own list, as in `evaluate`)
  with ~100 and ~10 images per class: seconds of one bare search (FAISS `IndexFlatIP`, k = 21, in
  the chunks evaluation uses), of the whole evaluation (`knn_retrieval`: every metric, MAP@R
  exact) and their ratio, with the widths the queries were searched at. Wall and CPU seconds (of
  this process, all threads): on a shared machine the wall clock also counts the others' work, so
  the ratio is taken of CPU seconds (of wall seconds on a GPU, whose work no CPU clock sees);
- the whole evaluation at 200k queries, in a fresh process: seconds, peak resident memory and the
  size of the embeddings themselves.

Options: --queries 20000, --widths 21 101 513 1025 2049, --per-class 100 10, --large 200000,
--large-per-class 100, --threads 2, --repeats 3 (the run of least time counts), --device cpu|cuda.
Synthetic embeddings (class centres + noise, L2-normalised); nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import faiss
import numpy as np

from pipeline.lib import metrics, retrieval
from pipeline.lib.evaluation import knn_retrieval, width_groups

DIM, K, KS = 768, 20, (1, 5, 10, 20)


def embeddings(n: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [n, DIM] unit rows, labels): n // per_class classes drawn uniformly per image, so
    class sizes vary around per_class; built in chunks, so memory is the array and little more."""
    rng = np.random.default_rng(seed)
    classes = max(2, n // per_class)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, DIM), dtype=np.float32)
    emb = np.empty((n, DIM), np.float32)
    for start in range(0, n, 16_384):
        rows = slice(start, min(start + 16_384, n))
        emb[rows] = centres[labels[rows]] + 2.0 * rng.standard_normal((rows.stop - start, DIM), dtype=np.float32)
        emb[rows] /= np.linalg.norm(emb[rows], axis=1, keepdims=True)
    return emb, labels


def timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of run()."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def bare_search(emb: np.ndarray, device: str, k: int = K + 1) -> tuple[float, float]:
    """Seconds of one search of every row at k (K + 1: the query itself comes back too), no metrics."""
    index = faiss.IndexFlatIP(DIM)
    index.add(emb)
    index = retrieval.on_device(index, device)
    return timed(lambda: retrieval.search(index, emb, k))


def evaluation(emb: np.ndarray, labels: np.ndarray, device: str) -> tuple[float, float]:
    """Seconds of the whole image-image evaluation (index built, searched, every metric)."""
    return timed(lambda: knn_retrieval(emb, labels, K, KS, settings=retrieval.SearchSettings(device=device)))


def clock(device: str) -> tuple[str, int]:
    """(name, position in a `timed` pair) of the clock ratios are taken of: CPU seconds on the CPU
    (the wall clock of a shared machine counts the others' work too), wall seconds on a GPU (whose
    work no CPU clock sees)."""
    return ("wall", 0) if device == "cuda" else ("CPU", 1)


def width_table(n: int, ks: list[int], device: str) -> None:
    emb, _ = embeddings(n, 100)
    name, at = clock(device)
    print(f"{'k':>6} {'wall s':>7} {'CPU s':>7} {f'x k = {ks[0]} ({name})':>17}")
    base = None
    for k in ks:
        times = bare_search(emb, device, k)
        base = base or times[at]
        print(f"{k:>6} {times[0]:>7.2f} {times[1]:>7.2f} {times[at] / base:>17.2f}")


def searched_widths(labels: np.ndarray) -> str:
    groups = width_groups(metrics.count_positives(labels, labels, True), K)
    return ", ".join(f"{len(rows):,} at {width}" for rows, width in groups)


def ratio_table(n: int, per_classes: list[int], repeats: int, device: str) -> None:
    name, at = clock(device)
    print(f"{'per class':>9} {'bare wall s':>11} {'bare CPU s':>10} {'eval wall s':>11} {'eval CPU s':>10} "
          f"{f'ratio ({name})':>12}  searched (queries at width)")
    for per_class in per_classes:
        emb, labels = embeddings(n, per_class)
        bare, full = [], []
        for _ in range(repeats):  # interleaved: both see the same machine
            bare.append(bare_search(emb, device))
            full.append(evaluation(emb, labels, device))
        bare, full = min(bare, key=lambda t: t[at]), min(full, key=lambda t: t[at])
        print(f"{per_class:>9} {bare[0]:>11.2f} {bare[1]:>10.2f} {full[0]:>11.2f} {full[1]:>10.2f} "
              f"{full[at] / bare[at]:>12.2f}  {searched_widths(labels)}")


def _rss_gib() -> float:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 2 ** 20


def one_large(n: int, per_class: int, device: str) -> dict:
    """The whole evaluation of n queries in this process: what `--large` runs in a child."""
    emb, labels = embeddings(n, per_class)
    before = _rss_gib()
    seconds, cpu = evaluation(emb, labels, device)
    return {"queries": n, "seconds": seconds, "cpu_seconds": cpu, "data_gib": emb.nbytes / 2 ** 30, "rss_before_gib": before,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def large_row(n: int, per_class: int, threads: int, device: str) -> None:
    child = subprocess.run([sys.executable, "-m", "pipeline.benchmark_eval", "--one", str(n), str(per_class),
                            "--threads", str(threads), "--device", device], capture_output=True, text=True, check=True)
    r = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"{'queries':>8} {'per class':>9} {'eval wall s':>11} {'eval CPU s':>10} {'embeddings GiB':>14} "
          f"{'RSS before GiB':>14} {'peak RSS GiB':>12} {'peak / embeddings':>17}")
    print(f"{r['queries']:>8,} {per_class:>9} {r['seconds']:>11.1f} {r['cpu_seconds']:>10.1f} {r['data_gib']:>14.2f} "
          f"{r['rss_before_gib']:>14.2f} {r['peak_gib']:>12.2f} {r['peak_gib'] / r['data_gib']:>17.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--widths", type=int, nargs="*", default=[21, 101, 513, 1025, 2049])
    parser.add_argument("--per-class", type=int, nargs="*", default=[100, 10])
    parser.add_argument("--large", type=int, default=200_000, help="0: skip the large run")
    parser.add_argument("--large-per-class", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--one", type=int, nargs=2, metavar=("N", "PER_CLASS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one_large(*args.one, args.device)))
        return
    print(f"device {args.device}, FAISS threads {args.threads}, {DIM}-d, k = {K}, "
          f"the run of least {clock(args.device)[0]} time of {args.repeats}")
    if args.widths:
        width_table(args.queries, args.widths, args.device)
    if args.per_class:
        ratio_table(args.queries, args.per_class, args.repeats, args.device)
    if args.large:
        large_row(args.large, args.large_per_class, args.threads, args.device)


if __name__ == "__main__":
    main()
