"""Known answers for the LOGO-CAP meshes, gather, adaptation, top-2 and the batched decoder."""
import pytest
import torch

from logocap.codecs.decode import run_with_flip
from logocap.codecs.logocap_decode import adapt, decode_logocap, gaussian_window, top2
from logocap.codecs.mesh import bilinear_sample, global_offsets, local_mesh
from logocap.meta import COCO
from logocap.models import create_model

K = COCO.num_keypoints


def test_local_mesh_values():
    pose = torch.zeros(1, 1, K, 2)
    pose[..., 0], pose[..., 1] = 10.0, 20.0
    mesh = local_mesh(pose, COCO.sigmas, size=11)
    assert mesh.shape == (1, 1, K, 11, 11, 2)
    assert torch.equal(mesh[0, 0, :, 5, 5], pose[0, 0])  # inclusive mesh: centre = initial pose
    # left hip (index 11): step .107 / .025 = 4.28 px; row = dy, column = dx
    assert mesh[0, 0, 11, 5, 10, 0].item() == pytest.approx(10 + 5 * 4.28)
    assert mesh[0, 0, 11, 0, 5, 1].item() == pytest.approx(20 - 5 * 4.28, abs=1e-4)
    assert mesh[0, 0, 1, 5, 0, 0].item() == pytest.approx(5.0)  # eye: 1 px steps
    half = local_mesh(pose, COCO.sigmas, size=11, scale=0.5)
    assert half[0, 0, 11, 5, 10, 0].item() == pytest.approx(10 + 2.5 * 4.28)
    g = global_offsets(97)
    assert g.shape == (97, 97, 2) and g[0, 0].tolist() == [-48, -48] and g[48, 96].tolist() == [48, 0]


def test_bilinear_official_vs_clean_edges():
    W = 4
    maps = torch.arange(1.0, W + 1).view(1, 1, 1, W).expand(1, 1, 2, W).contiguous()  # f(x) = x + 1
    xs = torch.tensor([-2.0, 0.0, 1.5, 3.0, 3.25, 7.0])
    pts = torch.stack((xs, torch.zeros_like(xs)), -1)[None]
    off = bilinear_sample(maps, pts, "official")[0, :, 0]
    clean = bilinear_sample(maps, pts, "clean")[0, :, 0]
    # official: replicate below 0 / from W on, 0 exactly at W-1, attenuated in (W-1, W)
    assert off.tolist() == pytest.approx([1.0, 1.0, 2.5, 0.0, 0.25 * 4, 4.0])
    assert clean.tolist() == pytest.approx([1.0, 1.0, 2.5, 4.0, 4.0, 4.0])
    # the interior row: y is exactly the last row too (H-1 = 1) -> official 0
    assert bilinear_sample(maps, torch.tensor([[[1.5, 1.0]]]), "official").item() == 0.0


def test_adaptation_is_a_true_convolution():
    torch.manual_seed(0)
    a, m = 9, 3
    hm = torch.rand(2, K, a, a)
    kam = torch.rand(2, K, m, m)
    out = adapt(hm, kam)
    # explicit double sum: out(p) = sum_u KAM(u) / m^2 * hm(p - u), u in [-1, 1]^2, zero outside
    r = m // 2
    n, k, py, px = 1, 4, 2, 7
    ref = 0.0
    for uy in range(-r, r + 1):
        for ux in range(-r, r + 1):
            y, x = py - uy, px - ux
            if 0 <= y < a and 0 <= x < a:
                ref += kam[n, k, uy + r, ux + r].item() / (m * m) * hm[n, k, y, x].item()
    assert out[n, k, py, px].item() == pytest.approx(ref, rel=1e-5)


def test_top2_convex_average():
    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 2, 3] = 1.0  # top-1 at x=3, y=2 -> offset (+1, 0)
    maps[0, 0, 3, 3] = 0.6  # top-2 at x=3, y=3 -> offset (+1, +1)
    off, val = top2(maps, 0.75)
    assert off[0, 0].tolist() == pytest.approx([1.0, 0.25])
    assert val.item() == pytest.approx(0.75 + 0.25 * 0.6)


def test_gaussian_window_truncation():
    g = gaussian_window(97, 16.0)
    assert g[48, 48].item() == 1.0 and g.min().item() > 0  # 1.23e-4 at the corner: no cut
    assert gaussian_window(97, 8.0).min().item() == 0.0


@pytest.mark.parametrize("adaptation", ["none", "kems", "partial", "full"])
def test_decode_batch_shapes(adaptation):
    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fused, plain = run_with_flip(model, x, COCO)
    cfg = {"adaptation": adaptation, "topk": 5, "center_threshold": -1e9, "global_size": 31}
    out = decode_logocap(model, fused, plain["embedding"], COCO, cfg)
    assert out["poses"].shape == (2, 5, K, 3)
    assert out["scores"].shape == (2, 5) and out["valid"].shape == (2, 5)
    assert torch.isfinite(out["poses"]).all()
    if adaptation in ("full", "kems"):  # refined joints stay inside the global window around the initial pose
        d = (out["poses"][..., :2] - out["initial_poses"]).abs()
        assert d.max() <= 15 + 1e-4
    # per-image independence: decoding image 1 alone gives the same result
    one = decode_logocap(model, {k: v[1:] for k, v in fused.items()}, plain["embedding"][1:], COCO, cfg)
    assert torch.allclose(one["poses"][0], out["poses"][1], atol=1e-5)


def test_kems_only_moves_each_joint_to_the_reweighed_heat_peak():
    """Table 7 "KEMs only": no KAM, the joint goes to the peak of (heatmap x Gaussian)."""
    from logocap.codecs.logocap_decode import decode_logocap as dec

    class NoKam(torch.nn.Module):
        def kam(self, x):  # must not be called for "kems"
            raise AssertionError("KAM used")

    B, h = 1, 16
    heat = torch.zeros(B, K + 1, h, h)
    heat[0, K, 8, 8] = 1.0  # one center at output (8, 8) -> input (32, 32)
    offsets = torch.zeros(B, 2 * K, h, h)  # every joint starts at the center
    heat[0, :K, 9, 10] = 1.0  # all joint heatmaps peak at output (10, 9) -> input (40, 36)
    cfg = {"adaptation": "kems", "topk": 1, "global_size": 31, "upsample": "aligned",
           "gaussian_sigma": 16.0, "top2_lambda": 1.0}
    out = dec(NoKam(), {"heatmaps": heat, "offsets": offsets}, torch.zeros(B, 4, h, h), COCO, cfg)
    assert torch.allclose(out["poses"][0, 0, :, :2], torch.tensor([40.0, 36.0]).expand(K, 2), atol=1e-4)
