"""The `index` and `evaluate` stages' own code paths on approximate indices: every search honours
index.nprobe / index.ef_search, the recall check samples its queries, the GPU path agrees with FAISS."""
from __future__ import annotations

import faiss
import numpy as np
import polars as pl
import pytest

from pipeline.config import EvalSetCfg, load_params
from pipeline.lib import retrieval
from pipeline.stages import evaluate, index as index_stage
from pipeline.stages.common import eval_sets
from pipeline.stages.searching import search_settings
from tests.test_retrieval import assert_same_neighbours


def synthetic_sets(seed: int = 0) -> dict[tuple[str, str], tuple[np.ndarray, pl.DataFrame]]:
    """(dataset, split) → (embeddings, table): 'self' (queries = gallery, 60 classes of ~25) and
    'shop' (300 queries against a gallery of 2,000). In 'shop' every gallery image is its own class
    and a query belongs to the class of its exact nearest gallery image, so top-1 of a search is
    exactly its recall@1 against exact search."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 60, 1500)
    self_emb = retrieval.l2_normalize(rng.normal(size=(60, 16))[labels] + 1.2 * rng.normal(size=(1500, 16)))
    gallery = retrieval.l2_normalize(rng.normal(size=(2000, 16)))
    queries = retrieval.l2_normalize(rng.normal(size=(300, 16)))
    nearest = retrieval.search(retrieval.build_index(gallery), queries, 1)[1][:, 0]

    def table(ids, labels):
        return pl.DataFrame({"id": np.asarray(ids, np.int64) + 10_000, "label": np.asarray(labels, np.int64),
                             "subset": [None] * len(ids)}, schema={"id": pl.Int64, "label": pl.Int64, "subset": pl.Utf8})
    return {("self", "test"): (self_emb, table(np.arange(1500), labels)),
            ("shop", "index"): (gallery, table(np.arange(2000), np.arange(2000))),
            ("shop", "query"): (queries, table(np.arange(2000, 2300), nearest))}


@pytest.fixture
def sets():
    data = synthetic_sets()
    return lambda dataset, split: data[(dataset, split)]


def params_for(params_file, *overrides: str, k: int = 20):
    params = load_params(params_file, list(overrides))
    params.eval.k, params.eval.ks = k, sorted({1, k})
    params.eval.in_domain = {"self": EvalSetCfg(dataset="self", split="test")}
    params.eval.out_of_domain = {"shop": EvalSetCfg(dataset="shop", split="query", index_split="index")}
    return params


def stored_indices(params, load, tmp_path) -> tuple[evaluate.IndexLoader, dict]:
    """The index stage's indices of every set, through a file as `evaluate` reads them, and its report."""
    report = {}
    for name, (_, cfg) in eval_sets(params).items():
        built, report[name] = index_stage.set_index(params, load, cfg, search_settings(params))
        faiss.write_index(built, str(tmp_path / f"{name}.faiss"))
    return (lambda name: faiss.read_index(str(tmp_path / f"{name}.faiss"))), report


def test_evaluate_probing_every_list_gives_the_exact_metrics(tiny_params_file, sets, tmp_path) -> None:
    exact = evaluate.image_image(params_for(tiny_params_file), sets, "flat")
    everything = params_for(tiny_params_file, "index.kind=ivf", "index.nlist=32", "index.nprobe=32")
    indices, _ = stored_indices(everything, sets, tmp_path)
    assert evaluate.image_image(everything, sets, "ivf", indices, search_settings(everything)) == exact
    # FAISS's own default (one list), what evaluate searched before it passed index.nprobe: not exact
    one = params_for(tiny_params_file, "index.kind=ivf", "index.nlist=32", "index.nprobe=1")
    coarse = evaluate.image_image(one, sets, "ivf", indices, search_settings(one))
    assert coarse["shop"]["top_1"] < exact["shop"]["top_1"] == 1.0
    assert coarse["self"]["map@r"] != exact["self"]["map@r"]  # (one list holds mostly one class: it may score higher)


def test_evaluate_agrees_with_the_recall_the_index_stage_recorded(tiny_params_file, sets, tmp_path) -> None:
    recorded = {}
    for nprobe in (1, 3):
        params = params_for(tiny_params_file, "index.kind=ivf", "index.nlist=32", f"index.nprobe={nprobe}", k=1)
        indices, report = stored_indices(params, sets, tmp_path)
        got = evaluate.image_image(params, sets, "ivf", indices, search_settings(params))
        assert report["shop"]["recall_queries"] == 300 and report["shop"]["nlist"] == 32
        # top-1 on 'shop' is the recall@1 of the very searches evaluate ran
        assert got["shop"]["top_1"] == report["shop"]["recall_vs_exact"]
        recorded[nprobe] = report["shop"]["recall_vs_exact"]
    assert recorded[1] < recorded[3] < 1.0  # the two settings are told apart


