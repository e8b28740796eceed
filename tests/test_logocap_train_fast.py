"""The fast LOGO-CAP training step against a frozen copy of the computation it replaced.

The criterion now reads the global KEMs with the window gather and its own backward
(``mesh.sample_window``), runs the adaptation conv with a hand-written backward
(``logocap_decode._GroupedConv``), builds the per-mesh OKS and the Gaussian targets per axis and
avoids torch's slow exp path (``oks.exp_underflow``). ``_old_criterion`` below is the criterion
as it was before (per-point autograd gather, autograd conv backward, full-grid OKS and targets,
plain ``torch.exp``). The forward is built to give the same numbers, so the fp32 loss terms are
compared with torch.equal; gradients differ only by float summation order: fp64 to 1e-12, fp32 to
2e-5 of each parameter's largest gradient.
"""
import pytest
import torch

from logocap.codecs.decode import center_offset_candidates, upsample_heatmaps
from logocap.codecs.logocap_decode import adapt, decode_cfg, refine
from logocap.codecs.mesh import global_offsets, local_mesh, sample_per_channel, sample_window
from logocap.codecs.oks import exp_underflow, keypoint_oks_batched, mesh_oks, oracle_assign
from logocap.losses.logocap import OKS_KEEP, LogoCapCriterion
from logocap.meta import COCO
from logocap.models import create_model

K = COCO.num_keypoints


# ------------------------------------------------------------------------- the frozen old code
def _old_mesh_oks(mesh, gt, areas, sigmas):
    B, T, K_, m, _, _ = mesh.shape
    pts = mesh.permute(0, 1, 3, 4, 2, 5).reshape(B, T * m * m, K_, 2)
    sig = torch.as_tensor(sigmas, dtype=pts.dtype)
    d2 = ((pts[:, :, None] - gt[:, None, :, :, :2]) ** 2).sum(-1)
    denom = (2 * areas[:, None, :, None] * (2 * sig) ** 2).clamp_min(1e-6)
    oks = torch.exp(-d2 / denom) * (gt[:, None, :, :, 2] > 0).to(pts.dtype)
    return oks.reshape(B, T, m, m, gt.shape[1], K_).permute(0, 1, 4, 5, 2, 3)


