"""Stage timing of the DEKR-like decoders (issue 8, speed): the network split into backbone /
heads / adaptive convs by forward hooks, decode and rescoring; the timing changes no output and
registers nothing when off; ``logocap bench speed`` times several models and candidate counts in
one interleaved run."""
import json
import time

import cv2
import numpy as np
import pytest
import torch

from logocap.cli import main
from logocap.engine.speed import (ForcedCenters, TimedNet, random_rescorer, time_paths,
                                  time_ratio, with_topk)
from logocap.meta import COCO
from logocap.models import create_model
from logocap.models.stages import find_module, network_stages
from logocap.predict import Predictor
from logocap.utils import LogocapError

NET_STAGES = {"dekr_hrnet_tiny": ("backbone", "heads", "adaptive_convs"),
              "sar_dekr_hrnet_tiny": ("backbone", "heads", "adaptive_convs"),
              "hgr_hrnet_tiny": ("backbone", "heads", "regression")}


def _predictor(name, impl="fast", **cfg):
    torch.manual_seed(0)
    model = create_model(name, backbone_init="kaiming")
    return Predictor(model, COCO, 64, {"impl": impl, **cfg})


def _batch(pred, n=2):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]
    return torch.stack([pred.prepare(i)[0] for i in imgs])


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("name", sorted(NET_STAGES))
def test_stages_sum_to_the_call_and_change_nothing(name):
    pred = _predictor(name, topk=5)
    x = _batch(pred)
    plain = pred.decode(x)
    timings = {}
    t0 = time.perf_counter()
    timed = pred.decode(x, timings)
    wall = time.perf_counter() - t0
    for key in ("poses", "scores", "valid", "keep"):
        assert torch.equal(plain[key], timed[key]), key
    assert set(NET_STAGES[name]) | {"decode"} == set(timings)
    assert all(v > 0 for v in timings.values())
    # one timeline from the decoder's start to its last tick: the stages cover the call
    assert sum(timings.values()) <= wall
    assert sum(timings.values()) >= 0.9 * wall - 0.005
    assert _hooks(pred.model) == 0  # the hooks are gone after the call


def test_network_stages_follow_the_forward_pass():
    """The network's stage boundaries fire in forward order and feed the decoders' ticker, outputs
    are unchanged, and a forward outside the ``with`` block (or with no timer) carries no hook."""
    from logocap.codecs.logocap_decode import _Ticker

    torch.manual_seed(0)
    model = create_model("dekr_hrnet_tiny").eval()
    net = TimedNet(ForcedCenters(model), "cpu")
    x = torch.randn(2, 3, 64, 64)
    with network_stages(net, None):
        assert _hooks(model) == 0
    calls = []  # a recording timer: the stage boundaries in the order the forward reaches them
    with torch.no_grad(), network_stages(net, calls.append):
        assert _hooks(model) == 3
        out = net(x)
    assert _hooks(model) == 0
    assert calls == ["backbone", "heads", "adaptive_convs"]
    timings = {}  # the decoders' ticker on the same hooks: one entry per stage, all positive
    tick = _Ticker(timings, "cpu")
    with torch.no_grad(), network_stages(net, tick):
        net(x)
    assert list(timings) == ["backbone", "heads", "adaptive_convs"]
    assert all(v > 0 for v in timings.values())
    with torch.no_grad():
        ref = model(x)
    assert torch.equal(ref["offsets"], out["offsets"])
    assert find_module(net) is model and find_module(object()) is None


