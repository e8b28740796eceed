"""The released LOGO-CAP file layout (a plain state_dict, no metadata) through `logocap predict`."""
import re
from pathlib import Path

import numpy as np
import torch

from logocap.cli import main

KEYS = Path(__file__).resolve().parent / "data" / "logocap_w32_keys.txt"


def _official_state_dict(nan: bool = False) -> dict:
    """Random tensors with exactly the names and shapes of logocap-hrnet-w32-coco.pth.tar."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for line in KEYS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, shape = line.split(" ", 1)
        shape = [int(x) for x in re.findall(r"\d+", shape)]
        v = torch.randn(shape, generator=g) * 0.01 if shape else torch.tensor(0)
        if name.endswith("running_var"):
            v = v.abs() + 1.0
        sd[name] = v
    if nan:
        sd["final_layer_cls.bias"][:] = float("nan")
    return sd


def test_predict_accepts_the_released_layout(tmp_path, capsys):
    import cv2

    w = tmp_path / "logocap-hrnet-w32-coco.pth.tar"
    torch.save(_official_state_dict(), w)
    img = tmp_path / "people.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    assert main(["predict", "--model", "logocap_hrnet_w32", "--weights", str(w), str(img),
                 "--size", "128", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "people.png.poses.json").is_file()
    assert (tmp_path / "out" / "people.png.poses.jpg").is_file()
    # without the model name there is no metadata to rebuild it: one clear line
    assert main(["predict", "--weights", str(w), str(img)]) == 2
    assert "--model" in capsys.readouterr().err


def test_broken_weights_are_a_clear_error(tmp_path, capsys):
    import cv2

    w = tmp_path / "nan.pth"
    torch.save(_official_state_dict(nan=True), w)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    assert main(["predict", "--model", "logocap_hrnet_w32", "--weights", str(w), str(img),
                 "--size", "64"]) == 2
    assert "non-finite" in capsys.readouterr().err
