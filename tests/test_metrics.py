"""Metrics against slow, obviously-correct reference loops and hand-computed cases (docs/method.md#metrics)."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from pipeline.lib import metrics, retrieval


# ----------------------------------------------------------------------------- slow references
def ref_query(rel: list[int], n_q: int, k: int) -> dict[str, float]:
    """One query straight from the definitions, with plain loops (rel may be shorter than k)."""
    m = min(n_q, k)
    out = {"top_1": float(rel[0]) if rel else 0.0, "recall": 0.0, "mmp": 0.0, "map": 0.0, "map_r": 0.0}
    for r in range(1, k + 1):
        if r <= len(rel) and rel[r - 1]:
            out["recall"] = 1.0
    if m > 0:
        out["mmp"] = sum(rel[r - 1] for r in range(1, m + 1) if r <= len(rel)) / m
        total = 0.0
        for r in range(1, k + 1):
            if r <= len(rel) and rel[r - 1]:
                total += sum(rel[:r]) / r
        out["map"] = total / m
    if n_q > 0:  # MAP@R: R = n_q; ranks past the list are misses but we still divide by R
        total = 0.0
        for r in range(1, n_q + 1):
            if r <= len(rel) and rel[r - 1]:
                total += sum(rel[:r]) / r
        out["map_r"] = total / n_q
    return out


def ref_relevance(q_lab, i_lab, ids, q_dom=None, i_dom=None) -> list[list[bool]]:
    out = []
    for q in range(len(q_lab)):
        row = []
        for j in ids[q]:
            ok = j >= 0 and i_lab[j] == q_lab[q]
            if ok and q_dom is not None:
                ok = i_dom[j] == q_dom[q]
            row.append(bool(ok))
        out.append(row)
    return out


def ref_count(q_lab, i_lab, exclude_self: bool, q_dom=None, i_dom=None) -> list[int]:
    out = []
    for q in range(len(q_lab)):
        n = 0
        for j in range(len(i_lab)):
            if exclude_self and j == q:
                continue
            if i_lab[j] == q_lab[q] and (q_dom is None or i_dom[j] == q_dom[q]):
                n += 1
        out.append(n)
    return out


def ref_hits(queries, candidates, positive, k: int) -> list[bool]:
    """Sort each row (best first; among equal scores positives first = the optimistic rule)."""
    sims = np.asarray(queries, np.float32) @ np.asarray(candidates, np.float32).T
    out = []
    for q in range(len(sims)):
        order = sorted(range(sims.shape[1]), key=lambda j: (-sims[q, j], not positive(q, j)))
        out.append(any(positive(q, j) for j in order[:k]))
    return out


# ----------------------------------------------------------------------------- ranking metrics
@pytest.mark.parametrize("seed", range(6))
def test_ranking_metrics_match_the_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_q, cols = int(rng.integers(20, 80)), int(rng.integers(1, 30))
    rel = rng.random((n_q, cols)) < rng.uniform(0.05, 0.6)
    # n_q >= hits in the list; some queries get n_q < k, some n_q = 0 (and then no hits at all)
    n_pos = rel.sum(1) + rng.integers(0, 4, n_q) * (rng.random(n_q) < 0.5)
    none = rng.random(n_q) < 0.15
    rel[none], n_pos[none] = False, 0
    ks = sorted({1, int(rng.integers(1, cols + 1)), cols, cols + 3})  # cols + 3: list shorter than k
    got = metrics.ranking_metrics(rel, n_pos, ks=ks, with_map_at_r=True)
    assert set(got) == {"top_1", "map@r"} | {f"{n}@{k}" for n in ("mmp", "map", "recall") for k in ks}
    for k in ks:
        per = [ref_query(r, int(q), k) for r, q in zip(rel.astype(int).tolist(), n_pos)]
        for name in ("mmp", "map", "recall"):
            assert got[f"{name}@{k}"] == pytest.approx(np.mean([p[name] for p in per]), abs=1e-12)
        pq = metrics.per_query_metrics(rel, n_pos, k)
        assert np.allclose(pq["map"], [p["map"] for p in per]) and np.allclose(pq["mmp"], [p["mmp"] for p in per])
    assert got["top_1"] == pytest.approx(np.mean([p["top_1"] for p in per]), abs=1e-12)
    assert got["map@r"] == pytest.approx(np.mean([p["map_r"] for p in per]), abs=1e-12)
    assert all(0.0 <= v <= 1.0 for v in got.values())


@pytest.mark.parametrize("seed", range(4))
def test_knn_relevance_and_counts_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(30, 120)), int(rng.integers(3, 25))
    c = int(rng.integers(3, 40))
    labels = rng.integers(0, c, n)
    labels[0], labels[1:3] = c, c + 1  # a singleton (n_q = 0) and a pair (n_q = 1 < k) at least
    emb = retrieval.l2_normalize(rng.normal(size=(n, 16)))
    _, ids = retrieval.knn(emb, emb, k, exclude_self=True)
    rel = metrics.relevance(labels, labels, ids)
    n_pos = metrics.count_positives(labels, labels, exclude_self=True)
    assert rel.tolist() == ref_relevance(labels, labels, ids)
    assert n_pos.dtype == np.int64 and n_pos.tolist() == ref_count(labels, labels, True)
    assert n_pos[0] == 0 and n_pos[1] == 1
    # the neighbour list of the full similarity matrix, query removed by identity
    sims = emb.astype(np.float64) @ emb.T.astype(np.float64)
    ref_ids = [[j for j in np.argsort(-sims[q], kind="stable") if j != q][:k] for q in range(n)]
    ref_rel = [[int(labels[j] == labels[q]) for j in ref_ids[q]] for q in range(n)]
    got = metrics.ranking_metrics(rel, n_pos, ks=(1, k), with_map_at_r=True)
    per = [ref_query(r, int(c), k) for r, c in zip(ref_rel, n_pos)]
    assert got[f"map@{k}"] == pytest.approx(np.mean([p["map"] for p in per]), abs=1e-12)
    assert got[f"mmp@{k}"] == pytest.approx(np.mean([p["mmp"] for p in per]), abs=1e-12)


def test_hand_computed_cases() -> None:
    # rel = [1,0,1,0,0], n_q = 2, k = 5 (m = min(2,5) = 2):
    #   mMP@5 = (1+0)/2 = 1/2;  mAP@5 = (1/2)(P@1·1 + P@3·1) = (1/2)(1 + 2/3) = 5/6
    #   k = 1: m = 1, mMP@1 = mAP@1 = 1;  MAP@R (R = 2) = (1/2)(P@1·1) = 1/2
    m = metrics.ranking_metrics(np.array([[1, 0, 1, 0, 0]], bool), np.array([2]), ks=(1, 5), with_map_at_r=True)
    assert m["top_1"] == 1.0 and m["recall@5"] == 1.0
    assert m["mmp@5"] == pytest.approx(1 / 2) and m["map@5"] == pytest.approx(5 / 6)
    assert m["mmp@1"] == 1.0 and m["map@1"] == 1.0 and m["map@r"] == pytest.approx(1 / 2)
    # rel = [0,1,1,1,0], n_q = 3: judged on its top 3 → mMP@5 = 2/3;
    #   mAP@5 = (1/3)(1/2 + 2/3 + 3/4) = 23/36;  top_1 = recall@1 = 0
    m = metrics.ranking_metrics(np.array([[0, 1, 1, 1, 0]], bool), np.array([3]), ks=(1, 5))
    assert m["mmp@5"] == pytest.approx(2 / 3) and m["map@5"] == pytest.approx(23 / 36)
    assert m["top_1"] == 0.0 and m["recall@1"] == 0.0 and m["recall@5"] == 1.0
    # n_q >= k: mMP@k is plain precision@k = 3/4;  mAP@4 = (1/4)(1 + 1 + 3/4) = 11/16
    m = metrics.ranking_metrics(np.array([[1, 1, 0, 1]], bool), np.array([10]), ks=(4,), with_map_at_r=True)
    assert m["mmp@4"] == pytest.approx(3 / 4) and m["map@4"] == pytest.approx(11 / 16)
    # MAP@R with R = 10 > 4 columns: (1/10)(1 + 1 + 3/4), a lower bound
    assert m["map@r"] == pytest.approx(2.75 / 10)
    # n_q = 0: every metric is 0, not NaN
    zero = metrics.ranking_metrics(np.zeros((1, 5), bool), np.array([0]), ks=(1, 5), with_map_at_r=True)
    assert zero == {k: 0.0 for k in zero}
    # two queries average: (1/2 + 2/3) / 2 for mMP@5
    rel = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]], bool)
    assert metrics.ranking_metrics(rel, np.array([2, 3]), ks=(5,))["mmp@5"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # map@r only on request
    assert "map@r" not in metrics.ranking_metrics(rel, np.array([2, 3]), ks=(5,))


def test_short_list_from_a_small_gallery() -> None:
    # gallery of 4 items: the list [1,0,1] (self removed) is everything; n_q = 2, k = 20, m = 2
    #   mMP@20 = (1+0)/2 = 1/2;  mAP@20 = (1/2)(1 + 2/3) = 5/6;  recall@20 = 1
    m = metrics.ranking_metrics(np.array([[1, 0, 1]], bool), np.array([2]), ks=(20,))
    assert m["mmp@20"] == pytest.approx(1 / 2) and m["map@20"] == pytest.approx(5 / 6) and m["recall@20"] == 1.0


def test_count_positives_and_relevance_by_hand() -> None:
    labels = np.array([0, 0, 1, 0, 2])
    assert metrics.count_positives(labels, labels, exclude_self=True).tolist() == [2, 2, 0, 2, 0]
    # separate query set (InShop style): nothing excluded; an unseen label has no positives
    assert metrics.count_positives(np.array([0, 2, 3]), labels, exclude_self=False).tolist() == [3, 1, 0]
    ids = np.array([[1, 2, -1], [4, 0, 3]])
    assert metrics.relevance(np.array([0, 2]), labels, ids).tolist() == [[True, False, False], [True, False, False]]
    # string labels work the same
    s = np.array(["a", "a", "b"])
    assert metrics.count_positives(s, s, exclude_self=True).tolist() == [1, 1, 0]


def test_merged_index_needs_same_label_and_same_domain() -> None:
    labels = np.array([0, 0, 0, 1, 0])
    domains = np.array(["cars", "cars", "birds", "cars", "cars"])  # item 2: label 0 of another dataset
    ids = np.array([[2, 1, 3, 4]])
    rel = metrics.relevance(labels[:1], labels, ids, domains[:1], domains)
    assert rel.tolist() == [[False, True, False, True]]
    assert metrics.count_positives(labels[:1], labels, False, domains[:1], domains).tolist() == [3]
    n_pos = metrics.count_positives(labels, labels, True, domains, domains)
    assert n_pos.tolist() == [2, 2, 0, 0, 2]
    rng = np.random.default_rng(3)
    lab, dom = rng.integers(0, 5, 60), rng.integers(0, 3, 60)
    ids = rng.integers(-1, 60, (60, 7))
    assert metrics.relevance(lab, lab, ids, dom, dom).tolist() == ref_relevance(lab, lab, ids, dom, dom)
    assert metrics.count_positives(lab, lab, True, dom, dom).tolist() == ref_count(lab, lab, True, dom, dom)


# ----------------------------------------------------------------------------- image-text, zero-shot
def test_image_text_recall_with_several_captions_per_image() -> None:
    images = np.eye(3, dtype=np.float32)
    # captions 0,1 → image 0; caption 2 → image 1; caption 3 → image 2 (but closer to image 0)
    texts = retrieval.l2_normalize(np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.8, 0, 0.6]]))
    owner = np.array([0, 0, 1, 2])
    m = metrics.image_text_recall(images, texts, owner, ks=(1, 2))
    # I→T: image 0's best text is caption 0 (its own) ✓; image 1 → caption 2 ✓;
    #      image 2: caption 3 scores 0.6, every other caption 0 → ✓
    assert m["i2t_r@1"] == 1.0
    # T→I: caption 3's best image is 0 (0.8 > 0.6): ✗ at 1, ✓ at 2
    assert m["t2i_r@1"] == pytest.approx(3 / 4) and m["t2i_r@2"] == 1.0
    assert m["mean_r@1"] == pytest.approx((1 + 3 / 4) / 2)
    # image 0 needs only ONE caption near the top: caption 0 is closer to image 1, caption 1 is first
    texts = np.array([[0.1, 0.99], [0.8, 0.6], [0.0, 1.0]], np.float32)
    m = metrics.image_text_recall(np.eye(2, dtype=np.float32), texts, np.array([0, 0, 1]), ks=(1,))
    assert m["i2t_r@1"] == 1.0 and m["t2i_r@1"] == pytest.approx(2 / 3)  # caption 0 → image 1 ✗


def test_image_text_ties_are_optimistic() -> None:
    # two identical images: caption of image 1 ties with image 0 → counted as a hit at 1
    images = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    m = metrics.image_text_recall(images, texts, np.array([0, 1, 2]), ks=(1,))
    assert m["i2t_r@1"] == 1.0 and m["t2i_r@1"] == 1.0
    # a tie does not hide a strictly better one: the caption of image 1 scores 0.6 with it,
    # 1.0 with image 0 and 0.6 with image 2 (tie): rank 1 → miss at 1, hit at 2
    images = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]], np.float32)
    m = metrics.image_text_recall(images, np.array([[1.0, 0.0]], np.float32), np.array([1]), ks=(1, 2))
    assert m["t2i_r@1"] == 0.0 and m["t2i_r@2"] == 1.0


def test_image_without_captions_is_a_miss() -> None:
    m = metrics.image_text_recall(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32)[:1], np.array([0]), ks=(1, 2))
    assert m["i2t_r@2"] == 0.5 and m["t2i_r@1"] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_image_text_recall_matches_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_img = int(rng.integers(5, 30))
    owner = np.concatenate([np.arange(n_img), rng.integers(0, n_img, int(rng.integers(0, 3 * n_img)))])
    # coarse values → many exact score ties
    images = rng.integers(-1, 2, (n_img, 4)).astype(np.float32)
    texts = rng.integers(-1, 2, (len(owner), 4)).astype(np.float32)
    ks = (1, 2, 5)
    got = metrics.image_text_recall(images, texts, owner, ks=ks, chunk_size=int(rng.integers(1, 8)))
    assert got == metrics.image_text_recall(images, texts, owner, ks=ks)  # chunking changes nothing
    for k in ks:
        i2t = ref_hits(images, texts, lambda q, j: owner[j] == q, k)
        t2i = ref_hits(texts, images, lambda q, j: owner[q] == j, k)
        assert got[f"i2t_r@{k}"] == pytest.approx(np.mean(i2t)) and got[f"t2i_r@{k}"] == pytest.approx(np.mean(t2i))
    assert got["mean_r@1"] == pytest.approx((got["i2t_r@1"] + got["t2i_r@1"]) / 2)


def test_zero_shot_accuracy() -> None:
    prompts = np.eye(3, dtype=np.float32)
    images = np.array([[0.9, 0.1, 0], [0, 0.2, 0.8], [0.6, 0.4, 0]], np.float32)
    # predictions 0, 2, 0 against labels 0, 2, 1 → 2/3
    assert metrics.zero_shot_accuracy(images, prompts, np.array([0, 2, 1])) == pytest.approx(2 / 3)
    # cosine, not dot product: a long prompt vector must not win by its norm
    prompts = np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)
    assert metrics.zero_shot_accuracy(np.array([[0.6, 0.8]], np.float32), prompts, np.array([1])) == 1.0
    rng = np.random.default_rng(0)
    x, p, y = rng.normal(size=(50, 6)), rng.normal(size=(7, 6)), rng.integers(0, 7, 50)
    cos = x @ (p / np.linalg.norm(p, axis=1, keepdims=True)).T
    expected = np.mean([int(np.argmax(cos[i]) == y[i]) for i in range(50)])
    assert metrics.zero_shot_accuracy(x, p, y, chunk_size=9) == pytest.approx(expected)


def test_merged_index_evaluation_counts_only_same_set_hits() -> None:
    from pipeline.lib.evaluation import knn_retrieval, merged_knn_retrieval

    rng = np.random.default_rng(3)
    a = (retrieval.l2_normalize(rng.normal(size=(40, 8))), rng.integers(0, 4, 40))
    # set b duplicates a's vectors and labels: in a merged index its items are perfect
    # neighbours of a's queries, but they belong to another set and must not count as hits
    b = (a[0].copy(), a[1].copy())
    merged = merged_knn_retrieval({"a": a, "b": b}, k=5, ks=(5,))
    alone = knn_retrieval(a[0], a[1], 5, (5,))
    assert merged["a"]["map@5"] < alone["map@5"]
    # merging only adds irrelevant items (n_q is unchanged): no metric can improve
    for name, (emb, labels) in {"a": a, "b": b}.items():
        single = knn_retrieval(emb, labels, 5, (5,))
        assert all(merged[name][key] <= single[key] + 1e-12 for key in ("top_1", "map@5", "mmp@5", "recall@5"))


# ----------------------------------------------------------------------------- MAP@R, exactly
def clustered(n_classes: int = 20, per_class: int = 75, dim: int = 32, noise: float = 1.2, seed: int = 0):
    """~per_class noisy points around each of n_classes random centres (class sizes vary by ±5)."""
    rng = np.random.default_rng(seed)
    sizes = per_class + rng.integers(-5, 6, n_classes)
    labels = np.repeat(np.arange(n_classes), sizes)
    centres = rng.normal(size=(n_classes, dim))
    return retrieval.l2_normalize(centres[labels] + noise * rng.normal(size=(len(labels), dim))), labels


def slow_map_at_r(query_emb, query_labels, gallery_emb, gallery_labels, exclude_self: bool) -> float:
    """Independent: the full float64 similarity row of each query, sorted, its own item removed by
    identity, then (1/R) Σ_{r≤R} P@r·rel_r over the first R = n_q items."""
    sims = np.asarray(query_emb, np.float64) @ np.asarray(gallery_emb, np.float64).T
    total = 0.0
    for q in range(len(sims)):
        def relevant(j: int) -> bool:
            return bool(gallery_labels[j] == query_labels[q])
        order = [j for j in np.argsort(-sims[q], kind="stable") if not (exclude_self and j == q)]
        r_q = sum(relevant(j) for j in order)
        if r_q == 0:
            continue
        hits, ap = 0, 0.0
        for rank, j in enumerate(order[:r_q], start=1):
            if relevant(j):
                hits += 1
                ap += hits / rank
        total += ap / r_q
    return total / len(sims)


def test_map_at_r_is_exact_when_classes_are_larger_than_k() -> None:
    from pipeline.lib.evaluation import knn_retrieval

    emb, labels = clustered()  # 1,500 points in 20 classes of ~75: R ≈ 74 > k = 20
    got = knn_retrieval(emb, labels, 20, (1, 20))
    reference = slow_map_at_r(emb, labels, emb, labels, exclude_self=True)
    assert got["map@r"] == pytest.approx(reference, abs=1e-9)
    # what the first k = 20 columns alone give: a lower bound far below the exact value
    _, ids = retrieval.knn(emb, emb, 20, exclude_self=True)
    truncated = metrics.map_at_r(metrics.relevance(labels, labels, ids),
                                 metrics.count_positives(labels, labels, True)).mean()
    assert truncated < 0.6 * reference
    # the other metrics are unaffected by the second search
    plain = metrics.ranking_metrics(metrics.relevance(labels, labels, ids),
                                    metrics.count_positives(labels, labels, True), ks=(1, 20))
    assert {k: v for k, v in got.items() if k not in ("map@r", "queries")} == plain


def test_map_at_r_with_a_separate_gallery_and_a_small_search_budget() -> None:
    from pipeline.lib import evaluation

    emb, labels = clustered(n_classes=6, per_class=40, seed=1)
    queries, gallery = np.arange(0, len(labels), 3), np.setdiff1d(np.arange(len(labels)), np.arange(0, len(labels), 3))
    index = retrieval.build_index(emb[gallery])
    n_pos = metrics.count_positives(labels[queries], labels[gallery], exclude_self=False)
    relevant = lambda rows, found: metrics.relevance(labels[queries][rows], labels[gallery], found)  # noqa: E731
    # budget 100: 100 // (R + 1) = 3 queries a chunk
    rel, per_query = evaluation.ranked_relevance(index, emb[queries], n_pos, 5, False, relevant, budget=100)
    assert per_query.mean() == pytest.approx(
        slow_map_at_r(emb[queries], labels[queries], emb[gallery], labels[gallery], exclude_self=False), abs=1e-9)
    _, ids = retrieval.knn(emb[queries], None, 5, exclude_self=False, index=index)
    assert np.array_equal(rel, metrics.relevance(labels[queries], labels[gallery], ids))


def test_every_query_is_searched_once_at_the_width_its_class_needs() -> None:
    from pipeline.lib.evaluation import width_groups

    n_pos = np.array([3, 30, 7, 25, 30, 1])
    groups = width_groups(n_pos, k=10)
    assert [(rows.tolist(), width) for rows, width in groups] == [([0, 2, 5], 10), ([1, 3, 4], 30)]
    assert [(rows.tolist(), width) for rows, width in width_groups(n_pos, k=10, with_map_at_r=False)] == \
        [([0, 1, 2, 3, 4, 5], 10)]
    assert [(rows.tolist(), width) for rows, width in width_groups(np.array([4, 2, 9]), k=10)] == [([0, 1, 2], 10)]
    # one huge class: the other large classes are not made to pay for its width
    n_pos = np.concatenate([np.full(1200, 11), np.full(800, 799)])
    groups = width_groups(n_pos, k=5)
    assert [(len(rows), width) for rows, width in groups] == [(1200, 11), (800, 799)]
    n_pos = np.concatenate([np.full(1000, 3), np.full(1200, 11), np.full(800, 799)])
    assert [(len(rows), width) for rows, width in width_groups(n_pos, k=5)] == [(1000, 5), (1200, 11), (800, 799)]
    assert sorted(np.concatenate([rows for rows, _ in width_groups(n_pos, k=5)]).tolist()) == list(range(3000))


def huge_and_moderate(seed: int = 6):
    """100 classes of 12 and one of 800 (16-d): MAP@R needs R = 11 for most queries, 799 for some."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.repeat(np.arange(100), 12), np.full(800, 100)])
    centres = rng.normal(size=(101, 16))
    return retrieval.l2_normalize(centres[labels] + 1.5 * rng.normal(size=(len(labels), 16))), labels


