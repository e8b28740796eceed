"""Known answers for per-joint OKS and the oracle best-in-window assignment."""
import math

import torch

from logocap.codecs.mesh import local_mesh
from logocap.codecs.oks import keypoint_oks, mesh_oks, oracle_assign, oracle_refine
from logocap.meta import COCO

K = COCO.num_keypoints


def test_keypoint_oks_formula_and_unlabelled():
    gt = torch.zeros(1, K, 3)
    gt[0, :, 2] = 2
    gt[0, 3, 2] = 0  # unlabelled joint -> 0
    pred = gt[0, :, :2].clone()
    pred[0, 0] += 3.0  # nose 3 px off in x
    area = torch.tensor([400.0])
    oks = keypoint_oks(pred, gt, area, COCO.sigmas)  # [G, K]
    expect = math.exp(-9.0 / (2 * 400.0 * (2 * COCO.sigmas[0]) ** 2))
    assert oks.shape == (1, K)
    assert abs(oks[0, 0].item() - expect) < 1e-6
    assert oks[0, 1].item() == 1.0 and oks[0, 3].item() == 0.0


def test_oracle_assignment_picks_right_person_and_best_point():
    # two GT people far apart; a candidate near person 1 whose elbow is 6 px off
    gt = torch.zeros(2, K, 3)
    gt[0, :, :2] = torch.tensor([20.0, 20.0])
    gt[1, :, :2] = torch.tensor([100.0, 60.0]) + torch.arange(K, dtype=torch.float32)[:, None]
    gt[..., 2] = 2
    areas = torch.tensor([900.0, 900.0])
    pose = gt[1, :, :2].clone()
    pose[7, 0] += 2 * 2.88  # left elbow: exactly 2 mesh steps (2.88 px each) to the right
    mesh = local_mesh(pose[None], COCO.sigmas)  # [1, K, 11, 11, 2]
    info = oracle_assign(mesh_oks(mesh[None], gt[None], areas[None], COCO.sigmas), gt[None])
    assert info["assignment"].item() == 1
    assert abs(info["match"].item() - 1.0) < 1e-5  # every joint reachable in the window
    assert info["person_best"].item() < 1.0  # but not all at the same mesh index
    best = oracle_refine(mesh, gt, areas, COCO.sigmas)
    assert torch.allclose(best[0], gt[1, :, :2], atol=1e-4)


def test_kam_target_is_oks_over_mesh():
    gt = torch.zeros(1, K, 3)
    gt[0, :, :2] = 50.0
    gt[0, :, 2] = 2
    pose = gt[0, :, :2].clone()
    mesh = local_mesh(pose[None], COCO.sigmas, size=3)
    joint = mesh_oks(mesh[None], gt[None], torch.tensor([[100.0]]), COCO.sigmas)[0, 0, 0]  # [K,3,3]
    # eye (sigma .025, step 1 px): corner point is sqrt(2) px away
    expect = math.exp(-2.0 / (2 * 100.0 * (2 * 0.025) ** 2))
    assert abs(joint[1, 0, 0].item() - expect) < 1e-6
    assert joint[1, 1, 1].item() == 1.0


def test_padding_rows_never_win_and_no_gt():
    gt = torch.zeros(1, 2, K, 3)
    gt[0, 1, :, 2] = 2  # the real person is row 1
    gt[0, 0, :, :2] = 5.0
    gt[0, 0, :, 2] = 2  # padded row that would match perfectly
    mesh = local_mesh(torch.full((1, 1, K, 2), 5.0), COCO.sigmas)
    areas = torch.full((1, 2), 100.0)
    info = oracle_assign(mesh_oks(mesh, gt, areas, COCO.sigmas), gt, torch.tensor([[False, True]]))
    assert info["assignment"].item() == 1
    none = oracle_assign(mesh_oks(mesh, gt, areas, COCO.sigmas), gt, torch.tensor([[False, False]]))
    assert none["person_best"].item() == 0.0 and none["match"].item() == -1.0
