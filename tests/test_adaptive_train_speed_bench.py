"""benchmarks/adaptive_train_speed.py runs for real, tiny: this checkout against HEAD's library."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_adaptive_networks_old_vs_new_table_and_json(tmp_path):
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True).returncode:
        pytest.skip("not a git checkout: no revision to compare with")
    out = tmp_path / "r.json"
    args = ["--baseline", "HEAD", "--models", "dekr_hrnet_tiny", "--batch", "1", "--size", "64",
            "--rounds", "1", "--threads", "1", "--cpu-time", "--out", str(out)]
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "adaptive_train_speed.py"), *args],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    assert lines[header].split()[:4] == ["model", "mode", "baseline", "s"]
    assert [line.split()[1] for line in lines[header + 1:header + 3]] == ["train", "infer"]
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "settings", "rows"} and data["machine"]["clock"] == "cpu"
    assert [(r["model"], r["mode"]) for r in data["rows"]] == [("dekr_hrnet_tiny", "train"),
                                                             ("dekr_hrnet_tiny", "infer")]
    for r in data["rows"]:
        assert r["s_per_it"] > 0 and r["s_per_it_baseline"] > 0
        # HEAD's adaptive conv against the working tree's: equal to float32 rounding
        assert r["max_rel_output_diff"] < 1e-5 and r["max_rel_param_grad_diff"] < 1e-4
