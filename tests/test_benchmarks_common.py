"""benchmarks/_common.py (tables, results JSON) and two benchmark scripts run for real, tiny."""
import importlib.util
import json
from argparse import Namespace

import pytest
from fixtures import REPO, run_benchmark


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("bench_common", REPO / "benchmarks" / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_pads_titles_like_their_cells(common):
    cols = [("C", "3d"), ("map", ">7s"), ("ms", "8.3f"), ("|", "s"), ("ratio", "6.2f"), ("same", ">5s")]
    out = common.table(cols, [(4, "16x16", 0.05213, "|", 5.04, "True"),
                              (12, "8x8", 10.0, "|", None, None)])
    assert out.splitlines() == ["  C     map       ms |  ratio  same",
                                "  4   16x16    0.052 |   5.04  True",
                                " 12     8x8   10.000 |"]  # blank cells, no trailing blanks


def test_table_text_columns_without_separator(common):
    out = common.table([("model", "<8"), ("img/s", ">7.1f")], [("tiny", 12.345), ("a_long_name", 3)],
                       sep="")
    assert out.splitlines() == ["model     img/s", "tiny       12.3", "a_long_name    3.0"]
    with pytest.raises(ValueError, match="2 cells, the table 3 columns"):
        common.table([("a", "d"), ("b", "d"), ("c", "d")], [(1, 2)])


def test_write_results_default_and_given_path(common, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    machine = {"date": "2030-01-02T03:04:05+00:00", "threads": 1}
    path = common.write_results("speed", [{"a": 1}], Namespace(rounds=3), machine)
    assert path == tmp_path / "results" / "speed_2030-01-02.json"
    assert json.loads(path.read_text()) == {"machine": machine, "settings": {"rounds": 3},
                                            "rows": [{"a": 1}]}
    assert capsys.readouterr().out.strip() == f"written {path}"
    given = common.write_results("speed", [], Namespace(), machine, tmp_path / "x" / "mine.json")
    assert given == tmp_path / "x" / "mine.json" and json.loads(given.read_text())["rows"] == []


@pytest.mark.parametrize("script, args, columns", [
    ("adaptive_conv.py", ["--channels", "4", "--sizes", "8", "--rounds", "2"],
     ["C", "map", "plain", "adapt", "ratio", "A,t", "conv", "sampling", "matmul", "|"]),
    ("global_kams.py", ["--candidates", "1", "--height", "32", "--width", "48", "--rounds", "1"],
     ["cand", "clock", "impl", "sampling", "reweigh", "conv", "top2", "total", "ratio"]),
])
def test_benchmark_script_prints_its_table_and_writes_json(tmp_path, script, args, columns):
    out = tmp_path / "r.json"
    lines = run_benchmark(script, [*args, "--out", out], tmp_path, timeout=120)
    assert lines[1].split()[:len(columns)] == columns and lines[-1] == f"written {out}"
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "settings", "rows"} and len(data["rows"]) == 1
    assert data["settings"]["rounds"] in (1, 2) and "date" in data["machine"]
