"""Metrics against a slow, obviously-correct reference and hand-computed cases (METHOD §7.1)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.lib import metrics, retrieval


# ----------------------------------------------------------------------------- the slow reference
def ref_query(rel: list[int], n_q: int, k: int) -> dict[str, float]:
    """One query, straight from the definitions, with plain loops."""
    m = min(n_q, k)
    out = {"top_1": float(rel[0]) if rel else 0.0}
    if m == 0:
        out.update(mmp=0.0, map=0.0)
    else:
        out["mmp"] = sum(rel[:m]) / m
        total, hits = 0.0, 0
        for r in range(1, min(k, len(rel)) + 1):
            if rel[r - 1]:
                hits += 1
                total += hits / r
        out["map"] = total / m
    out["recall"] = float(any(rel[:k]))
    total, hits = 0.0, 0
    for r in range(1, min(n_q, len(rel)) + 1):
        if rel[r - 1]:
            hits += 1
            total += hits / r
    out["map_r"] = total / n_q if n_q else 0.0
    return out


def ref_knn(emb: np.ndarray, labels: np.ndarray, k: int) -> tuple[list[list[int]], list[int]]:
    """Full similarity matrix, stable sort, query removed by identity."""
    sims = emb @ emb.T
    rels, npos = [], []
    for q in range(len(emb)):
        order = [i for i in np.argsort(-sims[q], kind="stable") if i != q][:k]
        rels.append([int(labels[i] == labels[q]) for i in order])
        npos.append(int(sum(labels[i] == labels[q] for i in range(len(emb)) if i != q)))
    return rels, npos


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_metrics_match_the_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(30, 120)), int(rng.integers(3, 25))
    labels = rng.integers(0, int(rng.integers(3, 40)), n)  # many queries with n_q < k, some with n_q = 0
    emb = retrieval.l2_normalize(rng.normal(size=(n, 16)).astype(np.float32))
    _, ids = retrieval.knn(emb, emb, k, exclude_self=True)
    rel = metrics.relevance(labels, labels, ids)
    n_pos = metrics.count_positives(labels, labels, exclude_self=True)
    ref_rel, ref_npos = ref_knn(emb, labels, k)
    assert rel.astype(int).tolist() == ref_rel and n_pos.tolist() == ref_npos
    got = metrics.ranking_metrics(rel, n_pos, ks=(k,), with_map_at_r=True)
    per = [ref_query(r, q, k) for r, q in zip(ref_rel, ref_npos)]
    for key, ref_key in (("top_1", "top_1"), (f"mmp@{k}", "mmp"), (f"map@{k}", "map"), (f"recall@{k}", "recall")):
        assert got[key] == pytest.approx(np.mean([p[ref_key] for p in per]), abs=1e-12)
    assert got["map@r"] == pytest.approx(np.mean([p["map_r"] for p in per]), abs=1e-12)


def test_hand_computed_case() -> None:
    # rel = [1,0,1,0,0], n_q = 2, k = 5:
    #   mMP@5 = precision at rank min(2,5)=2 = 1/2
    #   mAP@5 = (1/2)·(P@1·1 + P@3·1) = (1/2)·(1 + 2/3) = 5/6
    rel = np.array([[1, 0, 1, 0, 0]], bool)
    m = metrics.ranking_metrics(rel, np.array([2]), ks=(5,))
    assert m["top_1"] == 1.0 and m["mmp@5"] == pytest.approx(0.5) and m["map@5"] == pytest.approx(5 / 6)
    # a query with 3 positives is judged on its top 3 only: [0,1,1 | 1,...] → mMP = 2/3
    rel = np.array([[0, 1, 1, 1, 0]], bool)
    assert metrics.ranking_metrics(rel, np.array([3]), ks=(5,))["mmp@5"] == pytest.approx(2 / 3)
    # n_q = 0: every metric is 0, not NaN
    zero = metrics.ranking_metrics(np.zeros((1, 5), bool), np.array([0]), ks=(5,), with_map_at_r=True)
    assert all(v == 0.0 for v in zero.values())
    # n_q >= k: mMP@k is plain precision@k
    rel = np.array([[1, 1, 0, 1]], bool)
    assert metrics.ranking_metrics(rel, np.array([10]), ks=(4,))["mmp@4"] == pytest.approx(0.75)


def test_query_is_removed_even_when_a_duplicate_ties_with_it() -> None:
    emb = retrieval.l2_normalize(np.array([[1, 0], [1, 0], [0, 1], [0.9, 0.1]], np.float32))
    _, ids = retrieval.knn(emb, emb, 2, exclude_self=True)
    for q in range(4):
        assert q not in ids[q]
    assert set(ids[0]) == {1, 3} and set(ids[1]) == {0, 3}


def test_merged_index_needs_same_label_and_same_domain() -> None:
    labels = np.array([0, 0, 0, 1])
    domains = np.array([0, 0, 1, 0])  # item 2 has label 0 but lives in another dataset
    ids = np.array([[2, 1, 3]])
    rel = metrics.relevance(labels[:1], labels, ids, domains[:1], domains)
    assert rel.tolist() == [[False, True, False]]
    n_pos = metrics.count_positives(labels[:1], labels, True, domains[:1], domains)
    assert n_pos.tolist() == [1]


def test_image_text_recall_with_several_captions_per_image() -> None:
    images = np.eye(3, dtype=np.float32)
    # captions 0,1 → image 0; caption 2 → image 1; caption 3 → image 2 (but closest to image 0)
    texts = retrieval.l2_normalize(np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.8, 0, 0.6]], np.float32))
    owner = np.array([0, 0, 1, 2])
    m = metrics.image_text_recall(images, texts, owner, ks=(1, 2))
    # I→T: image 0 best = caption 0 (own) ✓; image 1 best = caption 2 ✓; image 2 best = caption 3 ✓
    assert m["i2t_r@1"] == 1.0
    # T→I: caption 3's best image is 0 (0.8 > 0.6) ✗ at 1, ✓ at 2
    assert m["t2i_r@1"] == pytest.approx(0.75) and m["t2i_r@2"] == 1.0
    assert m["mean_r@1"] == pytest.approx((1.0 + 0.75) / 2)


def test_ties_count_optimistically_and_deterministically() -> None:
    images = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)  # identical images
    texts = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    m = metrics.image_text_recall(images, texts, np.array([0, 1]), ks=(1,))
    assert m["i2t_r@1"] == 1.0 and m["t2i_r@1"] == 1.0


def test_zero_shot_accuracy() -> None:
    prompts = np.eye(3, dtype=np.float32)
    images = np.array([[0.9, 0.1, 0], [0, 0.2, 0.8], [0.6, 0.4, 0]], np.float32)
    assert metrics.zero_shot_accuracy(images, prompts, np.array([0, 2, 1])) == pytest.approx(2 / 3)


def test_knn_matches_brute_force_and_chunking_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    base = retrieval.l2_normalize(rng.normal(size=(300, 8)))
    queries = retrieval.l2_normalize(rng.normal(size=(50, 8)))
    _, ids = retrieval.knn(queries, base, 7, exclude_self=False)
    ref = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :7]
    assert (ids == ref).mean() > 0.99  # equal up to float ties
    _, chunked = retrieval.knn(queries, base, 7, exclude_self=False, chunk_size=8)
    assert np.array_equal(ids, chunked)


def test_approximate_index_recall_is_measured() -> None:
    rng = np.random.default_rng(1)
    base = retrieval.l2_normalize(rng.normal(size=(2000, 16)))
    exact = retrieval.search(retrieval.build_index(base, "flat"), base, 10)[1]
    assert retrieval.recall_against_exact(exact, exact) == 1.0
    approx = retrieval.search(retrieval.build_index(base, "ivf", nlist=32), base, 10, nprobe=1)[1]
    assert 0.0 < retrieval.recall_against_exact(approx, exact) < 1.0
    with pytest.raises(ValueError, match="lsh"):
        retrieval.build_index(base, "lsh")
