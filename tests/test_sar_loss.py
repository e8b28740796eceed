"""SAR loss (losses/sar.py): gradient identities of notes §3, the single-component limit, masking,
empty input, the two forms, the quality focal loss and its zero-count guard."""
import math

import pytest
import torch

from logocap.losses.sar import (EPS, LAMBDA, SarTopDownCriterion, quality_focal_loss,
                                sar_candidates, sar_loss)

FORMS = ("reference", "logsumexp")


def _problem(seed=0, b=2, k=3, t=40, spread=0.05):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, k, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
    coords = target[..., None, :] + spread * torch.randn(b, k, t, 2, generator=g, dtype=torch.float64)
    logits = torch.randn(b, k, t, generator=g, dtype=torch.float64)
    weight = torch.ones(b, k, dtype=torch.float64)
    return coords, logits, target, weight


@pytest.mark.parametrize("form", FORMS)
def test_coordinate_gradient_is_lambda_gamma_sign(form):
    """dL/dK_t = lambda * gamma_t * sign(K_t - K*) / #valid, gamma_t = w_t r_t / sum_u w_u r_u."""
    coords, logits, target, weight = _problem()
    weight[1, 2] = 0  # one invisible keypoint: zero gradient there
    coords.requires_grad_(True)
    sar_loss(coords, logits, target, weight, form=form).backward()

    with torch.no_grad():
        c = torch.sigmoid(logits)
        w = c / c.sum(-1, keepdim=True)
        r = torch.exp(-LAMBDA * (coords - target[..., None, :]).abs().sum(-1))
        s = (w * r).sum(-1, keepdim=True)
        gamma = w * r / s
        expected = LAMBDA * gamma[..., None] * torch.sign(coords - target[..., None, :])
        expected = expected * weight[..., None, None] / weight.sum()
        if form == "reference":  # the release's epsilon: gamma over (sum + eps)
            expected = expected * (s / (s + EPS))[..., None]
    assert torch.allclose(coords.grad, expected, rtol=1e-10, atol=1e-14)
    assert torch.all(coords.grad[1, 2] == 0)
    # the epsilon is negligible here: the reference gradient is gamma's within 1e-4
    assert (s > 0.05).all()


def test_selector_gradient_moves_mass_to_better_than_average_cells():
    """dL/ds_t = (1 - c_t) (w_t - gamma_t): down where r_t is above the mixture average."""
    coords, logits, target, weight = _problem(seed=1, b=1, k=1)
    logits.requires_grad_(True)
    sar_loss(coords, logits, target, weight, form="logsumexp").backward()
    with torch.no_grad():
        c = torch.sigmoid(logits)
        w = c / c.sum(-1, keepdim=True)
        r = torch.exp(-LAMBDA * (coords - target[..., None, :]).abs().sum(-1))
        gamma = w * r / (w * r).sum(-1, keepdim=True)
        expected = (1 - c) * (w - gamma)
    assert torch.allclose(logits.grad, expected, rtol=1e-10, atol=1e-14)
    better = r > (w * r).sum(-1, keepdim=True)
    assert (logits.grad[better] < 0).all() and (logits.grad[~better] > 0).all()


@pytest.mark.parametrize("form", FORMS)
def test_single_component_is_lambda_l1(form):
    target = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    coords = torch.tensor([[[0.53, 0.21]]], dtype=torch.float64)  # T = 1: w = 1
    l1 = 0.03 + 0.04
    loss = sar_loss(coords, torch.zeros(1, 1, dtype=torch.float64), target, torch.ones(1), form=form)
    tol = EPS / math.exp(-LAMBDA * l1) if form == "reference" else 1e-12
    assert abs(float(loss) - LAMBDA * l1) <= tol * 1.01
    # one component holding (almost) all the weight among many
    coords = torch.cat([coords, torch.rand(1, 9, 2, dtype=torch.float64)], 1)
    logits = torch.tensor([[40.0] + [-40.0] * 9], dtype=torch.float64)
    loss = sar_loss(coords, logits, target, torch.ones(1), form=form)
    assert abs(float(loss) - LAMBDA * l1) < 1e-4


