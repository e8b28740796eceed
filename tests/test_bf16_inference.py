"""bf16 inference (test.precision: bf16, issue 13): the heavy convolutions run in bfloat16; the
layers that produce heatmaps, offsets and KAMs, and every coordinate, mesh, gather, pick and score
of the decoding, stay in float32."""
import numpy as np
import torch
from torch import nn

import logocap.codecs.logocap_decode as ld
from logocap.meta import COCO
from logocap.models import create_model
from logocap.predict import Predictor


def _bf16_exact(t: torch.Tensor) -> bool:
    """True when every value of the float32 tensor is a bfloat16 number (a rounded output)."""
    return torch.equal(t, t.bfloat16().float())


def test_bf16_path_keeps_coordinate_like_tensors_in_fp32(monkeypatch):
    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").eval()
    pred = Predictor(model, COCO, 64, {"precision": "bf16", "impl": "fast", "topk": 4,
                                       "center_threshold": -float("inf")})
    net = pred.net.model  # the Predictor's folded copy
    # which dtype each layer computed in: backbone convs and a CMP conv (bf16, the speed), the
    # heads' final convs and the CMP's output conv (fp32, the coordinates). Layers that the fast
    # copy runs as fused conv + ReLU calls (models.pointwise) fire no module hooks: these run
    # through their modules.
    layers = {"backbone.conv2": "bf16", "backbone.stage4.0.fuse_layers.0.1.0": "bf16",
              "joints_mlp.3": "bf16", "final_layer_cls": "fp32", "final_layer_reg": "fp32",
              "joints_mlp.9": "fp32"}
    seen: dict[str, set] = {name: set() for name in layers}
    for name in layers:
        mod = net.get_submodule(name)
        assert isinstance(mod, nn.Conv2d), name
        mod.register_forward_hook(lambda m, i, o, name=name: seen[name].add(o.dtype))
    # what the decoding hands on: record the dtype of every tensor going in and out of the
    # candidate step, the refinement and the top-2 pick
    found: list[tuple[str, torch.dtype]] = []

    def spy(fn, label):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            items = list(args) + list(kwargs.values())
            items += list(out.values()) if isinstance(out, dict) else list(out)
            found.extend((label, t.dtype) for t in items
                         if torch.is_tensor(t) and t.is_floating_point())
            return out
        return wrapped

    for fn in ("center_offset_candidates", "refine", "top2"):
        monkeypatch.setattr(ld, fn, spy(getattr(ld, fn), fn))
    img = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    poses = pred.predict(img)

    want = {"bf16": torch.bfloat16, "fp32": torch.float32}
    for name, kind in layers.items():
        assert seen[name] == {want[kind]}, (name, seen[name])
    assert {label for label, _ in found} == {"center_offset_candidates", "refine", "top2"}
    not_fp32 = {(label, str(dtype)) for label, dtype in found if dtype != torch.float32}
    assert not not_fp32, not_fp32
    assert poses.keypoints.dtype == np.float32 and len(poses) > 0

    # the maps decoding reads are float32 values of fp32 layers, not bfloat16-rounded ones
    x = torch.stack([pred.prepare(img)[0]])
    with torch.inference_mode():
        out = pred.net(x)
        kems = torch.randn(3, model.num_keypoints * model.embed_dim, 11, 11,
                           generator=torch.Generator().manual_seed(1))
        kams = pred.net.kam(kems)
    # the fused blocks computed in bf16 too: their conv weights are bfloat16
    fused = [m for m in net.modules() if "forward" in vars(m) and hasattr(m, "conv1")]
    assert fused and all(m.conv1.weight.dtype == torch.bfloat16 for m in fused)
    for key in ("heatmaps", "offsets"):
        assert out[key].dtype == torch.float32 and not _bf16_exact(out[key]), key
    assert kams.dtype == torch.float32 and not _bf16_exact(kams)
    # the embedding is a bf16 feature map (read by the bf16 CMP), cast to float32
    assert out["embedding"].dtype == torch.float32 and _bf16_exact(out["embedding"])


def test_bf16_agreement_benchmark_runs_tiny(tmp_path, monkeypatch, capsys):
    """benchmarks/bf16_agreement.py: its cached-output decoding reproduces the Predictor's poses
    exactly (so every swap it measures is a swap of that one output), and a tiny run writes the
    sections with consistent counts."""
    import importlib
    import json
    from pathlib import Path

    from logocap.engine.speed import build_predictors

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("bf16_agreement")
    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").eval()
    preds = build_predictors(model, COCO, 64, {"topk": 3}, ("bf16",), "cpu", True, None)
    p = preds["bf16"]
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    prep = p.prepare(img)
    with torch.inference_mode():
        out = p.net(bench.flip_batch(p, prep[0]))
    direct = p.predict_prepared([prep[0]], [prep[1]], [prep[2]])[0]
    cached = bench.decode_cached(p, prep, out, p.net.kam)
    assert np.array_equal(direct.keypoints, cached.keypoints) and len(direct) > 0

    out_json = tmp_path / "r.json"
    assert bench.main(["--images", "0", "--models", "logocap_hrnet_tiny", "--size", "64",
                       "--candidates", "3", "--eps", "0", "1e-3", "--iters", "1",
                       "--out", str(out_json)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"written {out_json}"
    (row,) = json.loads(out_json.read_text())["rows"]
    assert row["sensitivity"][0] == {"eps": 0.0, "share": 1.0, "max_err_px": 0.0}
    d = row["decisions"]
    assert d["moved"] == d["by_initial_pose"] + d["by_top1"] + d["by_top2"]
    assert d["candidates"] == d["same_center"] + d["center_flipped_near"] + d["center_lost"]
    assert set(row["sources"]["alone"]) == {"center", "joint heatmaps", "offsets", "embedding",
                                            "KAMs"}
    # the forced center channel is the same in both paths: swapping it moves nothing
    assert row["sources"]["alone"]["center"]["share"] == 1.0
    assert 0.0 <= row["agreement"]["share"] <= 1.0


def test_precast_conv_weights_give_autocasts_bits(monkeypatch):
    """bf16 inference stores the conv weights in bfloat16 once (``precast_convs``) instead of
    letting autocast cast them at every call: the network and CMP outputs are the same bits, and
    the output layers that run in fp32 keep float32 weights."""
    import logocap.precision as precision

    from logocap.models.fuse import output_convs

    torch.manual_seed(0)
    model = create_model("logocap_hrnet_tiny").eval()
    keep = set(output_convs(model))  # the heads' and the CMP's output convs
    x = torch.randn(2, 3, 96, 96)
    local = torch.randn(3, COCO.num_keypoints * model.embed_dim, 11, 11)
    outs = []
    for precast in (True, False):
        if not precast:
            monkeypatch.setattr(precision, "precast_convs", lambda m, dtype, keep=(): m)
        pred = Predictor(model, test_cfg={"precision": "bf16"})
        with torch.no_grad():
            outs.append((pred.net(x), pred.net.kam(local)))
        if precast:
            net = pred.net.model
            dtypes = {n: m.weight.dtype for n, m in net.named_modules() if type(m) is nn.Conv2d}
            assert len(keep) == 3 and all(dtypes[n] == torch.float32 for n in keep)
            assert all(d == torch.bfloat16 for n, d in dtypes.items() if n not in keep)
    (a, ka), (b, kb) = outs
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(ka, kb)
    assert next(model.parameters()).dtype == torch.float32  # the caller's network is untouched
