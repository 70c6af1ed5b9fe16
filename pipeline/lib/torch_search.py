"""Exact inner-product top-k on a CUDA GPU with torch: the GPU path of `retrieval.search`.

GPU FAISS is not installed (and caps k at 2048, which MAP@R of a large class exceeds), so a flat
index is copied to the GPU once and searched as chunked matmul + `torch.topk` in full float32
(TF32 off for the duration: scores stay those of the CPU up to summation order).
"""
from __future__ import annotations

from contextlib import contextmanager

import faiss
import numpy as np
import torch

SCORE_BUDGET = 2 ** 28  # query × gallery scores held at once on the GPU: 1 GiB of float32
COPY_ROWS = 65_536      # gallery rows copied to the GPU per step (bounds the host-side copy)


@contextmanager
def full_fp32():
    """float32 matmuls in IEEE precision (no TF32), restoring the caller's setting afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class TorchFlatIP:
    """A flat inner-product index held on the GPU, searched like a FAISS index (`ntotal`, `search`)."""

    def __init__(self, vectors: torch.Tensor, ids: np.ndarray | None = None):
        self.vectors = vectors
        self.ids = ids
        self.ntotal = int(vectors.shape[0])

    @classmethod
    def of(cls, index: faiss.Index) -> "TorchFlatIP":
        """The GPU copy of a flat FAISS index (an `IndexIDMap2` keeps answering with its ids)."""
        if not torch.cuda.is_available():
            raise RuntimeError("GPU search asked for (index.device / runtime.device = cuda) but no CUDA device is visible")
        ids = faiss.vector_to_array(index.id_map) if isinstance(index, faiss.IndexIDMap) else None
        flat = faiss.downcast_index(index.index) if ids is not None else index
        if not isinstance(flat, faiss.IndexFlat) or flat.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"GPU search is exact and needs a flat inner-product index, not {type(flat).__name__}: "
                             "use index.kind=flat, or index.device=cpu for an approximate index")
        vectors = torch.empty((flat.ntotal, flat.d), dtype=torch.float32, device="cuda")
        for start in range(0, flat.ntotal, COPY_ROWS):
            stop = min(start + COPY_ROWS, flat.ntotal)
            vectors[start:stop] = torch.from_numpy(flat.reconstruct_n(start, stop - start)).cuda()
        return cls(vectors, ids)

    def search(self, queries: np.ndarray, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the top k, best first; `params` (FAISS's) has nothing to set here."""
        rows = max(1, SCORE_BUDGET // max(1, self.ntotal))
        scores, positions = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
        with torch.no_grad(), full_fp32():
            for start in range(0, len(queries), rows):
                q = torch.from_numpy(np.ascontiguousarray(queries[start:start + rows], np.float32)).cuda()
                top = torch.topk(q @ self.vectors.T, k, dim=1, largest=True, sorted=True)
                scores[start:start + rows] = top.values.cpu().numpy()
                positions[start:start + rows] = top.indices.cpu().numpy()
        return scores, (positions if self.ids is None else self.ids[positions])
