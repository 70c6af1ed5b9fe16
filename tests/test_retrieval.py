"""FAISS kNN against a brute-force numpy reference; self-exclusion, chunking, approximate indices."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from pipeline.lib import retrieval


def brute_force(queries: np.ndarray, base: np.ndarray, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Full float64 similarity matrix, full argsort, query removed by identity."""
    sims = queries.astype(np.float64) @ base.astype(np.float64).T
    ids = []
    for q in range(len(sims)):
        order = [j for j in np.argsort(-sims[q], kind="stable") if not (exclude_self and j == q)]
        ids.append(order[:k])
    ids = np.array(ids, np.int64)
    return np.take_along_axis(sims, ids, 1), ids


def assert_same_neighbours(scores, ids, ref_scores, ref_ids, tol: float = 1e-5) -> None:
    """Scores equal; ids equal wherever the reference has no near-tie that float32 could swap."""
    assert ids.shape == ref_ids.shape and scores.dtype == np.float32 and ids.dtype == np.int64
    assert np.allclose(scores, ref_scores, atol=tol)
    gaps = np.abs(np.diff(ref_scores, axis=1))
    clear = np.ones(ref_ids.shape, bool)
    clear[:, 1:] &= gaps > tol
    clear[:, :-1] &= gaps > tol
    assert clear.mean() > 0.9 and np.array_equal(ids[clear], ref_ids[clear])


def test_l2_normalize() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    y = retrieval.l2_normalize(x)
    assert y.dtype == np.float32
    assert np.allclose(y, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])  # zero row stays zero, no NaN


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_matches_brute_force(seed: int, exclude_self: bool) -> None:
    rng = np.random.default_rng(seed)
    base = retrieval.l2_normalize(rng.normal(size=(int(rng.integers(50, 300)), 8)))
    queries = base if exclude_self else retrieval.l2_normalize(rng.normal(size=(40, 8)))
    k = int(rng.integers(1, 15))
    scores, ids = retrieval.knn(queries, base, k, exclude_self=exclude_self)
    assert_same_neighbours(scores, ids, *brute_force(queries, base, k, exclude_self))
    if exclude_self:
        assert not (ids == np.arange(len(ids))[:, None]).any()


def test_query_is_removed_even_when_a_duplicate_ties_with_it() -> None:
    # items 0 and 1 are the same vector: for both, the other one ties with the query itself
    emb = retrieval.l2_normalize(np.array([[1, 0], [1, 0], [0, 1], [0.9, 0.1]]))
    scores, ids = retrieval.knn(emb, emb, 2, exclude_self=True)
    assert ids.tolist()[:2] == [[1, 3], [0, 3]]
    assert np.allclose(scores[:2, 0], 1.0)
    for q in range(4):
        assert q not in ids[q]


def test_query_beyond_the_k_plus_1_ties_drops_the_last_column() -> None:
    # 6 identical vectors, k = 2: the query's own id may not even be among the 3 returned
    emb = retrieval.l2_normalize(np.concatenate([np.ones((6, 3)), np.eye(3)]))
    scores, ids = retrieval.knn(emb, emb, 2, exclude_self=True)
    assert ids.shape == (9, 2)
    for q in range(6):
        assert q not in ids[q] and set(ids[q]) <= set(range(6)) - {q} and len(set(ids[q])) == 2
        assert np.allclose(scores[q], 1.0)


def test_small_gallery_returns_every_other_item() -> None:
    rng = np.random.default_rng(0)
    emb = retrieval.l2_normalize(rng.normal(size=(5, 4)))
    scores, ids = retrieval.knn(emb, emb, 20, exclude_self=True)
    assert ids.shape == (5, 4)
    assert [sorted(r) for r in ids.tolist()] == [[j for j in range(5) if j != q] for q in range(5)]
    _, ids = retrieval.knn(emb[:2], emb, 20, exclude_self=False)
    assert ids.shape == (2, 5)
    with pytest.raises(ValueError):
        retrieval.knn(emb[:2], emb, 2, exclude_self=True)  # query set is not the index set


def test_chunking_changes_nothing() -> None:
    rng = np.random.default_rng(1)
    base = retrieval.l2_normalize(rng.normal(size=(500, 16)))
    index = retrieval.build_index(base)
    whole = retrieval.knn(base, base, 9, exclude_self=True, index=index)
    for chunk in (32, 77):
        chunked = retrieval.knn(base, base, 9, exclude_self=True, index=index, chunk_size=chunk)
        assert np.array_equal(whole[1], chunked[1]) and np.allclose(whole[0], chunked[0], atol=1e-6)
    s, i = retrieval.search(index, base[:100], 5, chunk_size=30)
    assert s.shape == i.shape == (100, 5) and np.array_equal(i, retrieval.search(index, base[:100], 5)[1])


def test_search_clips_k_and_pads_unfilled_ids() -> None:
    rng = np.random.default_rng(2)
    base = retrieval.l2_normalize(rng.normal(size=(10, 4)))
    s, i = retrieval.search(retrieval.build_index(base), base, 50)
    assert s.shape == i.shape == (10, 10) and s.dtype == np.float32 and i.dtype == np.int64
    # IVF probing one of several lists cannot fill k = ntotal: FAISS's -1 is kept
    base = retrieval.l2_normalize(rng.normal(size=(400, 4)))
    ivf = retrieval.build_index(base, "ivf", nlist=8)
    _, i = retrieval.search(ivf, base, 400, settings=retrieval.SearchSettings(nprobe=1))
    assert i.shape == (400, 400) and (i == -1).any() and i.min() == -1
    _, i = retrieval.search(ivf, base, 400, settings=retrieval.SearchSettings(nprobe=8))
    assert (i >= 0).all()
    assert ivf.nprobe == 1  # FAISS's default, untouched: nprobe is a per-call parameter


