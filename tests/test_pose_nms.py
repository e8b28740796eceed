"""The released pose-NMS procedure (``method="official"``) against greedy NMS and against a plain
Python transcription of the procedure as written in docs/LOGOCAP.md (notes 3.15 / 10.3)."""
import pytest
import torch

from logocap.codecs.nms import pose_nms
from logocap.utils import LogocapError

K = 17


def line_pose(x0=0.0, length=100.0):
    """A pose whose joints lie on a horizontal line: box diagonal = ``length``."""
    p = torch.zeros(1, 1, K, 2)
    p[..., 0] = torch.linspace(0, length, K) + x0
    return p


def walk(poses, rank, valid, thr, num):
    """Plain-Python released walk for ONE image: poses [T, K, 2], rank [T], valid [T] -> keep set."""
    t = len(poses)
    suppressed, keep = {i for i in range(t) if not valid[i]}, set()

    def dup(i, j):  # j duplicates reference i
        box = poses[i].amax(0) - poses[i].amin(0)
        d = (poses[i] - poses[j]).norm(dim=-1)
        return int((d < thr * box.norm()).sum()) > num

    for i in range(t):
        if i in suppressed:
            continue
        group = [j for j in range(t) if valid[j] and (j == i or dup(i, j))]
        best = max(group, key=lambda j: (float(rank[j]), -j))  # best rank, first index on ties
        if best in suppressed:
            continue
        keep.add(best)
        suppressed |= set(group)
    return keep


def greedy(poses, rank, valid, thr, num):
    order = sorted((i for i in range(len(poses)) if valid[i]), key=lambda i: (-float(rank[i]), i))
    keep = []
    for j in order:
        if not any(_dup(poses, i, j, thr, num) for i in keep):
            keep.append(j)
    return set(keep)


def _dup(poses, i, j, thr, num):
    box = poses[i].amax(0) - poses[i].amin(0)
    return int(((poses[i] - poses[j]).norm(dim=-1) < thr * box.norm()).sum()) > num


def test_chain_official_differs_from_greedy():
    # decoder order [C, B, A], A~B and B~C duplicates, A and C are not (8 px > 5 px apart).
    a = line_pose()
    b, c = line_pose(4.0), line_pose(8.0)
    poses = torch.cat([c, b, a], 1)
    scores, valid = torch.tensor([[0.1, 0.5, 0.9]]), torch.ones(1, 3, dtype=torch.bool)
    # greedy: A (best) suppresses B, C survives
    assert pose_nms(poses, scores, valid, 0.05, 8, method="greedy").tolist() == [[True, False, True]]
    # official: walking C first, its group {C, B} keeps B and suppresses both; then A's group
    # {B, A} keeps A (B is already kept and suppressed, A is free): C is gone, B stays.
    assert pose_nms(poses, scores, valid, 0.05, 8).tolist() == [[False, True, True]]


