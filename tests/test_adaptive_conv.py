"""Pure-PyTorch adaptive / deformable convolution against a per-pixel loop reference."""
import torch
import torch.nn.functional as F

from logocap.models.adaptive import (AdaptBlock, DeformConv2d, adaptive_conv2d, deform_conv2d,
                                     regular_grid)


def _bilinear_zero(img, y, x):
    """img [C, H, W]; value at (y, x) with zero outside (each corner checked on its own)."""
    h, w = img.shape[-2:]
    y0, x0 = torch.floor(y), torch.floor(x)
    out = img.new_zeros(img.shape[0])
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = int(y0) + dy, int(x0) + dx
            wy = (y - y0) if dy else (1 - (y - y0))
            wx = (x - x0) if dx else (1 - (x - x0))
            if 0 <= yy < h and 0 <= xx < w:
                out = out + wy * wx * img[:, yy, xx]
    return out


def _loop_reference(x, transform, translation, weight):
    """Direct definition: out[b, :, p] = sum_n W[:, :, n] x(p + A(p) r_n + t(p))."""
    b, c, h, w = x.shape
    r = regular_grid(3, x.dtype)
    wk = weight.reshape(weight.shape[0], c, 9)
    rows = []
    for bi in range(b):
        img = []
        for i in range(h):
            for j in range(w):
                a = transform[bi, :, i, j].reshape(2, 2)
                t = translation[bi, :, i, j]
                acc = x.new_zeros(weight.shape[0])
                for n in range(9):
                    d = a @ r[:, n] + t  # (dy, dx)
                    acc = acc + wk[:, :, n] @ _bilinear_zero(x[bi], i + d[0], j + d[1])
                img.append(acc)
        rows.append(torch.stack(img, 1).reshape(-1, h, w))
    return torch.stack(rows)


def test_matches_the_loop_reference_forward_and_gradients():
    g = torch.Generator().manual_seed(0)
    b, c, o, h, w = 2, 3, 4, 5, 6
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    # random transforms around the identity plus translations up to ~2 px: samples land inside,
    # across borders and outside the map
    eye = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64).view(1, 4, 1, 1)
    a = (eye + 0.6 * torch.randn(b, 4, h, w, generator=g, dtype=torch.float64)).requires_grad_()
    t = (1.5 * torch.randn(b, 2, h, w, generator=g, dtype=torch.float64)).requires_grad_()
    wt = torch.randn(o, c, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)

    fast = adaptive_conv2d(x, a, t, wt)
    ref = _loop_reference(x, a, t, wt)
    assert fast.shape == (b, o, h, w)
    assert torch.allclose(fast, ref, atol=1e-10, rtol=0)
    up = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    g_fast = torch.autograd.grad((fast * up).sum(), (x, a, t, wt))
    g_ref = torch.autograd.grad((ref * up).sum(), (x, a, t, wt))
    for gf, gr in zip(g_fast, g_ref):
        assert torch.allclose(gf, gr, atol=1e-5, rtol=0), (gf - gr).abs().max()


def test_offset_form_equals_the_transform_form():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 5, generator=g, dtype=torch.float64)
    a = torch.randn(2, 4, 7, 5, generator=g, dtype=torch.float64)
    t = torch.randn(2, 2, 7, 5, generator=g, dtype=torch.float64)
    wt = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    r = regular_grid(3, torch.float64)
    ar = torch.einsum("brchw,cn->bnrhw", a.view(2, 2, 2, 7, 5), r)
    offset = (ar - r.t().reshape(1, 9, 2, 1, 1) + t.view(2, 1, 2, 7, 5)).reshape(2, 18, 7, 5)
    assert torch.allclose(deform_conv2d(x, offset, wt), adaptive_conv2d(x, a, t, wt), atol=1e-12)


