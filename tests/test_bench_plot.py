"""``logocap bench plot``: the speed-accuracy PNG from benchmark JSONs (hand-made, tiny)."""
import json

import cv2

from logocap.cli import main
from logocap.speed_accuracy import collect_points


def write_results(folder):
    folder.mkdir()
    (folder / "table.json").write_text(json.dumps({
        "machine": {"cpu": "Some CPU", "threads": 2},
        "rows": {"baseline": {"AP": 0.50, "ms_per_image": 20.0},
                 "bound": {"AP": 0.90, "ms_per_image": None},  # an oracle: no speed, left out
                 "LOGO-CAP": {"AP": 0.62, "ms_per_image": 95.0}}}))
    (folder / "speed.json").write_text(json.dumps({
        "rows": [{"model": "logocap_hrnet_tiny", "flip": True, "AP": 0.60, "ms_per_image": 40.0},
                 {"model": "logocap_hrnet_tiny", "flip": False, "AP": 0.55, "ms_per_image": 22.0},
                 {"model": "no accuracy measured", "ms_per_image": 10.0}]}))
    (folder / "torn.json").write_text('{"rows": {"a": {"AP": 0.3,')  # a killed writer


def test_plot_writes_a_png_of_every_usable_row(tmp_path, capsys):
    folder = tmp_path / "results"
    write_results(folder)
    points, problems = collect_points(folder)
    assert sorted(p["label"] for p in points) == ["LOGO-CAP", "baseline", "logocap_hrnet_tiny, flip False",
                                                  "logocap_hrnet_tiny, flip True"]
    assert problems and "torn.json" in problems[0]
    assert main(["bench", "plot", "--results", str(folder)]) == 0
    png = folder / "speed_accuracy.png"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 400
    out = capsys.readouterr()
    assert "4 points from 2 file(s)" in out.out and str(png) in out.out and "torn.json" in out.err
    other = tmp_path / "pics" / "sa.png"
    assert main(["bench", "plot", "--results", str(folder), "--out", str(other)]) == 0
    assert cv2.imread(str(other)) is not None


def test_plot_without_usable_rows_is_one_clear_line(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "speed.json").write_text(json.dumps({"rows": [{"model": "x", "ms_per_image": 3.0}]}))
    cases = [(["bench", "plot", "--results", str(folder)], "no benchmark rows with both AP and ms_per_image"),
             (["bench", "plot", "--results", str(tmp_path / "nowhere")], "no benchmark results folder"),
             (["bench", "plot", "--results", str(folder), "--out", str(tmp_path / "a.jpg")], "must be a .png")]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.rglob("*.png"))
