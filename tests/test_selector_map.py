"""benchmarks/selector_map.py: one PNG from tiny random checkpoints on the COCO fixture, and a
"not trained yet" panel (not a crash) for a checkpoint that does not exist."""
import importlib.util
import sys
from pathlib import Path

import cv2
import pytest

from fixtures import make_coco_fixture, write_tiny_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "selector_map.py"
SIZE = (96, 128)  # fixture image (h, w)
PANEL = 96  # --panel-height


@pytest.fixture(scope="module")
def selector_map():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports benchmarks/_common.py
    try:
        spec = importlib.util.spec_from_file_location("bench_selector_map", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return mod


def _args(ann, images, out, dekr, sar_dekr, sar_topdown):
    return ["--data", str(ann.parent.parent), "--ann", str(ann), "--images", str(images),
            "--image-index", "0", "--panel-height", str(PANEL), "--dekr", str(dekr),
            "--sar-dekr", str(sar_dekr), "--sar-topdown", str(sar_topdown), "--out", str(out)]


def test_selector_map_png_and_missing_checkpoints(selector_map, tmp_path, capsys):
    ann, images = make_coco_fixture(tmp_path / "coco", num_images=1, size=SIZE)
    dekr = write_tiny_checkpoint(tmp_path / "dekr.pth", "dekr_hrnet_tiny")
    sar = write_tiny_checkpoint(tmp_path / "sar_dekr.pth", "sar_dekr_hrnet_tiny")
    td = write_tiny_checkpoint(tmp_path / "td.pth", "sar_hrnet_tiny_topdown",
                               cfg={"data": {"input_size": 128}})  # 128x96 crops
    pad = selector_map.PAD
    top_w = round(PANEL * SIZE[1] / SIZE[0])  # image panels keep the image's aspect
    expected = (2 * (PANEL + 2 * pad), 3 * top_w + 4 * pad)  # rows of 3 and of 1 + 3 joints

    out = tmp_path / "all.png"
    assert selector_map.main(_args(ann, images, out, dekr, sar, td)) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape[:2] == expected
    printed = capsys.readouterr().out
    assert "not trained yet" not in printed and f"written {out}" in printed
    for joint in ("nose", "left_wrist", "right_ankle"):
        assert f"sar_topdown {joint}: max weight" in printed

    # only the bottom-up SAR checkpoint: the other two panels say so, the sheet keeps its size
    out = tmp_path / "some.png"
    gone = tmp_path / "runs" / "dekr" / "last.pth", tmp_path / "runs" / "td" / "last.pth"
    assert selector_map.main(_args(ann, images, out, gone[0], sar, gone[1])) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape[:2] == expected
    printed = capsys.readouterr().out
    for flag, path in zip(("--dekr", "--sar-topdown"), gone):
        assert f"note: {flag} {path} does not exist (not trained yet)" in printed
    lines = printed.splitlines()
    assert any(line.startswith("sar_dekr: max") for line in lines)
    assert not any(line.startswith(("dekr:", "sar_topdown ")) for line in lines)


def test_selector_map_bad_input_one_line_exit_2(selector_map, tmp_path, capsys):
    ann, images = make_coco_fixture(tmp_path / "coco", num_images=1, size=SIZE)
    none = tmp_path / "missing.pth"
    out = tmp_path / "sheet.gif"  # a format save_image does not write
    assert selector_map.main(_args(ann, images, out, none, none, none)) == 2
    assert "unsupported image format '.gif'" in capsys.readouterr().err and not out.exists()
    bad = _args(ann, images, tmp_path / "s.png", none, none, none)
    bad[bad.index("--image-index") + 1] = "5"
    assert selector_map.main(bad) == 2
    assert "--image-index 5:" in capsys.readouterr().err and not (tmp_path / "s.png").exists()