def test_identity_transform_is_an_ordinary_conv():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 9, 8, generator=g, dtype=torch.float64)
    wt = torch.randn(6, 5, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(6, generator=g, dtype=torch.float64)
    a = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64).view(1, 4, 1, 1).expand(2, 4, 9, 8)
    t = torch.zeros(2, 2, 9, 8, dtype=torch.float64)
    conv = F.conv2d(x, wt, bias, padding=1)
    assert torch.allclose(adaptive_conv2d(x, a, t, wt, bias), conv, atol=1e-12)
    # the deformable form with zero offsets, also dilated and 5x5
    assert torch.allclose(deform_conv2d(x, torch.zeros(2, 18, 9, 8, dtype=torch.float64), wt, bias),
                          conv, atol=1e-12)
    w5 = torch.randn(3, 5, 5, 5, generator=g, dtype=torch.float64)
    assert torch.allclose(deform_conv2d(x, torch.zeros(2, 50, 9, 8, dtype=torch.float64), w5,
                                        dilation=2),
                          F.conv2d(x, w5, padding=4, dilation=2), atol=1e-12)
    # an integer translation is a shifted conv (the module form, float32)
    m = DeformConv2d(5, 6)
    shift = torch.zeros(1, 18, 9, 8)
    shift[:, 1::2] = 1.0  # every tap one pixel to the right
    xf = x[:1].float()
    ref = F.conv2d(F.pad(xf, (0, 2, 1, 1)), m.weight)  # tap dx reads column j + dx + 1
    assert torch.allclose(m(xf, shift), ref, atol=1e-5)


def test_adapt_block_released_init_and_residual():
    torch.manual_seed(0)
    blk = AdaptBlock(6).eval()
    assert blk.regular_matrix.tolist() == [[-1, -1, -1, 0, 0, 0, 1, 1, 1],
                                          [-1, 0, 1, -1, 0, 1, -1, 0, 1]]
    x = torch.randn(2, 6, 5, 7)
    # A = 0, t = 0 at init: every tap reads p itself -> a 1x1 conv with the summed kernel
    one_by_one = F.conv2d(x, blk.adapt_conv.weight.sum((2, 3), keepdim=True))
    assert torch.allclose(blk.offsets(x), -regular_grid(3).t().reshape(1, 18, 1, 1).expand(2, 18, 5, 7))
    assert torch.allclose(blk(x), torch.relu(blk.bn(one_by_one) + x), atol=1e-5)
    # gradients reach the transform and translation convs once they are non-zero
    blk.train()
    torch.nn.init.normal_(blk.transform_matrix_conv.weight, std=0.1)
    torch.nn.init.normal_(blk.translation_conv.weight, std=0.1)
    blk(x).sum().backward()
    for m in (blk.transform_matrix_conv, blk.translation_conv, blk.adapt_conv):
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    assert [k for k in blk.state_dict() if not k.startswith("bn.")] == [
        "regular_matrix", "transform_matrix_conv.weight", "transform_matrix_conv.bias",
        "translation_conv.weight", "translation_conv.bias", "adapt_conv.weight"]


def test_positions_stay_float32_under_bfloat16():
    # a translation of 0.3 px at x ~ 100 must survive: bfloat16 would round it away
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 128, generator=g)
    wt = torch.randn(3, 2, 3, 3, generator=g)
    a = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 4, 1, 1).expand(1, 4, 4, 128)
    t = torch.zeros(1, 2, 4, 128)
    t[:, 1] = 0.3
    ref = adaptive_conv2d(x, a, t, wt)
    low = adaptive_conv2d(x.bfloat16(), a.bfloat16(), t.bfloat16(), wt.bfloat16()).float()
    assert low.dtype == torch.float32
    err = (low - ref).abs()[..., 90:110].max()
    shifted = (adaptive_conv2d(x, a, torch.zeros_like(t), wt) - ref).abs()[..., 90:110].max()
    assert err < 0.1 * shifted  # only the values are rounded, not the 0.3 px shift


