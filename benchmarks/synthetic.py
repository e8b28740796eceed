#!/usr/bin/env python
"""Synthetic benchmark: the center-offset baseline, its empirical upper bound, LOGO-CAP and the
paper's ablations (CVPR 2022 Tables 5 and 7) on one small HRNet, one input size, one schedule.

Protocol (all on CPU, official COCOeval on the synthetic val split, flip test on):
  stage 1  center_offset_hrnet_tiny from scratch for --stage1-epochs (shared by every row);
  stage 2  every row fine-tunes stage 1 for --stage2-epochs with its own losses:
           the baseline keeps the center-offset losses, LOGO-CAP rows add the KAM/OKS and
           refined-heatmap losses (Table 5 switches), so all rows see the same images;
  decode   Table 7 rows decode the full LOGO-CAP model with adaptation none / partial / full;
  bound    supplementary Alg. 1: each joint of each baseline candidate replaced by its best
           point on the inclusive 11x11 mesh against the ground truth.

Windows at 256 px input: the recipe keeps the paper's windows (window_scale 1, global 97); a
row with them halved (window_scale 0.5: local steps, Gaussian and target sigma; global 49)
shows why, next to the oracle bound in both windows.

    python benchmarks/synthetic.py                       # full run (about an hour on 2 cores)
    python benchmarks/synthetic.py --quick               # a few minutes, for a smoke check

Prints a table and writes benchmarks/results/synthetic_<date>.json (date, CPU, threads, commit).
Finished runs are reused (their folders hold last.pth + summary.json), so it can be re-run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from logocap.engine.recipes import ensure_synthetic, evaluate_run, synthetic_config, train_run  # noqa: E402
from logocap.utils import machine_info  # noqa: E402

METRICS = ("AP", "AP50", "AP75", "APM", "APL", "AR")

# Table 5: (OKS loss, Gaussian reweighing, Attentive Norm)
TABLE5 = {
    "(a) OKS": (True, False, False),
    "(b) reweigh": (False, True, False),
    "(c) OKS+reweigh": (True, True, False),
    "(d) OKS+AN": (True, False, True),
    "(e) reweigh+AN": (False, True, True),
    "(f) LOGO-CAP full": (True, True, True),
}
# Table 7 (notes §3: TEST.ADAPTATION_LEVEL): decode variants of the full model
TABLE7 = {"none": "no adaptation: center-offset pose, heat scores",
          "kems": "KEMs only: peak of the Gaussian-reweighed global KEM",
          "partial": "KAMs only: argmax of the local KAM",
          "full": "KEMs + KAMs (LOGO-CAP)"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/synthetic",
                   help="synthetic benchmark folder (made if missing; shared with logocap demo)")
    p.add_argument("--out", default="runs/bench_synthetic", help="run folders")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--stage1-epochs", type=int, default=20)
    p.add_argument("--stage2-epochs", type=int, default=3)
    p.add_argument("--rows", default="all", help="comma list of: baseline,bound,table5,table7 or all")
    p.add_argument("--quick", action="store_true", help="tiny data and schedule (smoke check)")
    p.add_argument("--results", default=None, help="JSON path (default benchmarks/results/synthetic_<date>.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.train_images, args.val_images, args.stage1_epochs, args.stage2_epochs = 64, 16, 1, 1
        args.data, args.out = args.data + "_quick", args.out + "_quick"
    rows_wanted = {"baseline", "bound", "table5", "table7"} if args.rows == "all" else set(args.rows.split(","))

    data, out = Path(args.data), Path(args.out)
    ensure_synthetic(data, "default", args.train_images, args.val_images, 256, seed=0, preview=True)
    info = machine_info()
    path = Path(args.results) if args.results else \
        ROOT / "benchmarks" / "results" / f"synthetic_{info['date'][:10]}{'_quick' if args.quick else ''}.json"
    results: dict = {"machine": info, "settings": vars(args), "rows": {}}
    if path.is_file():  # a re-run with --rows adds to / updates the rows of the same day
        results["rows"] = json.loads(path.read_text()).get("rows", {})
    t_all = time.time()

    def save():
        from logocap.utils import atomic_write_text
        atomic_write_text(path, json.dumps(results, indent=1))

    # ---- stage 1: the shared center-offset model
    s1 = synthetic_config("center_offset_hrnet_tiny", data, out / "stage1",
                          [f"train.epochs={args.stage1_epochs}", "train.eval_every=0"])
    stage1 = train_run(s1)
    init = str(out / "stage1" / "last.pth")

    def stage2(name: str, method: str, overrides: list[str]) -> tuple[Path, float]:
        cfg = synthetic_config(method, data, out / name,
                               [f"train.epochs={args.stage2_epochs}", "train.eval_every=0",
                                f"model.pretrained={init}", *overrides])
        s = train_run(cfg)
        return out / name / "last.pth", stage1["train_minutes"] + s["train_minutes"]

    def row(label: str, metrics: dict, minutes: float | None, note: str = ""):
        results["rows"][label] = {**{k: metrics.get(k) for k in METRICS},
                                  "ms_per_image": metrics.get("ms_per_image"),
                                  "train_minutes": minutes, "note": note,
                                  "commit": info["commit"], "date": info["date"]}
        print(f"  {label}: AP {metrics['AP']:.3f}", flush=True)
        save()

    if "baseline" in rows_wanted or "bound" in rows_wanted:
        ck, minutes = stage2("baseline", "center_offset_hrnet_tiny", [])
        row("baseline", evaluate_run(ck, data, out_dir=out / "baseline" / "eval"), minutes,
            "center-offset, same schedule")
        if "bound" in rows_wanted:
            from logocap.commands.upper_bound import upper_bound_eval
            from logocap.data.coco import CocoPoseDataset
            from logocap.engine.checkpoint import build_model_from_checkpoint, checkpoint_test_config

            model, meta, minfo = build_model_from_checkpoint(ck)
            test_cfg = checkpoint_test_config(minfo)
            ds = CocoPoseDataset(str(data / "annotations/person_keypoints_val.json"), str(data / "images/val"),
                                 meta=meta, mode="val", input_size=256)
            for ws in (0.5, 1.0):  # half the paper's window (the 256 px study) and the paper's
                ub = upper_bound_eval(model, ds, meta, {**test_cfg, "window_scale": ws}, 256,
                                      out_dir=out / "baseline" / f"bound_ws{ws}", verbose=False)
                row(f"upper bound (11x11 mesh, window_scale {ws})", ub["upper_bound"], None,
                    "oracle best mesh point per joint (supplementary Alg. 1)")

    if "table5" in rows_wanted or "table7" in rows_wanted:
        variants = TABLE5 if "table5" in rows_wanted else {"(f) LOGO-CAP full": TABLE5["(f) LOGO-CAP full"]}
        for label, (oks, reweigh, an) in variants.items():
            name = "logocap_" + label.split()[0].strip("()")
            ov = [f"loss.oks_loss={str(oks).lower()}", f"test.gaussian_reweigh={str(reweigh).lower()}",
                  f"model.kwargs.attentive_norm={str(an).lower()}"]
            ck, minutes = stage2(name, "logocap_hrnet_tiny", ov)
            row(f"Table 5 {label}", evaluate_run(ck, data, out_dir=out / name / "eval"), minutes,
                f"OKS loss {oks}, reweigh {reweigh}, AttNorm {an}")
            if label.startswith("(f)"):  # the same model with the windows halved for 256 px
                ck2, minutes2 = stage2("logocap_f_ws05", "logocap_hrnet_tiny",
                                       ov + ["test.window_scale=0.5", "test.global_size=49"])
                row("LOGO-CAP full, windows halved (window_scale 0.5, global 49)",
                    evaluate_run(ck2, data, out_dir=out / "logocap_f_ws05" / "eval"), minutes2,
                    "window study: local steps, Gaussian and target sigma x0.5, global window 49")
            if label.startswith("(f)") and "table7" in rows_wanted:
                for level, what in TABLE7.items():
                    row(f"Table 7 {level}", evaluate_run(ck, data, {"adaptation": level},
                                                          out_dir=out / name / f"eval_{level}"),
                        minutes, what)

    # slim copies (weights + metadata, no optimizer state) for `logocap demo` and users
    if not args.quick:
        from logocap.engine.checkpoint import load_checkpoint
        from logocap.utils import atomic_torch_save
        for src, dst in ((out / "baseline" / "last.pth", "center_offset_hrnet_tiny_256.pth"),
                         (out / "logocap_f" / "last.pth", "logocap_hrnet_tiny_256.pth")):
            if src.is_file():
                ck = load_checkpoint(src)
                for k in ("optimizer", "scheduler", "rng", "scaler"):
                    ck.pop(k, None)
                atomic_torch_save(ck, ROOT / "checkpoints" / "synthetic" / dst)
                results.setdefault("checkpoints", []).append(f"checkpoints/synthetic/{dst}")

    results["total_minutes"] = (time.time() - t_all) / 60
    save()
    print("\n" + f"{'row':<46}" + "".join(f"{m:>7}" for m in METRICS) + f"{'ms/img':>8}{'train min':>10}")
    for label, r in results["rows"].items():
        print(f"{label:<46}" + "".join(f"{r[m]:>7.3f}" for m in METRICS)
              + (f"{r['ms_per_image']:>8.1f}" if r["ms_per_image"] else f"{'-':>8}")
              + (f"{r['train_minutes']:>10.1f}" if r["train_minutes"] else f"{'-':>10}"))
    print(f"\nwritten {path}; machine {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
