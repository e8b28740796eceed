"""benchmarks/logocap_train_speed.py runs for real, tiny: this checkout against HEAD's library."""
import json

from fixtures import require_git_checkout, run_benchmark


def test_old_vs_new_training_step_table_and_json(tmp_path):
    require_git_checkout()
    out = tmp_path / "r.json"
    args = ["--baseline", "HEAD", "--models", "logocap_hrnet_tiny", "--init", "none",
            "--data", str(tmp_path / "synth"), "--num-train", "3", "--num-val", "1", "--size", "128",
            "--batch", "2", "--steps", "1", "--rounds", "1", "--loader-images", "2",
            "--threads", "1", "--cpu-time", "--results", str(out)]
    lines = run_benchmark("logocap_train_speed.py", args, tmp_path)
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    assert lines[header].split() == ["model", "code", "s/it", "img/s", "x", "baseline", "kept"]
    assert [line.split()[1] for line in lines[header + 1:header + 4]] == ["HEAD", "this", "network"]
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "settings", "rows"} and data["machine"]["clock"] == "cpu"
    rows = {r["code"]: r for r in data["rows"]}
    assert set(rows) == {"HEAD", "this", "network only"}
    assert rows["HEAD"]["speedup_vs_baseline"] == 1.0 and rows["this"]["s_per_it"] > 0
    assert rows["this"]["fp32_losses_equal"] is True  # the same library on both sides
    assert rows["this"]["fp32_max_rel_grad_diff"] == 0.0 and rows["this"]["loader_img_per_s"] > 0