def test_suppressed_winner_drops_the_group_unmarked():
    # Q (small box) is kept from P's group. R has a large box, so under R's own threshold Q
    # duplicates R, but under Q's threshold R is not a duplicate of Q. Walking R: its best
    # member is Q, already suppressed -> nothing kept and R's group is NOT marked, yet R itself
    # is never kept. Greedy keeps R (Q does not suppress it).
    q = line_pose(0.0, 20.0)  # diagonal 20 -> 1 px threshold
    p = q + 0.5
    r = q.clone()
    r[:, :, :9, 1] += 3.0  # 9 joints 3 px from Q's: not close under Q's 1 px threshold ...
    r[:, :, 9:, 1] += 200.0  # ... but close under R's own: diagonal ~ 200 -> 10 px
    poses = torch.cat([p, q, r], 1)
    scores = torch.tensor([[0.3, 0.9, 0.5]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert pose_nms(poses, scores, valid, 0.05, 8, method="greedy").tolist() == [[False, True, True]]
    assert pose_nms(poses, scores, valid, 0.05, 8).tolist() == [[False, True, False]]
    # with R moved in front of P, R's walk comes first: R's group {P, Q, R} keeps Q
    poses2 = torch.cat([r, p, q], 1)
    scores2 = torch.tensor([[0.5, 0.3, 0.9]])
    assert pose_nms(poses2, scores2, valid, 0.05, 8).tolist() == [[False, False, True]]


def test_ranking_score_is_a_parameter_and_caps():
    a = line_pose()
    b, far = line_pose(1.0), line_pose(500.0)
    poses = torch.cat([a, b, far], 1)
    valid = torch.ones(1, 3, dtype=torch.bool)
    # LOGO-CAP ranks by pose score, DEKR by mean heat value: the group winner follows the ranking
    assert pose_nms(poses, torch.tensor([[0.2, 0.8, 0.1]]), valid).tolist() == [[False, True, True]]
    assert pose_nms(poses, torch.tensor([[0.8, 0.2, 0.1]]), valid).tolist() == [[True, False, True]]
    # the cap keeps the best-ranked survivors
    assert pose_nms(poses, torch.tensor([[0.2, 0.8, 0.9]]), valid, max_people=1).tolist() == \
        [[False, False, True]]
    # ties: the first index wins (torch.argmax, as in the release)
    assert pose_nms(poses, torch.tensor([[0.5, 0.5, 0.1]]), valid).tolist() == [[True, False, True]]


def test_invalid_neither_survive_nor_suppress_and_degenerate_box():
    a, b = line_pose(), line_pose(1.0)
    dot = torch.full((1, 1, K, 2), 300.0)  # zero-size box: its own group only
    poses = torch.cat([a, b, dot], 1)
    scores = torch.tensor([[0.2, 0.9, 0.5]])
    valid = torch.tensor([[True, False, True]])
    assert pose_nms(poses, scores, valid).tolist() == [[True, False, True]]
    empty = pose_nms(torch.zeros(2, 0, K, 2), torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool))
    assert empty.shape == (2, 0)


def test_random_chains_match_plain_walk_batched():
    """Clustered random poses (many overlapping chains), B = 6 images in one call: the batched
    procedure equals the per-image plain-Python walk; greedy equals plain greedy."""
    g = torch.Generator().manual_seed(0)
    b, t = 6, 30
    base = torch.rand(b, 4, 1, K, 2, generator=g) * 60 + torch.rand(b, 4, 1, 1, 2, generator=g) * 300
    poses = (base + torch.randn(b, 4, 8, 1, 2, generator=g) * 3).reshape(b, 32, K, 2)[:, :t]
    poses = poses + torch.randn(b, t, K, 2, generator=g) * 0.5
    rank = torch.rand(b, t, generator=g)
    valid = torch.rand(b, t, generator=g) > 0.15
    disagree = 0
    for thr, num in ((0.05, 8), (0.15, 10)):
        off = pose_nms(poses, rank, valid, thr, num, max_people=t)
        grd = pose_nms(poses, rank, valid, thr, num, max_people=t, method="greedy")
        for i in range(b):
            want = walk(poses[i], rank[i], valid[i], thr, num)
            assert set(off[i].nonzero()[:, 0].tolist()) == want
            assert set(grd[i].nonzero()[:, 0].tolist()) == greedy(poses[i], rank[i], valid[i], thr, num)
            one = pose_nms(poses[i:i + 1], rank[i:i + 1], valid[i:i + 1], thr, num, max_people=t)
            assert torch.equal(one[0], off[i])
        disagree += int((off != grd).any(1).sum())
    assert disagree > 0  # the scenes really exercise the difference


def test_unknown_method_is_one_clear_error():
    from logocap.config import DEFAULTS

    assert DEFAULTS["test"]["pose_nms"] == "official"
    with pytest.raises(LogocapError, match="test.pose_nms must be one of official, greedy"):
        pose_nms(line_pose(), torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool), method="soft")