def test_map_at_r_is_exact_with_a_huge_class_searched_apart() -> None:
    from pipeline.lib.evaluation import knn_retrieval, width_groups

    emb, labels = huge_and_moderate()
    n_pos = metrics.count_positives(labels, labels, True)
    assert [width for _, width in width_groups(n_pos, 5)] == [11, 799]  # no query needs only k = 5
    got = knn_retrieval(emb, labels, 5, (1, 5))
    # float32 scores against the float64 reference: a near-tie deep in a list of R = 799 may swap (~1e-9);
    # the huge class truncated to 11 columns would give 0.029 instead of 0.222
    assert got["map@r"] == pytest.approx(slow_map_at_r(emb, labels, emb, labels, exclude_self=True), abs=1e-7)
    _, ids = retrieval.knn(emb, emb, 5, exclude_self=True)
    plain = metrics.ranking_metrics(metrics.relevance(labels, labels, ids), n_pos, ks=(1, 5))
    assert {k: v for k, v in got.items() if k not in ("map@r", "queries")} == plain


def test_exact_map_at_r_searches_each_query_once() -> None:
    """FAISS's own count of IVF queries (every list probed: an exact search) is the number of
    queries: no second search, whether the large classes share one width or the huge one has its own."""
    from pipeline.lib.evaluation import knn_retrieval

    stats = faiss.cvar.indexIVF_stats
    for emb, labels in (clustered(), huge_and_moderate()):
        ivf = retrieval.build_index(emb, "ivf", nlist=16)
        stats.reset()
        got = knn_retrieval(emb, labels, 5, (1, 5), index=ivf, settings=retrieval.SearchSettings(nprobe=16))
        assert stats.nq == len(labels)
        assert got == knn_retrieval(emb, labels, 5, (1, 5))  # all lists probed: the exact metrics