def _old_criterion(crit, model, batch):
    """LogoCapCriterion.__call__ as it was: the reference gather and conv through autograd."""
    out = model(batch["image"])
    terms = crit.base.terms(out, batch)
    cfg = {**crit.dcfg, "impl": "reference"}
    sigmas, ws = crit.sigmas, float(cfg["window_scale"])
    cand = center_offset_candidates(out["heatmaps"].detach(), out["offsets"].detach(),
                                    {**cfg, "center_threshold": -float("inf")})
    poses = cand["poses"]
    mesh = local_mesh(poses, sigmas, int(cfg["local_size"]), ws)
    gt, areas = batch["gt_keypoints"].to(poses), batch["gt_areas"].to(poses)
    info = oracle_assign(_old_mesh_oks(mesh, gt, areas, sigmas), gt, batch["gt_mask"].bool())
    keep = info["person_best"] >= OKS_KEEP
    gate = keep.to(poses.dtype)
    bi, ti = keep.nonzero(as_tuple=True)
    n_valid = gate[bi, ti].sum().clamp_min(1.0)
    m = mesh.shape[-2]
    oks_t = info["joint_oks"][bi, ti]
    w = (oks_t.flatten(-2).amax(-1) - oks_t[:, :, m // 2, m // 2]) * gate[bi, ti, None]
    p0 = poses[bi, ti]
    up = upsample_heatmaps(out["heatmaps"], 4, cfg["upsample"])
    r = refine(model, up, out["embedding"], bi, p0, sigmas, cfg, clamp=False, mesh=mesh[bi, ti])
    size = int(cfg["global_size"])
    gt_a = gt[bi, info["assignment"][bi, ti]]
    grid = p0[:, :, None, None, :] + global_offsets(size, 1.0).to(p0.dtype)
    d2 = ((grid - gt_a[:, :, None, None, :2]) ** 2).sum(-1)
    target_hm = torch.exp(-d2 / (2.0 * (crit.refined_sigma * ws) ** 2))
    w4 = w[..., None, None]
    terms["kam"] = crit.kam_factor * (w4 * (r["kams"] - oks_t) ** 2).mean((1, 2, 3)).sum() / n_valid
    terms["refined"] = crit.refined_factor * (w4 * (r["refined"] - target_hm) ** 2).mean()
    total = terms["heatmap"] + terms["offset"] + terms["kam"] + terms["refined"]
    return {"loss": total, **terms}, int(gate.sum())


# ------------------------------------------------------------------------- fixtures
def _batch(model, S=128, B=2, dtype=torch.float32):
    """People whose GT joints are the model's own initial candidates moved by a few px, so that
    most candidates pass the OKS gate with a mesh OKS that varies (w > 0), plus far GT people
    (OKS ~ 0, exp far below -87) and an unlabelled joint."""
    g = torch.Generator().manual_seed(1)
    h = S // 4
    img = torch.randn(B, 3, S, S, generator=g, dtype=dtype)
    with torch.no_grad():
        out = model(img)
        cand = center_offset_candidates(out["heatmaps"], out["offsets"],
                                        {"topk": 2, "center_threshold": -float("inf")})
    gt = torch.zeros(B, 3, K, 3, dtype=dtype)
    gt[:, :2, :, :2] = cand["poses"] + torch.randn(B, 2, K, 2, generator=g, dtype=dtype) * 3
    gt[:, 2, :, :2] = torch.rand(B, K, 2, generator=g, dtype=dtype) * S
    gt[..., 2] = 2
    gt[0, 0, 3, 2] = 0
    return {"image": img, "heatmaps": torch.rand(B, K + 1, h, h, generator=g, dtype=dtype),
            "heatmap_weights": torch.ones(B, 1, h, h, dtype=dtype),
            "offsets": torch.randn(B, 2 * K, h, h, generator=g, dtype=dtype),
            "offset_weights": torch.ones(B, 2 * K, h, h, dtype=dtype),
            "gt_keypoints": gt,
            "gt_areas": torch.tensor([[900.0, 1600.0, 4.0]] * B, dtype=dtype),
            "gt_mask": torch.tensor([[True, True, True], [True, True, False]])}


def _losses_and_grads(fn, model):
    model.zero_grad(set_to_none=True)
    out, kept = fn()
    out["loss"].backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads, kept


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_criterion_matches_the_old_computation(dtype):
    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").to(dtype).train()
    batch = _batch(model, dtype=dtype)
    dcfg = {"topk": 5, "global_size": 97, "gaussian_sigma": 8.0}
    crit = LogoCapCriterion({}, dcfg, sigmas=COCO.sigmas)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats move

    new, g_new, kept = _losses_and_grads(lambda: (crit(model, batch), crit.last_num_kept), model)
    model.load_state_dict(state)
    old, g_old, kept_old = _losses_and_grads(lambda: _old_criterion(crit, model, batch), model)

    assert kept == kept_old and kept >= 3  # several candidates take the refinement path
    for key in old:
        assert old[key] > 0, key
        if dtype == torch.float32:
            assert torch.equal(new[key], old[key]), (key, new[key], old[key])
        else:
            assert torch.allclose(new[key], old[key], rtol=1e-12, atol=0), key
    assert g_new.keys() == g_old.keys() and "joints_mlp.0.weight" in g_new
    tol = 1e-12 if dtype == torch.float64 else 2e-5  # measured: 4e-15 and 1.7e-6
    for name, g in g_old.items():
        scale = g.abs().max()
        assert (g_new[name] - g).abs().max() <= tol * scale, name


# ------------------------------------------------------------------------- the pieces
def test_exp_underflow_is_torch_exp():
    x = torch.cat([torch.linspace(-200.0, 5.0, 300007), torch.tensor([-1e30, -float("inf"), float("nan"),
                                                                      0.0, -104.0, -103.97, -87.3])])
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
    got, ref = exp_underflow(x), torch.exp(x)
    assert torch.equal(got[~ref.isnan()], ref[~ref.isnan()]) and got.isnan().equal(ref.isnan())
    assert (got[(x > -103.9) & (x < -87.4)] > 0).all()  # the subnormal results are kept
    xd = x.double()
    assert torch.equal(exp_underflow(xd).nan_to_num(), torch.exp(xd).nan_to_num())


def test_mesh_oks_per_axis_equals_the_full_grid():
    g = torch.Generator().manual_seed(2)
    B, T, G = 2, 6, 3
    poses = torch.rand(B, T, K, 2, generator=g) * 200
    gt = torch.cat([torch.rand(B, G, K, 2, generator=g) * 200, torch.ones(B, G, K, 1)], -1)
    gt[0, 1, :4, 2] = 0
    areas = torch.tensor([[3000.0, 50.0, 9e4], [1.0, 700.0, 2e3]])
    mesh = local_mesh(poses, COCO.sigmas, 11, 1.0)
    ref = _old_mesh_oks(mesh, gt, areas, COCO.sigmas)
    assert torch.equal(mesh_oks(mesh, gt, areas, COCO.sigmas), ref)
    bent = mesh.clone()
    bent[0, 0, 0, 3, 4, 0] += 0.5  # not a grid: the general path
    assert torch.equal(mesh_oks(bent, gt, areas, COCO.sigmas), _old_mesh_oks(bent, gt, areas, COCO.sigmas))
    # the per-point OKS (general path, upper bound) with the fast exp: the old formula's values
    pts = poses * 3 - 100  # far from every GT too
    sig = torch.as_tensor(COCO.sigmas)
    d2 = ((pts[:, :, None] - gt[:, None, :, :, :2]) ** 2).sum(-1)
    old = torch.exp(-d2 / (2 * areas[:, None, :, None] * (2 * sig) ** 2).clamp_min(1e-6)) * (gt[:, None, ..., 2] > 0)
    assert torch.equal(keypoint_oks_batched(pts, gt, areas, COCO.sigmas), old)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ["official", "clean"])
def test_window_gather_gradient_equals_the_per_point_gather(mode, channels_last):
    g = torch.Generator().manual_seed(4)
    b, h, w, n = 3, 130, 150, 9
    maps = torch.randn(b, K + 1, h, w, generator=g, dtype=torch.float64)
    if channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)
    bi = torch.randint(0, b, (n,), generator=g)
    c = torch.rand(n, K, 2, generator=g, dtype=torch.float64) * torch.tensor([w + 100.0, h + 100.0]) - 50
    c[0, :3] = torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0], [w - 0.5, 3.25]], dtype=torch.float64)
    for size in (97, 7):
        go = torch.randn(n, K, size, size, generator=g, dtype=torch.float64)
        m_ref, m_new = maps.clone().requires_grad_(), maps.clone().requires_grad_()
        ref = sample_per_channel(m_ref[:, :K], bi, c[:, :, None, None] + global_offsets(size).double(), mode)
        (ref * go).sum().backward()
        new = sample_window(m_new, bi, c, size, mode)
        (new * go).sum().backward()
        assert torch.equal(new, ref)
        assert torch.allclose(m_new.grad, m_ref.grad, rtol=0, atol=1e-10 * m_ref.grad.abs().max())
        assert m_new.grad[:, K].abs().max() == 0  # the center channel is not read
        assert m_new.grad.is_contiguous(memory_format=torch.channels_last) == channels_last
    with pytest.raises(ValueError, match="not differentiable in centers"):
        sample_window(maps.clone().requires_grad_(), bi, c.clone().requires_grad_(), 7, mode)