def test_recall_check_searches_at_most_recall_queries(tiny_params_file, sets) -> None:
    params = params_for(tiny_params_file, "index.kind=ivf", "index.nlist=32", "index.nprobe=4",
                        "index.recall_queries=120")
    stats = faiss.cvar.indexIVF_stats  # FAISS's count of the queries its IVF indices searched
    for name, queries in (("self", 1500), ("shop", 300)):
        stats.reset()
        _, entry = index_stage.set_index(params, sets, eval_sets(params)[name][1], search_settings(params))
        assert stats.nq == 120 and entry["recall_queries"] == 120 and 0 < entry["recall_vs_exact"] < 1
    assert np.array_equal(retrieval.sample_rows(1500, 120, 0), retrieval.sample_rows(1500, 120, 0))  # seeded
    assert len(np.unique(retrieval.sample_rows(1500, 120, 0))) == 120
    assert np.array_equal(retrieval.sample_rows(90, 120, 0), np.arange(90))


def test_hnsw_ef_search_reaches_every_search(tiny_params_file, sets, tmp_path) -> None:
    exact = evaluate.image_image(params_for(tiny_params_file), sets, "flat")
    results = {}
    for ef in (1, 400):
        params = params_for(tiny_params_file, "index.kind=hnsw", "index.hnsw_m=4", f"index.ef_search={ef}")
        indices, report = stored_indices(params, sets, tmp_path)
        results[ef] = (evaluate.image_image(params, sets, "hnsw", indices, search_settings(params)), report)
    (narrow, narrow_report), (wide, wide_report) = results[1], results[400]
    assert narrow_report["self"]["recall_vs_exact"] < wide_report["self"]["recall_vs_exact"]
    # the wide candidate list comes closer to the exact MAP@R than the narrow one
    assert abs(wide["self"]["map@r"] - exact["self"]["map@r"]) < abs(narrow["self"]["map@r"] - exact["self"]["map@r"])


def test_search_settings_follow_the_config(tiny_params_file) -> None:
    from pipeline.config import ConfigError

    params = load_params(tiny_params_file, ["index.kind=ivf", "index.nprobe=5", "index.ef_search=7"])
    settings = search_settings(params)
    assert (settings.nprobe, settings.ef_search, settings.device) == (5, 7, "cpu")
    assert settings.record("ivf") == {"device": "cpu", "nprobe": 5} and settings.record("flat") == {"device": "cpu"}
    # an approximate index is searched by FAISS on the CPU whatever the device says
    assert search_settings(load_params(tiny_params_file, ["index.kind=hnsw", "index.device=auto",
                                                          "runtime.device=cuda"])).device == "cpu"
    for override, message in (("index.nprobe=0", r"index\.nprobe: must be > 0"),
                              ("index.nprobe=65", r"index\.nprobe: 65 probes more lists than index\.nlist = 64"),
                              ("index.hnsw_m=1", r"index\.hnsw_m: must be >= 2"),
                              ("index.ef_search=0", r"index\.ef_search: must be > 0"),
                              ("index.recall_queries=0", r"index\.recall_queries: must be > 0"),
                              ("index.device=gpu", r"index\.device: 'gpu' is not one of")):
        with pytest.raises(ConfigError, match=message):
            load_params(tiny_params_file, [override])
    with pytest.raises(ConfigError, match=r"index\.device: cuda searches exactly .* needs index\.kind=flat"):
        load_params(tiny_params_file, ["index.kind=ivf", "index.device=cuda"])


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not cuda_available(), reason="no CUDA device: the GPU search path is checked on a GPU machine")
def test_gpu_search_gives_the_metrics_of_faiss_on_the_cpu(tiny_params_file, sets) -> None:
    params = params_for(tiny_params_file, "index.device=cuda")
    assert search_settings(params).device == "cuda"
    cpu = evaluate.image_image(params, sets, "cpu", settings=retrieval.SearchSettings(device="cpu"))
    gpu = evaluate.image_image(params, sets, "cuda", settings=search_settings(params))
    for name in cpu:
        assert gpu[name] == pytest.approx(cpu[name], abs=1e-6), name
    emb = sets("self", "test")[0]
    flat = retrieval.build_index(emb)
    scores, ids = retrieval.search(retrieval.on_device(flat, "cuda"), emb, 30)
    assert_same_neighbours(scores, ids, *retrieval.search(flat, emb, 30))  # up to near-ties of summation order
    mapped = retrieval.build_index(emb, ids=np.arange(len(emb)) + 7)
    assert np.array_equal(retrieval.search(retrieval.on_device(mapped, "cuda"), emb, 30)[1], ids + 7)
