"""Checkpoints: our format round-trips with weights_only=True; plain state_dicts need a model
name; wrong files give one-line LogocapErrors."""
import pytest
import torch

from logocap.config import DEFAULTS
from logocap.engine.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from logocap.meta import COCO, CROWDPOSE
from logocap.models import create_model
from logocap.utils import LogocapError

NAME = "center_offset_hrnet_tiny"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model(NAME, num_keypoints=COCO.num_keypoints).eval()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_roundtrip_with_metadata(tmp_path, model):
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2, 3])
    path = tmp_path / "ck.pth"
    save_checkpoint(path, model, COCO, DEFAULTS, opt, sched, epoch=3, extra={"global_step": 7})
    raw = torch.load(path, map_location="cpu", weights_only=True)  # must not need pickle
    assert raw["format"] == "logocap" and raw["epoch"] == 3 and raw["global_step"] == 7
    assert raw["input_size"] == DEFAULTS["data"]["input_size"]
    assert len(raw["normalization"]["mean"]) == 3 and raw["meta"]["name"] == "coco"
    assert raw["scheduler"]["milestones"] and "state" in raw["optimizer"]
    net, meta, info = build_model_from_checkpoint(path)
    assert _same_weights(net, model) and meta.same_keypoints(COCO) and not net.training
    assert info["model_name"] == NAME and info["format"] == "logocap"


def test_plain_state_dict_and_wrappers(tmp_path, model):
    sd = model.state_dict()
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 5}
    for i, obj in enumerate([sd, wrapped, {"model": sd}]):
        path = tmp_path / f"plain{i}.pth"
        torch.save(obj, path)
        net, meta, info = build_model_from_checkpoint(path, model_name=NAME)
        assert _same_weights(net, model) and info["format"] == "state_dict" and meta is COCO
    with pytest.raises(LogocapError, match="give the model name"):
        build_model_from_checkpoint(tmp_path / "plain0.pth")


def test_wrong_model_or_keypoints_is_one_clear_line(tmp_path, model):
    path = tmp_path / "ck.pth"
    save_checkpoint(path, model, COCO, DEFAULTS)
    with pytest.raises(LogocapError, match="not 'logocap_hrnet_tiny'"):
        build_model_from_checkpoint(path, model_name="logocap_hrnet_tiny")
    with pytest.raises(LogocapError, match="keypoints"):
        build_model_from_checkpoint(path, meta=CROWDPOSE)
    # a plain state_dict of a 17-keypoint model loaded as a 14-keypoint one: shape mismatches
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(LogocapError) as e:
        build_model_from_checkpoint(tmp_path / "plain.pth", model_name=NAME, meta=CROWDPOSE)
    msg = str(e.value)
    assert "\n" not in msg and "shape mismatches" in msg and "0 missing" in msg
    # another architecture entirely: missing / unexpected keys are counted
    with pytest.raises(LogocapError, match=r"\d+ missing, \d+ unexpected"):
        build_model_from_checkpoint(tmp_path / "plain.pth", model_name="center_offset_hrnet_small")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(LogocapError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(LogocapError, match="cannot read checkpoint"):
        load_checkpoint(bad)
    ok = tmp_path / "ok.pth"
    torch.save({"a": torch.zeros(2)}, ok)
    ok.write_bytes(ok.read_bytes()[:40])  # truncated
    with pytest.raises(LogocapError, match="cannot read checkpoint"):
        load_checkpoint(ok)
    torch.save({"not": "weights"}, tmp_path / "junk.pth")
    with pytest.raises(LogocapError, match="no state_dict"):
        build_model_from_checkpoint(tmp_path / "junk.pth", model_name=NAME)


def test_malformed_logocap_checkpoint_is_one_clear_error(tmp_path):
    p = tmp_path / "broken.pth"
    torch.save({"format": "logocap", "state_dict": {}}, p)
    with pytest.raises(LogocapError, match="malformed logocap checkpoint: it lacks model_name, meta"):
        build_model_from_checkpoint(p)
    torch.save({"format": "logocap", "state_dict": {}, "model_name": "center_offset_hrnet_tiny",
                "meta": {"name": "x"}}, p)
    with pytest.raises(LogocapError, match="bad keypoint meta"):
        build_model_from_checkpoint(p)


def test_unreadable_training_image_is_skipped_and_counted(tmp_path, capsys):
    from pathlib import Path

    from fixtures import make_coco_fixture

    from logocap.config import load_config
    from logocap.engine.train import build_train_dataset

    ann, images = make_coco_fixture(tmp_path, num_images=3)
    cfg = load_config(None, [f"data.root={tmp_path}", f"data.train_ann={ann}", f"data.train_images={images}",
                             "data.input_size=64"])
    files = sorted(p for p in Path(images).iterdir() if p.is_file())
    files[0].write_bytes(b"not an image")
    ds = build_train_dataset(cfg)
    assert len(ds) == 2 and "skipping 1 unreadable training image" in capsys.readouterr().err
    ds[0], ds[1]  # the rest still loads
    for f in files:
        f.write_bytes(b"")
    with pytest.raises(LogocapError, match="none of the 3 training images"):
        build_train_dataset(cfg)
