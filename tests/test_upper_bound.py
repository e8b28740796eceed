"""`logocap upper-bound` (supplementary Alg. 1) on the committed synthetic baseline checkpoint."""
import json
from pathlib import Path

import pytest

from logocap.cli import main
from logocap.data.synthetic import generate_synthetic

CKPT = Path(__file__).resolve().parents[1] / "checkpoints/synthetic/center_offset_hrnet_tiny_256.pth"


@pytest.mark.skipif(not CKPT.is_file(), reason="the committed synthetic checkpoint is part of the repo")
def test_oracle_bound_beats_the_decoder(tmp_path, capsys):
    generate_synthetic(tmp_path / "d", preset="default", num_train=1, num_val=8, size=256, seed=5,
                       progress=False)
    out = tmp_path / "ub"
    assert main(["upper-bound", "--weights", str(CKPT), "--data", str(tmp_path / "d"),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "AP" in text
    metrics = {p.parent.name: json.loads(p.read_text()) for p in out.rglob("metrics.json")}
    assert set(metrics) == {"baseline", "upper_bound"}
    # the oracle picks the best point of a window that contains the decoded joint: never worse
    assert metrics["upper_bound"]["AP"] >= metrics["baseline"]["AP"]
    assert metrics["upper_bound"]["AP"] > 0.2


def test_missing_data_is_one_clear_error(tmp_path, capsys):
    assert main(["upper-bound", "--weights", str(CKPT), "--data", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