def test_forced_dekr_candidates_rescoring_stage_and_with_topk():
    pred = _predictor("dekr_hrnet_tiny", topk=30, center_threshold=-float("inf"))
    pred.net = TimedNet(ForcedCenters(pred.net), "cpu")
    x = _batch(pred, 1)
    assert int(pred.decode(x)["valid"].sum()) == 30
    one = with_topk(pred, 1)
    assert int(one.decode(x)["valid"].sum()) == 1 and one.net is not pred.net
    assert pred.cfg["topk"] == 30  # the original keeps its own config
    pred.rescorer = random_rescorer(COCO)
    tensors, affines, sizes = zip(pred.prepare(np.zeros((64, 64, 3), np.uint8)))
    timings = {}
    plain = pred.predict_prepared(tensors, affines, sizes)
    timed = pred.predict_prepared(tensors, affines, sizes, timings)
    np.testing.assert_array_equal(plain[0].scores, timed[0].scores)
    assert timings["rescoring"] > 0 and "rest" in timings
    with pytest.raises(LogocapError, match="forced centers"):
        with_topk(_predictor("dekr_hrnet_tiny"), 3)


def test_time_paths_per_key_inputs_and_ratio():
    preds = {k: _predictor(k, topk=2) for k in ("dekr_hrnet_tiny", "center_offset_hrnet_tiny")}
    for p in preds.values():
        p.net = TimedNet(p.net, "cpu")
    prep = {k: [p.prepare(np.zeros((64, 64, 3), np.uint8))] for k, p in preds.items()}
    rec = time_paths(preds, prep, iters=2, warmup=0)
    assert {len(v) for v in rec.values()} == {2}
    a, b = rec["dekr_hrnet_tiny"], rec["center_offset_hrnet_tiny"]
    assert time_ratio(a, b) == pytest.approx(
        float(np.median([y["wall"] / x["wall"] for x, y in zip(a, b)])))
    with pytest.raises(LogocapError, match="same number"):
        time_paths(preds, {"dekr_hrnet_tiny": prep["dekr_hrnet_tiny"]}, iters=1)
    with pytest.raises(LogocapError, match="interleaved"):
        time_ratio(a, b[:1])


def test_bench_speed_breakdown_two_models_two_counts(tmp_path, capsys):
    out = tmp_path / "speed.json"
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    rc = main(["bench", "speed", "--model", "logocap_hrnet_tiny", "dekr_hrnet_tiny",
               "--inputs", str(photo), "--size", "64", "--iters", "1", "--candidates", "1", "4",
               "--paths", "fast", "--threads", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "randomly initialised rescoring net" in text and "dekr_hrnet_tiny / logocap" in text
    rep = json.loads(out.read_text())
    rows = {(r["model"], r["candidates"]): r for r in rep["rows"]}
    assert set(rows) == {(m, n) for m in ("logocap_hrnet_tiny", "dekr_hrnet_tiny") for n in (1, 4)}
    for (model, n), r in rows.items():
        st = r["stages_ms_per_image"]
        assert r["rescoring"] == "random" and st["rescoring"] > 0
        net = ("backbone", "heads", "adaptive_convs") if model.startswith("dekr") else ("network",)
        assert all(st[k] > 0 for k in net)
        assert r["network_ms_per_image"] == pytest.approx(sum(st[k] for k in net))
        # one iteration: the stages are timed inside the call, so they cannot sum to more than
        # its wall time (a share of it is a timing claim this test leaves to the benchmark)
        assert 0 < sum(st.values()) <= r["ms_per_image"] * (1 + 1e-9)
    ratios = {(tuple(r["models"]), r["candidates"]): r for r in rep["model_ratios"]}
    assert set(ratios) == {(("logocap_hrnet_tiny", "dekr_hrnet_tiny"), n) for n in (1, 4)}
    r = ratios[(("logocap_hrnet_tiny", "dekr_hrnet_tiny"), 4)]
    assert r["ms_per_image"] == pytest.approx([rows[("logocap_hrnet_tiny", 4)]["ms_per_image"],
                                               rows[("dekr_hrnet_tiny", 4)]["ms_per_image"]])
    assert r["first_faster_by"] == pytest.approx(r["ms_per_image"][1] / r["ms_per_image"][0])


def test_bench_speed_rejects_a_repeated_model(capsys):
    assert main(["bench", "speed", "--model", "dekr_hrnet_tiny", "dekr_hrnet_tiny"]) == 2
    assert "twice" in capsys.readouterr().err