def test_merged_index_map_at_r_is_exact() -> None:
    from pipeline.lib.evaluation import merged_knn_retrieval

    a = clustered(n_classes=5, per_class=40, dim=16, seed=4)
    b = clustered(n_classes=4, per_class=30, dim=16, seed=5)  # labels 0-3 also in a: only the set tells them apart
    merged = merged_knn_retrieval({"a": a, "b": b}, k=10, ks=(10,))
    emb = np.concatenate([a[0], b[0]])
    labels = np.concatenate([a[1], b[1]])
    domains = np.repeat([0, 1], [len(a[1]), len(b[1])])
    for name, rows in {"a": slice(0, len(a[1])), "b": slice(len(a[1]), len(labels))}.items():
        assert merged[name]["map@r"] == pytest.approx(slow_map_at_r_rows(emb, labels, domains, rows), abs=1e-9)


def slow_map_at_r_rows(emb, labels, domains, rows: slice) -> float:
    """slow_map_at_r over the merged index, averaged over the queries in `rows` only."""
    values = []
    for q in range(rows.start, rows.stop):
        sims = np.asarray(emb, np.float64) @ np.asarray(emb[q], np.float64)
        order = [j for j in np.argsort(-sims, kind="stable") if j != q]
        rel = [labels[j] == labels[q] and domains[j] == domains[q] for j in order]
        r_q = sum(rel)
        hits, ap = 0, 0.0
        for rank, hit in enumerate(rel[:r_q], start=1):
            if hit:
                hits += 1
                ap += hits / rank
        values.append(ap / r_q if r_q else 0.0)
    return float(np.mean(values))
