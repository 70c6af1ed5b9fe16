"""How the stages search: `index.*` and `runtime.device` turned into one `SearchSettings`."""
from __future__ import annotations

from pipeline.config import Params
from pipeline.lib.retrieval import SearchSettings


def search_device(params: Params) -> str:
    """'cpu' or 'cuda': `index.device`, where 'auto' follows `runtime.device` ('auto' there too:
    CUDA when a GPU is visible). Only a flat index is searched on the GPU (exactly, with torch);
    FAISS searches an approximate one on the CPU (GPU FAISS is not installed)."""
    device = params.runtime.device if params.index.device == "auto" else params.index.device
    if params.index.kind != "flat" or device == "cpu":
        return "cpu"
    import torch  # only here: the CPU path of the light stages never loads torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("index.device=cuda (or runtime.device=cuda) but no CUDA device is visible")
    return "cuda" if torch.cuda.is_available() else "cpu"


def search_settings(params: Params, device: str | None = None) -> SearchSettings:
    """The settings every search of the index and evaluate stages (and `search`) uses; `device`
    None: `search_device`."""
    return SearchSettings(nprobe=params.index.nprobe, ef_search=params.index.ef_search,
                          device=device or search_device(params))