# --- the implementation before the training-speed rewrite (frozen here as the parity reference):
# positions from full-size elementwise ops, two convs for A and t, a 2-D @ 3-D matmul mix
def _old_adaptive_conv2d(x, transform, translation, weight, r):
    b, c, h, w = x.shape
    dt = torch.promote_types(x.dtype, torch.float32)
    r = r.to(dt)
    a = transform.to(dt).reshape(b, 2, 2, 1, h, w)
    ar = (a * r.view(1, 1, 2, -1, 1, 1)).sum(2)
    ys = torch.arange(h, dtype=dt).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=dt).view(1, 1, 1, w)
    t = translation.to(dt)
    py, px = ys + ar[:, 0] + t[:, 0:1], xs + ar[:, 1] + t[:, 1:2]
    gx, gy = (2.0 * px + 1.0) / w - 1.0, (2.0 * py + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(b, 9 * h, w, 2)
    taps = F.grid_sample(x.to(dt), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).to(x.dtype)
    o = weight.shape[0]
    return torch.matmul(weight.reshape(o, c * 9), taps.reshape(b, c * 9, h * w)).reshape(b, o, h, w)


def _old_block_forward(blk, x):
    out = _old_adaptive_conv2d(x, blk.transform_matrix_conv(x), blk.translation_conv(x),
                               blk.adapt_conv.weight, blk.regular_matrix)
    return torch.relu(blk.bn(out) + x)


def _trained_like_block(c, seed):
    """An AdaptBlock whose A and t vary per pixel: taps land inside, across and outside the map."""
    torch.manual_seed(seed)
    blk = AdaptBlock(c).train()
    with torch.no_grad():
        for m, std, bias in ((blk.transform_matrix_conv, 0.3, [1.0, 0.2, -0.3, 0.8]),
                             (blk.translation_conv, 1.0, [1.5, -2.0])):
            m.weight.normal_(0, std)
            m.bias.copy_(torch.tensor(bias))
    return blk


def _block_step(blk, forward, x, up):
    blk.zero_grad()
    x = x.detach().requires_grad_()
    y = forward(x)
    (y.float() * up).sum().backward()
    grads = {n: p.grad.clone() for n, p in blk.named_parameters()}
    return y, x.grad, grads


def test_block_matches_the_previous_implementation_fp32():
    blk = _trained_like_block(5, seed=1)
    x = torch.randn(3, 5, 12, 10)
    up = torch.randn(3, 5, 12, 10)
    y_new, gx_new, gp_new = _block_step(blk, blk, x, up)
    y_old, gx_old, gp_old = _block_step(blk, lambda v: _old_block_forward(blk, v), x, up)

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()

    assert rel(y_new, y_old) < 1e-5
    assert rel(gx_new, gx_old) < 1e-5
    for name, g in gp_old.items():
        assert g.abs().max() > 0, name  # every parameter gets a gradient in this set-up
        assert rel(gp_new[name], g) < 1e-5, name


def test_block_under_bf16_autocast_channels_last_tracks_the_previous_implementation():
    blk = _trained_like_block(4, seed=2).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 16, 16).to(memory_format=torch.channels_last)
    up = torch.randn(2, 4, 16, 16)
    ref, gref, _ = _block_step(blk, blk, x.float().contiguous(), up)  # fp32 truth
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_new, gx_new, _ = _block_step(blk, blk, x, up)
        y_old, gx_old, _ = _block_step(blk, lambda v: _old_block_forward(blk, v), x, up)
    assert y_new.dtype == y_old.dtype
    err_new, err_old = (y_new.float() - ref).norm(), (y_old.float() - ref).norm()
    assert err_new < 2 * err_old + 1e-3 * ref.norm()  # same bf16 error level as before
    gerr_new, gerr_old = (gx_new - gref).norm(), (gx_old - gref).norm()
    assert gerr_new < 2 * gerr_old + 1e-3 * gref.norm()