def test_build_index_kinds() -> None:
    rng = np.random.default_rng(3)
    base = retrieval.l2_normalize(rng.normal(size=(200, 8)))
    assert isinstance(retrieval.build_index(base), faiss.IndexFlatIP)
    ivf = retrieval.build_index(base, "ivf", nlist=64)
    assert ivf.nlist == 200 // 39 and ivf.metric_type == faiss.METRIC_INNER_PRODUCT and ivf.ntotal == 200
    assert retrieval.build_index(base[:20], "ivf").nlist == 1
    hnsw = retrieval.build_index(base, "hnsw", hnsw_m=8)
    assert hnsw.ntotal == 200 and hnsw.metric_type == faiss.METRIC_INNER_PRODUCT
    with pytest.raises(ValueError, match="lsh"):
        retrieval.build_index(base, "lsh")


def test_recall_against_exact() -> None:
    assert retrieval.recall_against_exact(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])) == pytest.approx(2 / 3)
    # -1 never matches; per-query fractions are averaged: (1/2 + 1) / 2
    approx, exact = np.array([[-1, 5], [7, 8]]), np.array([[5, 6], [8, 7]])
    assert retrieval.recall_against_exact(approx, exact) == pytest.approx(0.75)
    # an unfilled exact slot is not something to find: only id 5 counts
    assert retrieval.recall_against_exact(np.array([[-1, 5]]), np.array([[5, -1]])) == 1.0
    assert retrieval.recall_against_exact(np.array([[-1, 4]]), np.array([[5, -1]])) == 0.0
    rng = np.random.default_rng(4)
    base = retrieval.l2_normalize(rng.normal(size=(2000, 16)))
    exact = retrieval.search(retrieval.build_index(base, "flat"), base, 10)[1]
    assert retrieval.recall_against_exact(exact, exact) == 1.0
    for kind, nprobe in (("ivf", 1), ("hnsw", None)):
        approx = retrieval.search(retrieval.build_index(base, kind, nlist=32), base, 10,
                                  settings=retrieval.SearchSettings(nprobe=nprobe))[1]
        r = retrieval.recall_against_exact(approx, exact)
        assert 0.0 <= r <= 1.0
        # reference: a set intersection per query
        ref = np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx.tolist(), exact.tolist())])
        assert r == pytest.approx(ref)
    assert retrieval.recall_against_exact(approx, exact, chunk_size=7) == pytest.approx(r)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_id_mapped_index_answers_with_ids_and_unwraps_to_positions(kind: str, tmp_path) -> None:
    rng = np.random.default_rng(5)
    base = retrieval.l2_normalize(rng.normal(size=(300, 8)))
    ids = rng.permutation(10_000)[:300].astype(np.int64)  # manifest ids: neither dense nor sorted
    mapped = retrieval.build_index(base, kind, nlist=4, ids=ids)
    assert isinstance(mapped, faiss.IndexIDMap2)
    faiss.write_index(mapped, str(tmp_path / "set.faiss"))
    stored = faiss.read_index(str(tmp_path / "set.faiss"))
    assert np.array_equal(retrieval.index_ids(stored), ids)
    plain = retrieval.build_index(base, kind, nlist=4)
    by_id = retrieval.search(stored, base, 5, settings=retrieval.SearchSettings(nprobe=4))
    by_position = retrieval.search(plain, base, 5, settings=retrieval.SearchSettings(nprobe=4))
    assert np.array_equal(by_id[1], ids[by_position[1]]) and np.allclose(by_id[0], by_position[0])
    # evaluation's view: positions again, after checking the index holds exactly these rows
    inner = retrieval.positional(stored, ids)
    del stored  # the unwrapped index keeps its owner alive
    assert np.array_equal(retrieval.search(inner, base, 5, settings=retrieval.SearchSettings(nprobe=4))[1], by_position[1])
    with pytest.raises(ValueError, match="rebuild the index"):
        retrieval.positional(faiss.read_index(str(tmp_path / "set.faiss")), ids[::-1])
    with pytest.raises(ValueError, match="one id per embedding"):
        retrieval.build_index(base, kind, ids=ids[:5])


def test_nprobe_reaches_an_id_mapped_ivf_index() -> None:
    rng = np.random.default_rng(6)
    base = retrieval.l2_normalize(rng.normal(size=(400, 4)))
    ivf = retrieval.build_index(base, "ivf", nlist=8, ids=np.arange(400) + 1000)
    _, i = retrieval.search(ivf, base, 400, settings=retrieval.SearchSettings(nprobe=1))
    assert (i == -1).any()
    _, i = retrieval.search(ivf, base, 400, settings=retrieval.SearchSettings(nprobe=8))
    assert (i >= 1000).all()


def test_neighbours_of_some_rows_equal_their_rows_of_the_full_knn() -> None:
    rng = np.random.default_rng(7)
    emb = retrieval.l2_normalize(rng.normal(size=(120, 8)))
    emb[11] = emb[40]  # a duplicate: its twin, not itself, may rank first
    rows = np.array([40, 3, 11, 119])
    scores, ids = retrieval.neighbours_of(rows, emb, 6)
    full_scores, full_ids = retrieval.knn(emb, emb, 6, exclude_self=True)
    assert np.array_equal(ids, full_ids[rows]) and np.allclose(scores, full_scores[rows])
    assert not (ids == rows[:, None]).any()
