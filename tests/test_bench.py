"""`logocap bench speed`: the Table 4 breakdown runs, meets the forced candidate counts, writes JSON."""
import json

import pytest

from logocap.cli import main


def test_speed_breakdown_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc = main(["bench", "speed", "--model", "logocap_hrnet_tiny", "--size", "64", "--iters", "1",
               "--candidates", "1", "5", "--threads", "1", "--out", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert [r["candidates"] for r in rep["rows"]] == [1, 5]
    assert [r["refined"] for r in rep["rows"]] == [1, 5]  # the forced counts are really refined
    for r in rep["rows"]:
        parts = [r[b] for b in ("backbone", "local_kems", "local_kams", "global_kams", "rest")]
        assert all(v > 0 for v in parts) and r["total"] == pytest.approx(sum(parts))
    assert rep["threads"] == 1 and {"date", "cpu", "commit"} <= set(rep["machine"])
    assert "global_kams" in capsys.readouterr().out


def test_speed_rejects_bad_arguments(capsys):
    assert main(["bench", "speed", "--model", "center_offset_hrnet_tiny", "--size", "64"]) == 2
    assert "not a LOGO-CAP model" in capsys.readouterr().err
    assert main(["bench", "speed", "--size", "100"]) == 2
