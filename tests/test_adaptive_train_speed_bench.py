"""benchmarks/adaptive_train_speed.py runs for real, tiny: this checkout against HEAD's library."""
import json

from fixtures import require_git_checkout, run_benchmark


def test_adaptive_networks_old_vs_new_table_and_json(tmp_path):
    require_git_checkout()
    out = tmp_path / "r.json"
    args = ["--baseline", "HEAD", "--models", "dekr_hrnet_tiny", "--batch", "1", "--size", "64",
            "--rounds", "1", "--threads", "1", "--cpu-time", "--out", str(out)]
    lines = run_benchmark("adaptive_train_speed.py", args, tmp_path)
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
