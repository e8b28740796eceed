"""`logocap bench speed`: reference / fast / bf16 per model in one interleaved run, stage
breakdown, ratios, accuracy, JSON."""
import json

import cv2
import numpy as np
import pytest

from logocap.cli import main


def test_speed_paths_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    rc = main(["bench", "speed", "--model", "logocap_hrnet_tiny", "--inputs", str(photo),
               "--size", "64", "--iters", "1", "--candidates", "3", "--batch", "1", "2",
               "--threads", "1", "--accuracy", "--accuracy-images", "0", "--out", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    rows = {(r["model"], r["path"], r["batch"]): r for r in rep["rows"]}
    assert len(rows) == 3 * 2
    for (model, path, batch), r in rows.items():
        assert r["candidates"] == 3 and r["input"] == ["photo.png"] * 2
        assert r["ms_per_image"] > 0 and r["cpu_ms_per_image"] > 0
        stages = r["stages_ms_per_image"]
        assert stages["network"] > 0 and stages["pose_nms"] > 0 and "rest" in stages
        if model.startswith("logocap"):
            assert stages["global_kams"] > 0 and stages["local_kams"] > 0
        assert r["decode_ms_per_image"] == pytest.approx(r["ms_per_image"] - stages["network"],
                                                         rel=1e-6, abs=1e-6)
        assert r["speedup_vs_reference"] > 0
    assert all(rows[(m, "reference", b)]["speedup_vs_reference"] == 1.0
               for m, _, b in rows)
    assert rep["threads"] == 1 and {"cpu", "cpu_flags", "native_bf16", "commit"} <= set(rep["machine"])
    acc = {a["subject"]: a for a in rep["accuracy"]}
    assert set(acc) == {"logocap_hrnet_tiny"}
    for a in acc.values():
        assert a["fast_vs_reference"]["max_err_px"] < 0.01 and "bf16_vs_fast" in a
    assert "global_kams" in capsys.readouterr().out


def test_speed_rejects_bad_arguments(capsys):
    assert main(["bench", "speed", "--size", "100"]) == 2
    assert "multiple of 64" in capsys.readouterr().err
    assert main(["bench", "speed", "--model", "nope_hrnet_tiny", "--size", "64"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["bench", "speed", "--weights", "missing.pth"]) == 2
    assert "not found" in capsys.readouterr().err
