"""Tests of bpbreid.metrics: part-based distance, CMC/mAP, chunked evaluation, re-ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bpbreid.bench.eval import reference_evaluate_rank
from bpbreid.errors import DatasetError
from bpbreid.metrics import (
    evaluate_chunked,
    evaluate_rank,
    part_based_distance,
    re_ranking,
)

# --------------------------------------------------------------------------------------
# evaluate_rank: hand-computed cases
# --------------------------------------------------------------------------------------


def test_hand_computed_cmc_and_ap_with_same_camera_filtering():
    # Query: id 1, camera 0. Gallery sorted by distance:
    #   g0 id 1 cam 0 -> removed (same id and camera), g1 id 2, g2 id 1 (rank 2),
    #   g3 id 3, g4 id 1 (rank 4).
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)
    g_pids = np.array([1, 2, 1, 3, 1])
    g_cams = np.array([0, 1, 1, 2, 2])
    cmc, mAP = evaluate_rank(distmat, [1], g_pids, [0], g_cams, max_rank=4)
    np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_query_without_valid_match_is_skipped_and_counted():
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5],  # id 1: a real query
            [0.5, 0.4, 0.3, 0.2, 0.1],  # id 9: not in the gallery
            [0.3, 0.1, 0.2, 0.4, 0.5],  # id 3, camera 2: its only gallery image is camera 2
        ],
        dtype=np.float32,
    )
    g_pids = np.array([1, 2, 1, 3, 1])
    g_cams = np.array([0, 1, 1, 2, 2])
    cmc, mAP, details = evaluate_rank(
        distmat, [1, 9, 3], g_pids, [0, 0, 2], g_cams, max_rank=4, return_details=True
    )
    np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx(0.5)
    assert details.num_skipped == 2
    np.testing.assert_array_equal(details.valid, [True, False, False])
    assert np.isnan(details.average_precision[1:]).all()
    np.testing.assert_array_equal(details.first_match_rank, [1, -1, -1])
    np.testing.assert_array_equal(details.num_matches, [2, 0, 0])


def test_ties_keep_gallery_order():
    distmat = np.full((1, 4), 0.5, dtype=np.float32)
    g_pids = np.array([2, 1, 1, 3])
    cmc, mAP = evaluate_rank(distmat, [1], g_pids, [0], [1, 1, 2, 3], max_rank=4)
    np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_negative_and_signed_zero_distances_rank_in_order():
    # Similarities used as negative distances; -0.0 and 0.0 tie (gallery order).
    distmat = np.array([[0.0, -0.0, -1.0, 2.0]], dtype=np.float32)
    cmc, mAP = evaluate_rank(distmat, [5], [5, 7, 8, 9], [0], [1, 1, 1, 1], max_rank=4)
    # Sorted: g2 (-1), g0 (0.0), g1 (-0.0), g3 -> the match g0 is at rank 2.
    np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx(0.5)


def test_no_query_has_a_match_raises_a_readable_error():
    with pytest.raises(DatasetError, match="same dataset"):
        evaluate_rank(np.zeros((2, 3)), [1, 2], [3, 4, 5], [0, 0], [1, 1, 1], max_rank=3)


def test_max_rank_larger_than_gallery_warns_and_shortens():
    distmat = np.array([[0.2, 0.1, 0.3]], dtype=np.float32)
    with pytest.warns(UserWarning, match="fewer than max_rank"):
        cmc, _ = evaluate_rank(distmat, [1], [1, 2, 3], [0], [1, 1, 1], max_rank=50)
    np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0])


def test_max_rank_larger_than_kept_items_pads_with_ones():
    # 4 gallery items, 2 of them removed (same id and camera): 2 kept for a CMC of length 4.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    cmc, mAP = evaluate_rank(distmat, [1], [1, 1, 2, 1], [0], [0, 0, 1, 1], max_rank=4)
    np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx(0.5)


# --------------------------------------------------------------------------------------
# evaluate_rank: against the per-query reference on random inputs
# --------------------------------------------------------------------------------------


def _random_problem(seed: int, n_query=60, n_gallery=300, n_ids=25, n_cams=4):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n_query, n_gallery)).astype(np.float32),
        rng.integers(0, n_ids + 5, n_query),  # ids >= n_ids have no match: skipped
        rng.integers(0, n_ids, n_gallery),
        rng.integers(0, n_cams, n_query),
        rng.integers(0, n_cams, n_gallery),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_per_query_reference(seed, ties):
    distmat, qp, gp, qc, gc = _random_problem(seed)
    if ties:
        distmat = np.round(distmat * 10) / 10  # many exact ties
    cmc, mAP, details = evaluate_rank(distmat, qp, gp, qc, gc, return_details=True)
    ref_cmc, ref_map, ref_skipped = reference_evaluate_rank(distmat, qp, gp, qc, gc)
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6)
    assert mAP == pytest.approx(ref_map, abs=1e-6)
    assert details.num_skipped == ref_skipped
    assert details.num_skipped > 0  # the random ids leave some queries without a match
    # Per-query AP against the reference run on each query alone.
    for i in np.flatnonzero(details.valid)[:10]:
        _, ap_i, _ = reference_evaluate_rank(
            distmat[i : i + 1], qp[i : i + 1], gp, qc[i : i + 1], gc
        )
        assert details.average_precision[i] == pytest.approx(ap_i, abs=1e-12)


def test_input_types_and_blocks_give_the_same_result():
    distmat, qp, gp, qc, gc = _random_problem(3)
    expected = evaluate_rank(distmat, qp, gp, qc, gc)
    variants = [
        evaluate_rank(
            torch.from_numpy(distmat), torch.from_numpy(qp), gp, qc, torch.from_numpy(gc)
        ),
        evaluate_rank(distmat.astype(np.float64), qp, gp, qc, gc),
        evaluate_rank(distmat, qp, gp, qc, gc, rows_per_block=7),
        evaluate_rank(distmat.tolist(), qp.tolist(), gp.tolist(), qc.tolist(), gc.tolist()),
    ]
    for cmc, mAP in variants:
        np.testing.assert_array_equal(cmc, expected[0])
        assert mAP == pytest.approx(expected[1], abs=1e-12)


def test_float64_values_closer_than_float32_keep_their_order():
    # 1 + 1e-12 and 1 are equal in float32: the ranking must still use the float64 order.
    distmat = np.array([[1.0 + 1e-12, 1.0, 2.0]])
    cmc, _ = evaluate_rank(distmat, [1], [1, 2, 3], [0], [1, 1, 1], max_rank=3)
    np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0])


def test_equals_reference_without_ties_like_torchreid():
    # Continuous random distances (no ties): torchreid's unstable argsort and our stable
    # order agree, so the numbers are torchreid's to 1e-6.
    distmat, qp, gp, qc, gc = _random_problem(7, n_query=40, n_gallery=500)
    cmc, mAP = evaluate_rank(distmat.astype(np.float64), qp, gp, qc, gc, max_rank=20)
    ref_cmc, ref_map, _ = reference_evaluate_rank(distmat, qp, gp, qc, gc, max_rank=20)
    assert cmc.shape == (20,) and cmc.dtype == np.float32
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6)
    assert abs(mAP - ref_map) < 1e-6


# --------------------------------------------------------------------------------------
# part_based_distance
# --------------------------------------------------------------------------------------


def _loop_distance(qf, gf, qv, gv, metric="euclidean", normalize=True):
    """Per-pair loop over the definition (the reference)."""
    if normalize or metric == "cosine":
        qf, gf = F.normalize(qf, dim=-1), F.normalize(gf, dim=-1)
    qv, gv = qv.double(), gv.double()
    out = torch.zeros(len(qf), len(gf), dtype=torch.float64)
    invalid = torch.zeros(len(qf), len(gf), dtype=torch.bool)
    largest = 0.0
    for i in range(len(qf)):
        for j in range(len(gf)):
            if metric == "euclidean":
                per_part = (qf[i].double() - gf[j].double()).norm(dim=-1)
            else:
                per_part = 1 - (qf[i].double() * gf[j].double()).sum(-1)
            weights = (qv[i] * gv[j]).sqrt()
            if weights.sum() == 0:
                invalid[i, j] = True
                continue
            out[i, j] = (weights * per_part).sum() / weights.sum()
            largest = max(largest, per_part[weights > 0].max().item())
    out[invalid] = largest + 1
    return out.float(), invalid


def _features(seed, n_query=9, n_gallery=13, n_parts=4, dim=8, soft=False):
    gen = torch.Generator().manual_seed(seed)
    qf = torch.randn(n_query, n_parts, dim, generator=gen)
    gf = torch.randn(n_gallery, n_parts, dim, generator=gen)
    if soft:
        qv = torch.rand(n_query, n_parts, generator=gen)
        gv = torch.rand(n_gallery, n_parts, generator=gen)
        qv[torch.rand(n_query, n_parts, generator=gen) < 0.3] = 0.0
        gv[torch.rand(n_gallery, n_parts, generator=gen) < 0.3] = 0.0
    else:
        qv = torch.rand(n_query, n_parts, generator=gen) < 0.5
        gv = torch.rand(n_gallery, n_parts, generator=gen) < 0.5
    qv[0] = False  # a query with nothing visible: a whole row of invalid pairs
    gv[1] = False  # a gallery item with nothing visible: a whole column
    # A pair with visible parts on both sides but none in common.
    qv[2] = torch.tensor([1, 1, 0, 0], dtype=qv.dtype)
    gv[2] = torch.tensor([0, 0, 1, 1], dtype=gv.dtype)
    return qf, gf, qv, gv


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("normalize", [True, False])
def test_part_based_distance_matches_per_pair_loop(soft, metric, normalize):
    qf, gf, qv, gv = _features(0, soft=soft)
    expected, invalid = _loop_distance(qf, gf, qv, gv, metric, normalize)
    assert invalid[0].all() and invalid[:, 1].all() and invalid[2, 2]
    got = part_based_distance(qf, gf, qv, gv, metric=metric, normalize=normalize)
    assert got.shape == (9, 13) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
    # Invalid pairs rank after every valid pair.
    assert got[invalid].min() > got[~invalid].max()


def test_chunked_equals_unchunked():
    qf, gf, qv, gv = _features(1, n_query=11, n_gallery=17, soft=True)
    full = part_based_distance(qf, gf, qv, gv)
    for chunk_size, query_chunk in [(3, 2), (1, 1), (5, None), (None, 4)]:
        chunked = part_based_distance(
            qf, gf, qv, gv, chunk_size=chunk_size, query_chunk=query_chunk
        )
        torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)


def test_invalid_value_is_global_across_chunks():
    # The largest valid distance lives in the last gallery block only: every invalid pair,
    # in every block, must still get that global maximum + 1.
    qf, gf, qv, gv = _features(2, soft=False)
    expected, invalid = _loop_distance(qf, gf, qv, gv)
    got = part_based_distance(qf, gf, qv, gv, chunk_size=2, query_chunk=3)
    assert torch.unique(got[invalid]).numel() == 1
    torch.testing.assert_close(got[invalid], expected[invalid])


def test_no_visibility_means_all_visible_plain_mean():
    qf, gf, _, _ = _features(3)
    got = part_based_distance(qf, gf)
    qn, gn = F.normalize(qf, dim=-1), F.normalize(gf, dim=-1)
    expected = torch.cdist(qn.transpose(0, 1), gn.transpose(0, 1)).mean(0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_visibility_weights_soft_scores_by_sqrt_product():
    qf = torch.randn(1, 2, 4)
    gf = torch.randn(1, 2, 4)
    qv = torch.tensor([[1.0, 0.25]])
    gv = torch.tensor([[1.0, 1.0]])
    d = torch.cdist(
        F.normalize(qf, dim=-1).transpose(0, 1), F.normalize(gf, dim=-1).transpose(0, 1)
    ).flatten()
    expected = (1.0 * d[0] + 0.5 * d[1]) / 1.5
    got = part_based_distance(qf, gf, qv, gv)
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)


def test_identical_vectors_are_at_distance_zero():
    qf, _, _, _ = _features(4)
    got = part_based_distance(qf, qf)
    assert got.diagonal().abs().max() < 1e-3


def test_return_parts_for_gives_per_part_distances_of_chosen_queries():
    qf, gf, qv, gv = _features(5)
    distmat, parts = part_based_distance(qf, gf, qv, gv, return_parts_for=[4, 1], chunk_size=3)
    assert parts.shape == (4, 2, 13)
    qn, gn = F.normalize(qf, dim=-1), F.normalize(gf, dim=-1)
    expected = torch.cdist(qn[[4, 1]].transpose(0, 1), gn.transpose(0, 1))  # [P, 2, Ng]
    torch.testing.assert_close(parts, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(distmat, part_based_distance(qf, gf, qv, gv))


def test_bad_shapes_and_values_raise():
    qf, gf, qv, gv = _features(6)
    with pytest.raises(ValueError, match="same number"):
        part_based_distance(qf, gf[:, :2], qv, gv)
    with pytest.raises(ValueError, match="visibility"):
        part_based_distance(qf, gf, qv[:, :2], gv)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        part_based_distance(qf, gf, qv.float() * 2, gv)
    with pytest.raises(ValueError, match="metric"):
        part_based_distance(qf, gf, qv, gv, metric="manhattan")


def test_accepts_numpy_and_half_precision():
    qf, gf, qv, gv = _features(7)
    expected = part_based_distance(qf, gf, qv, gv)
    from_numpy = part_based_distance(qf.numpy(), gf.numpy(), qv.numpy(), gv.numpy())
    torch.testing.assert_close(from_numpy, expected)
    half = part_based_distance(qf.half(), gf.half(), qv, gv)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, atol=5e-3, rtol=5e-3)


# --------------------------------------------------------------------------------------
# evaluate_chunked
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("soft", [False, True])
def test_query_chunked_evaluation_equals_full(soft):
    gen = torch.Generator().manual_seed(8)
    n_query, n_gallery, n_ids = 23, 61, 6
    q_pids = torch.randint(0, n_ids, (n_query,), generator=gen)
    g_pids = torch.randint(0, n_ids, (n_gallery,), generator=gen)
    centres = torch.randn(n_ids, 4, 8, generator=gen)
    qf = centres[q_pids] + torch.randn(n_query, 4, 8, generator=gen)
    gf = centres[g_pids] + torch.randn(n_gallery, 4, 8, generator=gen)
    _, _, qv, gv = _features(8, n_query, n_gallery, soft=soft)
    q_cams = torch.randint(0, 3, (n_query,), generator=gen)
    g_cams = torch.randint(0, 3, (n_gallery,), generator=gen)

    full = evaluate_rank(
        part_based_distance(qf, gf, qv, gv),
        q_pids,
        g_pids,
        q_cams,
        g_cams,
        max_rank=10,
        return_details=True,
    )
    chunked = evaluate_chunked(
        qf,
        gf,
        qv,
        gv,
        q_pids,
        g_pids,
        q_cams,
        g_cams,
        max_rank=10,
        query_chunk=4,
        return_details=True,
    )
    np.testing.assert_array_equal(chunked[0], full[0])
    assert chunked[1] == pytest.approx(full[1], abs=1e-12)
    np.testing.assert_array_equal(chunked[2].first_match_rank, full[2].first_match_rank)
    np.testing.assert_allclose(chunked[2].average_precision, full[2].average_precision)


# --------------------------------------------------------------------------------------
# re_ranking
# --------------------------------------------------------------------------------------


def _clustered_distances(seed=0, n_ids=6, per_id=5, n_query=6):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_ids, 16, generator=gen) * 3
    pids = torch.arange(n_ids).repeat_interleave(per_id)
    feats = centres[pids] + torch.randn(len(pids), 16, generator=gen)
    q_idx = torch.arange(0, n_ids * per_id, per_id)[:n_query]
    g_mask = torch.ones(len(pids), dtype=torch.bool)
    g_mask[q_idx] = False
    qf, gf = feats[q_idx], feats[g_mask]
    return (
        torch.cdist(qf, gf).numpy(),
        torch.cdist(qf, qf).numpy(),
        torch.cdist(gf, gf).numpy(),
        pids[q_idx].numpy(),
        pids[g_mask].numpy(),
    )


def test_re_ranking_shape_range_and_lambda_one_identity():
    qg, qq, gg, _, _ = _clustered_distances()
    out = re_ranking(qg, qq, gg, k1=5, k2=3, lambda_value=0.3)
    assert out.shape == qg.shape and np.isfinite(out).all()
    np.testing.assert_allclose(re_ranking(qg, qq, gg, lambda_value=1.0), qg)
    jaccard = re_ranking(qg, qq, gg, k1=5, k2=3, lambda_value=0.0)
    assert jaccard.min() >= -1e-6 and jaccard.max() <= 1 + 1e-6


def test_re_ranking_puts_a_duplicate_at_distance_zero_and_keeps_clusters():
    qg, qq, gg, q_pids, g_pids = _clustered_distances(1)
    # Append an exact copy of query 0 to the gallery.
    qg2 = np.concatenate([qg, qq[:, :1]], axis=1)
    gg2 = np.block([[gg, qg[:1].T], [qg[:1], np.zeros((1, 1))]]).astype(np.float32)
    jaccard = re_ranking(qg2, qq, gg2, k1=5, k2=1, lambda_value=0.0)
    assert jaccard[0, -1] == pytest.approx(0.0, abs=1e-6)
    assert jaccard[0].argmin() == qg2.shape[1] - 1
    # Well-separated clusters stay perfectly ranked after re-ranking.
    reranked = re_ranking(qg, qq, gg, k1=4, k2=2, lambda_value=0.3)
    cmc, mAP = evaluate_rank(
        reranked, q_pids, g_pids, np.zeros(len(q_pids)), np.ones(len(g_pids)), max_rank=5
    )
    assert cmc[0] == 1.0 and mAP == pytest.approx(1.0)


# A fixed problem: 3 queries and 7 gallery points in the plane, plain euclidean distances.
# The expected outputs are those of the published reference implementation (Zhong et al.,
# CVPR 2017; float32 as in torchreid's utils/rerank.py), printed to 6 decimals.
RERANK_QUERIES = np.array([[0.0, 0.0], [3.0, 1.0], [0.5, 2.5]])
RERANK_GALLERY = np.array(
    [[0.2, 0.1], [2.8, 1.3], [0.4, 2.2], [1.5, 1.5], [3.3, 0.6], [-0.3, 0.4], [0.9, 2.9]]
)
RERANK_REFERENCE = {
    (3, 2, 0.3): [
        [0.001333, 0.954133, 0.833333, 0.82, 1.0, 0.015101, 0.945867],
        [0.930667, 0.003467, 0.876963, 0.677647, 0.148188, 1.0, 0.872973],
        [0.853275, 0.834628, 0.00262, 0.254858, 1.0, 0.832314, 0.150774],
    ],
    (4, 1, 0.3): [
        [0.005404, 0.954133, 0.773132, 0.82, 1.0, 0.242468, 0.945867],
        [0.930667, 0.346203, 0.918667, 0.693664, 0.023435, 1.0, 0.863847],
        [0.853275, 0.740924, 0.194039, 0.328379, 1.0, 0.753436, 0.173145],
    ],
}


def _euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).astype(np.float32)


@pytest.mark.parametrize("k1, k2, lambda_value", sorted(RERANK_REFERENCE))
def test_re_ranking_gives_the_reference_outputs_on_a_fixed_problem(k1, k2, lambda_value):
    q, g = RERANK_QUERIES, RERANK_GALLERY
    out = re_ranking(
        _euclidean(q, g),
        _euclidean(q, q),
        _euclidean(g, g),
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
    )
    np.testing.assert_allclose(out, RERANK_REFERENCE[(k1, k2, lambda_value)], atol=2e-6)


def test_re_ranking_mixes_with_the_row_scaled_squared_distance():
    # Query 0 and gallery item 1 share no k-reciprocal neighbour: d_J = 1, and the rest is
    # lambda * d*, with d* = squared distance over the largest squared distance of query 0's
    # row (all 10 items): 1 - lambda + lambda * |q0 - g1|^2 / |q0 - g4|^2.
    q, g = RERANK_QUERIES, RERANK_GALLERY
    out = re_ranking(_euclidean(q, g), _euclidean(q, q), _euclidean(g, g), k1=3, k2=2)
    squared = ((q[0] - g[1]) ** 2).sum() / ((q[0] - g[4]) ** 2).sum()  # 9.53 / 11.25
    assert out[0, 1] == pytest.approx(0.7 + 0.3 * squared, abs=1e-6)
    # The farthest item of the row: d* = 1 and d_J = 1, so exactly 1.
    assert out[0, 4] == pytest.approx(1.0, abs=1e-6)


def test_re_ranking_expands_only_on_strictly_more_than_two_thirds():
    # Six points on a line, k1 = 3 (k1/2 rounds to 2), query = the point at 8.7. One
    # candidate's half-set overlaps R(query, 3) in exactly 2 of 3 items: 2/3, not more, so
    # its third item (the point at 6.0) stays out of R*(query). Recomputed here from the
    # definitions with sets and compared through the Jaccard distance (lambda = 0, no
    # query expansion); accepting at exactly 2/3 would add the point at 6.0.
    xs = [8.7, 2.9, 6.0, 7.8, 7.2, 9.2]
    points = np.array([[x, 0.0] for x in xs])
    q, g = points[:1], points[1:]
    out = re_ranking(
        _euclidean(q, g), _euclidean(q, q), _euclidean(g, g), k1=3, k2=1, lambda_value=0.0
    )
    d = _euclidean(points, points).astype(np.float64) ** 2
    d = (d / d.max(axis=0, keepdims=True)).T  # row i: squared distances over their max

    def neighbours(i: int, k: int) -> set[int]:
        return set(np.argsort(d[i])[: k + 1].tolist())

    def reciprocal(i: int, k: int) -> set[int]:
        return {j for j in neighbours(i, k) if i in neighbours(j, k)}

    def expanded(i: int) -> set[int]:
        base = reciprocal(i, 3)
        out_set = set(base)
        for c in base:
            half = reciprocal(c, 2)
            if len(half & base) > 2 / 3 * len(half):
                out_set |= half
        return out_set

    def encoding(i: int) -> np.ndarray:
        v = np.zeros(len(xs))
        members = sorted(expanded(i))
        v[members] = np.exp(-d[i, members])
        return v / v.sum()

    assert expanded(0) == {0, 3, 4, 5}  # the point at 6.0 (index 2) stays out
    v = [encoding(i) for i in range(len(xs))]
    expected = [
        1 - np.minimum(v[0], v[j]).sum() / np.maximum(v[0], v[j]).sum() for j in range(1, 6)
    ]
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_re_ranking_rejects_mismatched_shapes():
    qg, qq, gg, _, _ = _clustered_distances()
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(qg, qq, gg[:-1, :-1])


# --------------------------------------------------------------------------------------
# The benchmark (small mode)
# --------------------------------------------------------------------------------------


def test_eval_benchmark_small_runs_and_metrics_agree(capsys):
    from bpbreid.__main__ import main

    status = main(
        [
            "bench",
            "eval",
            "--small",
            "--queries",
            "60",
            "--gallery",
            "300",
            "--dim",
            "32",
            "--repeat",
            "1",
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "| part-based distance |" in out
    assert "-> equal" in out


def test_bench_command_lists_and_discovers_benchmarks(capsys):
    from bpbreid.__main__ import main
    from bpbreid.bench import BENCHMARKS, available_benchmarks

    assert "eval" in available_benchmarks()
    assert set(available_benchmarks()) <= set(BENCHMARKS)
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert "eval" in out and "all" in out
