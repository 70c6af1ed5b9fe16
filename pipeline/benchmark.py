"""`python -m pipeline.benchmark`: the cost of each paper stage on this machine, printed.

- images/s of feature extraction (eval forward, no grad) and of a fine-tuning step (forward +
  backward + AdamW) for the paper's backbone (open_clip ViT-B-16-SigLIP, random weights: speed does
  not depend on them) and the embedded teacher's tower;
- seconds and peak resident memory (process, so including the interpreter) of exact kNN (FAISS Flat, chunked) + the retrieval metrics at
  10k, 60k and 140k queries of synthetic 768-d embeddings (SOP test is 60k, iNaturalist's 136k).

Options: --device cpu|cuda, --sizes 10000 60000 140000, --batch 32, --skip-models.
Figures are printed as a table; nothing is asserted (speed belongs in benchmarks, not tests).
"""
from __future__ import annotations

import argparse
import time

import resource

import numpy as np
import torch

from pipeline.lib.models import autocast, embed_images, embedded_model_cfg, set_threads


def _peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def paper_visual() -> tuple[torch.nn.Module, int]:
    import open_clip
    model = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None)
    return model.visual, 224


def embedded_visual() -> tuple[torch.nn.Module, int]:
    from open_clip.model import CLIPVisionCfg, _build_vision_tower
    cfg = embedded_model_cfg(32, 4, 128, 3, 32)
    return _build_vision_tower(cfg["embed_dim"], CLIPVisionCfg(**cfg["vision_cfg"])), 32


def throughput(visual: torch.nn.Module, size: int, batch: int, device: torch.device, precision: str,
               train: bool, repeats: int) -> float:
    """Images per second of eval embedding (train=False) or a full AdamW step (train=True)."""
    visual = visual.to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    opt = torch.optim.AdamW(visual.parameters(), lr=1e-5) if train else None

    def once() -> None:
        if train:
            visual.train()
            with autocast(device, precision):
                loss = embed_images(visual, x).float().pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            visual.eval()
            with torch.no_grad(), autocast(device, precision):
                embed_images(visual, x)

    once()  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def knn_cost(n: int, dim: int = 768, classes: int | None = None, k: int = 20) -> tuple[float, float]:
    """(seconds, peak RSS GiB) of exact kNN + metrics with n queries = gallery (query excluded)."""
    rng = np.random.default_rng(0)
    classes = classes or max(2, n // 5)  # SOP-like: ~5 images per class
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    emb = centres[labels] + 2.0 * rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    from pipeline.lib.evaluation import knn_retrieval  # FAISS: imported only when kNN is measured

    start = time.perf_counter()
    knn_retrieval(emb, labels, k, [1, 5, 10, 20])
    return time.perf_counter() - start, _peak_rss_gib()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 60_000, 140_000],
                        help="kNN query counts to time (none: skip kNN)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--skip-models", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}")
    # kNN first, smallest size first: the process's peak RSS after each size is that size's peak
    if args.sizes:
        print(f"{'queries':>8} {'kNN+metrics s':>14} {'peak RSS GiB':>13}")
    for n in sorted(args.sizes):
        seconds, rss = knn_cost(n)
        print(f"{n:8d} {seconds:14.1f} {rss:13.2f}")
    if not args.skip_models:
        print(f"{'model':<22} {'precision':<9} {'embed img/s':>12} {'train img/s':>12}")
        precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
        for name, build in (("ViT-B-16-SigLIP (224)", paper_visual), ("embedded ViT (32)", embedded_visual)):
            for precision in precisions:
                visual, size = build()
                emb = throughput(visual, size, args.batch, device, precision, False, args.repeats)
                trn = throughput(visual, size, args.batch, device, precision, True, args.repeats)
                print(f"{name:<22} {precision:<9} {emb:12.1f} {trn:12.1f}")


if __name__ == "__main__":
    main()