def test_adapt_backward_equals_autograd_conv():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, K, 33, 33, generator=g, dtype=torch.float64)
    kam = torch.randn(4, K, 11, 11, generator=g, dtype=torch.float64)
    go = torch.randn(4, K, 33, 33, generator=g, dtype=torch.float64)
    res = {}
    for impl in ("reference", "fast"):
        xi, ki = x.clone().requires_grad_(), kam.clone().requires_grad_()
        out = adapt(xi, ki, impl)
        (out * go).sum().backward()
        res[impl] = (out.detach(), xi.grad, ki.grad)
    assert torch.equal(res["fast"][0], res["reference"][0])
    for a, b in zip(res["fast"][1:], res["reference"][1:]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # inference: the plain conv, same values
        assert torch.equal(adapt(x, kam, "fast"), res["reference"][0])


def test_training_refine_impls_agree():
    """refine() with gradient: impl fast (new backward) == reference (autograd) in values and grads."""
    g = torch.Generator().manual_seed(6)
    b, d, h, w = 2, 4, 128, 144

    class Kam(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Conv2d(K * d, K, 1).double()

        def kam(self, x):
            return self.proj(x)

    model = Kam()
    up = torch.rand(b, K + 1, h, w, generator=g, dtype=torch.float64)
    emb = torch.randn(b, d, h // 4, w // 4, generator=g, dtype=torch.float64)
    bi = torch.tensor([0, 1, 1])
    poses = torch.rand(3, K, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h])
    res = {}
    for impl in ("reference", "fast"):
        u = up.clone().requires_grad_()
        model.zero_grad()
        r = refine(model, u, emb, bi, poses, COCO.sigmas, decode_cfg({"impl": impl, "global_size": 49}),
                   clamp=False)
        (r["refined"] ** 2).sum().backward()
        res[impl] = (r["refined"].detach(), u.grad, model.proj.weight.grad.clone())
    assert torch.equal(res["fast"][0], res["reference"][0])
    for a, b_ in zip(res["fast"][1:], res["reference"][1:]):
        assert torch.allclose(a, b_, rtol=1e-10, atol=1e-12 * b_.abs().max())
