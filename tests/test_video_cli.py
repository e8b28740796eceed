"""``logocap video`` with a tiny random model: frames in = frames out, JSON lines, mp4, errors, Ctrl-C."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch

from fixtures import write_tiny_checkpoint
from logocap.cli import main
from logocap.meta import COCO
from test_sources import write_video

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", "logocap_hrnet_tiny")


def mp4_frames(path) -> tuple[int, int]:
    """(frames the container announces, frames that decode)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return announced, n


def check_outputs(folder: Path, name: str, frames: list[int], size):
    mp4, jsonl = folder / f"{name}.poses.mp4", folder / f"{name}.poses.jsonl"
    assert mp4_frames(mp4) == (len(frames), len(frames))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == frames
    for r in records:
        assert r["image_size"] == list(size) and r["latency_ms"] > 0
        for pose in r["poses"]:
            assert len(pose["keypoints"]) == COCO.num_keypoints and len(pose["keypoints"][0]) == 3
    return records


def test_generated_video_every_frame_and_every_nth(tmp_path, ckpt, capsys):
    video = write_video(tmp_path / "clip.avi", n=15, size=(48, 64), fps=12.0)
    rc = main(["video", str(video), "--weights", str(ckpt), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0 and "15 frames" in out and "frames/s" in out
    assert f"wrote {tmp_path / 'out' / 'clip.avi.poses.mp4'}" in out
    records = check_outputs(tmp_path / "out", "clip.avi", list(range(15)), (48, 64))
    assert records[12]["time_s"] == pytest.approx(1.0)
    # every 4th frame, in batches of 2, written next to the video (no --out)
    assert main(["video", str(video), "--weights", str(ckpt), "--every", "4", "--batch", "2",
                 "--no-flip"]) == 0
    check_outputs(tmp_path, "clip.avi", [0, 4, 8, 12], (48, 64))


@pytest.mark.skipif(not (ASSETS / "vtest.avi").is_file(),
                    reason="shared/assets/vtest.avi (the pedestrian video) is not beside the repository")
def test_real_pedestrian_video_first_frames(tmp_path, ckpt, capsys):
    rc = main(["video", str(ASSETS / "vtest.avi"), "--weights", str(ckpt), "--max-frames", "24",
               "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    check_outputs(tmp_path, "vtest.avi", list(range(24)), (576, 768))


def test_bad_sources_give_one_line(tmp_path, ckpt, capsys):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "junk.avi").write_bytes(b"not a video at all" * 50)
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), (torch.rand(8, 8, 3) * 255).byte().numpy())
    cases = [(str(tmp_path / "missing.mp4"), "not found"), (str(tmp_path / "zero.mp4"), "0 bytes"),
             (str(tmp_path / "junk.avi"), "video"), ("63", "camera 63 cannot be opened"),
             (str(image), "not a video")]
    for source, words in cases:
        assert main(["video", source, "--weights", str(ckpt)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and err[0].startswith("logocap video: error:"), err
    assert main(["video", str(write_video(tmp_path / "ok.avi", n=3)), "--weights", str(ckpt),
                 "--every", "0"]) == 2
    assert not list(tmp_path.glob("*.poses.*"))  # nothing half-written


def test_ctrl_c_leaves_a_playable_mp4(tmp_path, ckpt):
    video = write_video(tmp_path / "long.avi", n=1500, size=(48, 64))
    proc = subprocess.Popen([sys.executable, "-m", "logocap.cli", "video", str(video), "--weights",
                             str(ckpt), "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = tmp_path / "out" / "long.avi.poses.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 5:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in out
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert 5 <= len(lines) < 1500
    assert mp4_frames(tmp_path / "out" / "long.avi.poses.mp4") == (len(lines), len(lines))