@pytest.mark.parametrize("form", FORMS)
def test_empty_and_invisible_give_zero_with_finite_gradients(form):
    coords, logits, target, weight = _problem()
    target[0, 1] = float("nan")  # whatever an invisible keypoint holds must not leak
    coords.requires_grad_(True)
    logits.requires_grad_(True)
    loss = sar_loss(coords, logits, target, torch.zeros_like(weight), form=form)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.all(coords.grad == 0) and torch.all(logits.grad == 0)
    # an empty batch (no sample at all)
    c0 = torch.zeros(0, 3, 5, 2, requires_grad=True)
    l0 = sar_loss(c0, torch.zeros(0, 3, 5), torch.zeros(0, 3, 2), torch.zeros(0, 3), form=form)
    l0.backward()
    assert float(l0.detach()) == 0.0 and torch.isfinite(c0.grad).all()
    # a NaN target of a masked keypoint does not change the loss of the others
    weight[0, 1] = 0
    a = sar_loss(coords.detach(), logits.detach(), target, weight, form=form)
    target[0, 1] = 0.3
    b = sar_loss(coords.detach(), logits.detach(), target, weight, form=form)
    assert torch.isfinite(a) and float(a) == float(b)


def test_forms_agree_near_the_target_and_differ_far_away():
    coords, logits, target, weight = _problem()
    ref = sar_loss(coords, logits, target, weight, form="reference")
    lse = sar_loss(coords, logits, target, weight, form="logsumexp")
    assert abs(float(ref) - float(lse)) < 1e-3
    far = coords + 3.0  # every cell ~3 map widths off: r ~ exp(-96)
    ref = sar_loss(far, logits, target, weight, form="reference")
    lse = sar_loss(far, logits, target, weight, form="logsumexp")
    assert abs(float(ref) - (-math.log(EPS))) < 1e-3  # saturates at -log(1e-6) ~ 13.8
    assert float(lse) > 80.0
    with pytest.raises(ValueError, match="form"):
        sar_loss(coords, logits, target, weight, form="other")


def test_sar_candidates_are_location_minus_offset_normalised():
    off = torch.zeros(1, 4, 3, 5)
    off[0, 2, 1, 4] = 1.5  # joint 1, x offset at cell (y 1, x 4)
    off[0, 3, 1, 4] = -0.5
    c = sar_candidates(off)  # [1, 2, 15, 2]
    assert c.shape == (1, 2, 15, 2)
    assert torch.allclose(c[0, 0, 1 * 5 + 4], torch.tensor([4 / 5, 1 / 3]))
    assert torch.allclose(c[0, 1, 1 * 5 + 4], torch.tensor([(4 - 1.5) / 5, (1 + 0.5) / 3]))
    assert torch.allclose(c[0, 1, 2 * 5 + 0], torch.tensor([0.0, 2 / 3]))


def test_quality_focal_loss_values_and_zero_count_guard():
    log2 = math.log(2.0)
    z = torch.zeros(1, 1, 1, 2)
    # no positive pixel: the sum (2 x 0.25 log 2) divided by the guard 1, finite gradient
    zl = z.clone().requires_grad_(True)
    loss = quality_focal_loss(zl, torch.zeros(1, 1, 1, 2))
    loss.backward()
    assert abs(float(loss.detach()) - 0.5 * log2) < 1e-6 and torch.isfinite(zl.grad).all()
    # one pixel at target 1 (BCE log 2 x |1 - 0.5|^2) and one negative; count 1
    loss = quality_focal_loss(z, torch.tensor([[[[1.0, 0.0]]]]))
    assert abs(float(loss) - 0.5 * log2) < 1e-6
    # a soft positive below 0.7 counts as positive in the sum but not in the normaliser
    t = torch.tensor([[[[1.0, 0.5]]]])
    expect = 0.25 * log2 + log2 * 0.0  # BCE(0, 0.5) = log 2, weight |0.5 - 0.5|^2 = 0
    assert abs(float(quality_focal_loss(z, t)) - expect) < 1e-6


def test_criterion_on_a_tiny_model_is_finite_and_differentiable():
    from logocap.models import create_model

    torch.manual_seed(0)
    model = create_model("sar_hrnet_tiny_topdown", num_keypoints=5)
    batch = {"image": torch.randn(2, 3, 128, 96),
             "keypoints": torch.rand(2, 5, 2) * torch.tensor([95.0, 127.0]),
             "keypoint_weights": torch.tensor([[1.0, 1, 0, 1, 1], [0, 0, 0, 0, 0]]),
             "heatmaps": torch.rand(2, 5, 32, 24)}
    for form in FORMS:
        out = SarTopDownCriterion({"sar_form": form})(model, batch)
        assert set(out) == {"loss", "sar", "heatmap"}
        assert torch.isfinite(out["loss"])
        model.zero_grad()
        out["loss"].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="sar_form"):
        SarTopDownCriterion({"sar_form": "nope"})
