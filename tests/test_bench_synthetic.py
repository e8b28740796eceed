"""benchmarks/synthetic.py: the claims its rows test and the README tables (pure functions of a
results JSON; the training wiring is checked by ``benchmarks/synthetic.py --quick``)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_synthetic", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(ap, err=None, **extra):
    return {"AP": ap, "AP50": ap, "AP75": ap, "APM": ap, "APL": ap, "AR": ap + 0.05,
            "KptErr": err, "ms_per_image": 10.0, "train_minutes": 5.0, "note": "", "curve": None,
            **extra}


def _results(rows):
    return {"machine": {"commit": "abc1234", "date": "2026-01-01T00:00:00", "cpu": "cpu",
                        "threads": 1}, "settings": {"backbone": "small"}, "rows": rows}


def test_claims_compare_the_named_rows(bench):
    t4 = {f"Table 4 {k}": _row(f, 3.0, regression_AP=r, heatmap_AP=h)
          for k, (r, h, f) in {"(a) baseline": (0.10, 0.50, 0.20),
                               "(b) +heatmap guidance": (0.12, 0.48, 0.21),
                               "(c) +tradeoff loss": (0.11, 0.55, 0.22),
                               "(d) +ART": (0.20, 0.56, 0.25),
                               "(e) +scoring": (0.20, 0.56, 0.24)}.items()}
    rows = {"DEKR": _row(0.30, 2.5), "DEKR + rescoring": _row(0.33, 2.4),
            "Table 5 (f) LOGO-CAP full": _row(0.28, 2.6), **t4}
    got = {c["claim"]: c for c in bench.claims(rows)}
    assert len(got) == 6
    assert got["DEKR: rescoring improves AP"]["measured"] == pytest.approx(0.03)
    assert got["DEKR: rescoring improves AP"]["holds"]
    assert got["LOGO-CAP beats DEKR without rescoring"]["measured"] == pytest.approx(-0.02)
    assert not got["LOGO-CAP beats DEKR without rescoring"]["holds"]
    assert got["HGR: heatmap guidance improves regression quality"]["measured"] == pytest.approx(0.02)
    assert got["HGR: ART improves regression quality"]["measured"] == pytest.approx(0.09)
    assert got["HGR: the tradeoff loss improves heatmap quality"]["measured"] == pytest.approx(0.07)
    assert got["HGR: scoring improves final AP"]["measured"] == pytest.approx(-0.01)
    assert got["HGR: ART improves regression quality"]["paper"] == 3.6
    # a claim whose rows are not (all) there is not made
    assert [c["claim"] for c in bench.claims({"DEKR": _row(0.3)})] == []


def test_markdown_has_kpt_error_the_table4_qualities_and_the_claims(bench):
    rows = {"baseline": _row(0.17),  # a row of an older JSON: no Kpt.Error
            "DEKR": _row(0.30, 2.5),
            "Table 4 (a) baseline": _row(0.20, 3.0, regression_AP=0.10, heatmap_AP=0.50),
            "Table 4 (b) +heatmap guidance": _row(0.21, 3.1, regression_AP=0.12, heatmap_AP=0.48)}
    rows["baseline"].pop("KptErr")
    md = bench.markdown(_results(rows))
    lines = md.splitlines()
    assert "| Kpt.Error px |" in lines[2]
    assert any(line.startswith("| baseline | 0.170 |") and "| - |" in line for line in lines)
    assert any(line.startswith("| DEKR |") and "| 2.50 |" in line for line in lines)
    assert "| (a) baseline | 0.100 | 0.500 | 0.200 | 59.6 / 71.3 / 64.5 |" in lines
    assert "| (b) +heatmap guidance | 0.120 | 0.480 | 0.210 | 60.5 / 71.8 / 64.9 |" in lines
    claim = [line for line in lines if line.startswith("- HGR: heatmap guidance")]
    assert len(claim) == 1 and "+0.020" in claim[0] and "holds here" in claim[0]
    # no HGR rows: no Table 4 table
    assert "Table 4" not in bench.markdown(_results({"DEKR": _row(0.3, 2.0)}))
