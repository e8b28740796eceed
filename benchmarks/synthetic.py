#!/usr/bin/env python
"""Synthetic benchmark (v2 regime): the center-offset baseline, its empirical upper bound,
LOGO-CAP and the paper's ablations (CVPR 2022 Tables 1, 5, 6 and 7) on one HRNet, one input
size, one schedule, with learning curves and two more validation sets.

Protocol (all on CPU, official COCOeval on the synthetic val split, flip test on):
  stage 1  center_offset_hrnet_<backbone> from scratch for --stage1-epochs (shared by every
           row; val AP every 5 epochs for its learning curve; resumable across sessions);
  stage 2  every row fine-tunes stage 1 for --stage2-epochs with its own losses: the baseline
           keeps the center-offset losses, LOGO-CAP rows add the KAM/OKS and refined-heatmap
           losses (Table 5 switches, Table 6 local KEM size and message passing), so all rows
           see the same images; val AP after every epoch;
  decode   Table 7 rows decode the full LOGO-CAP model with adaptation none / kems / partial /
           full;
  bound    supplementary Alg. 1: each joint of each baseline candidate replaced by its best
           point on the inclusive 11x11 mesh against the ground truth (paper's window and
           halved);
  splits   the baseline, the bound and LOGO-CAP evaluated again on a second default-preset val
           split made with another seed, and on the crowd preset;
  Table 1  baseline, bound and LOGO-CAP, and the share of the gap LOGO-CAP recovers.

The precision is the training default (``auto``: bf16 + channels_last where the CPU computes
bfloat16 natively, else fp32); the JSON records which one ran.

    python benchmarks/synthetic.py                     # the whole benchmark (hours on 2 cores)
    python benchmarks/synthetic.py --rows baseline,bound
    python benchmarks/synthetic.py --quick             # a few minutes, for a smoke check
    python benchmarks/synthetic.py --markdown FILE     # README tables from a results JSON

Prints a table and writes benchmarks/results/synthetic_<date>.json (date, CPU and flags,
threads, commit, per row) and the learning curves benchmarks/results/curves/<row>.png.
Finished runs are reused and unfinished ones resumed (their folders hold last.pth), so it can
be stopped and re-run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from logocap.engine.recipes import ensure_synthetic, evaluate_run, synthetic_config, train_run  # noqa: E402
from logocap.utils import machine_info  # noqa: E402

METRICS = ("AP", "AP50", "AP75", "APM", "APL", "AR")
ROWS = ("baseline", "bound", "table5", "table6", "table7", "splits")

# Table 5: (OKS loss, Gaussian reweighing, Attentive Norm)
TABLE5 = {
    "(a) OKS": (True, False, False),
    "(b) reweigh": (False, True, False),
    "(c) OKS+reweigh": (True, True, False),
    "(d) OKS+AN": (True, False, True),
    "(e) reweigh+AN": (False, True, True),
    "(f) LOGO-CAP full": (True, True, True),
}
FULL = ["loss.oks_loss=true", "test.gaussian_reweigh=true", "model.kwargs.attentive_norm=true"]
# Table 6: local KEM size (11 is the full model) and message passing
TABLE6 = {"local KEM 7x7": ["test.local_size=7"], "local KEM 15x15": ["test.local_size=15"],
          "local KEM 19x19": ["test.local_size=19"],
          "message passing 1": ["model.kwargs.message_passing='1'"]}
# Table 7 (notes §3: TEST.ADAPTATION_LEVEL): decode variants of the full model
TABLE7 = {"none": "no adaptation: center-offset pose, heat scores",
          "kems": "KEMs only: peak of the Gaussian-reweighed global KEM",
          "partial": "KAMs only: argmax of the local KAM",
          "full": "KEMs + KAMs (LOGO-CAP)"}
# more validation sets: (folder suffix, preset, seed)
SPLITS = {"seed 1": ("_seed1", "default", 1), "crowd": ("_crowd", "crowd", 0)}
BOUND = "upper bound (11x11 mesh, window_scale 1.0)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/synthetic",
                   help="synthetic benchmark folder (made if missing; shared with logocap demo)")
    p.add_argument("--out", default="runs/bench_v2", help="run folders")
    p.add_argument("--backbone", default="small", choices=["tiny", "small"])
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--stage1-epochs", type=int, default=60)
    p.add_argument("--stage2-epochs", type=int, default=4)
    p.add_argument("--rows", default="all", help=f"comma list of: {','.join(ROWS)} or all")
    p.add_argument("--quick", action="store_true", help="tiny data and schedule (smoke check)")
    p.add_argument("--results", default=None,
                   help="JSON path (default benchmarks/results/synthetic_<date>.json)")
    p.add_argument("--markdown", default=None, metavar="JSON",
                   help="print the README tables of a results JSON and exit")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    if args.quick:
        args.train_images, args.val_images, args.stage1_epochs, args.stage2_epochs = 64, 16, 1, 1
        args.data, args.out, args.backbone = args.data + "_quick", args.out + "_quick", "tiny"
    wanted = set(ROWS) if args.rows == "all" else set(args.rows.split(","))
    if wanted - set(ROWS):
        p.error(f"unknown rows {sorted(wanted - set(ROWS))}; choose from {', '.join(ROWS)}")

    data, out, bb = Path(args.data), Path(args.out), args.backbone
    ensure_synthetic(data, "default", args.train_images, args.val_images, 256, seed=0, preview=True)
    info = machine_info()
    path = Path(args.results) if args.results else ROOT / "benchmarks" / "results" / \
        f"synthetic_{info['date'][:10]}{'_quick' if args.quick else ''}.json"
    curves = ROOT / "benchmarks" / "results" / ("curves_quick" if args.quick else "curves")
    results: dict = {"machine": info, "settings": vars(args), "rows": {}}
    if path.is_file():  # a re-run with --rows adds to / updates the rows of the same day
        results["rows"] = json.loads(path.read_text()).get("rows", {})
    t_all = time.time()

    def save():
        from logocap.utils import atomic_write_text
        atomic_write_text(path, json.dumps(results, indent=1))

    def curve(name: str) -> str | None:
        src = out / name / "loss.png"
        if not src.is_file():
            return None
        curves.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, curves / f"{name}.png")
        return str((curves / f"{name}.png").relative_to(ROOT))

    # ---- stage 1: the shared center-offset model (val AP every 5 epochs: its learning curve).
    # A stage 1 that a session could not finish is committed under checkpoints/resume/ (last.pth
    # with its optimizer state, metrics.jsonl); a fresh checkout continues it from there.
    saved = ROOT / "checkpoints" / "resume" / f"bench_v2_stage1_{bb}"
    if not args.quick and not (out / "stage1" / "last.pth").is_file() and (saved / "last.pth").is_file():
        (out / "stage1").mkdir(parents=True, exist_ok=True)
        for f in saved.iterdir():
            shutil.copyfile(f, out / "stage1" / f.name)
        print(f"stage 1: continuing the committed unfinished run {saved}")
    s1 = synthetic_config(f"center_offset_hrnet_{bb}", data, out / "stage1",
                          [f"train.epochs={args.stage1_epochs}", "train.eval_every=5"])
    stage1 = train_run(s1)
    results["stage1"] = {"epochs": args.stage1_epochs, "train_minutes": stage1["train_minutes"],
                         "best_val_AP": stage1.get("best_ap"), "curve": curve("stage1"),
                         "precision": _precision(out / "stage1")}
    save()
    init = str(out / "stage1" / "last.pth")

    def stage2(name: str, method: str, overrides: list[str]) -> tuple[Path, float, str | None]:
        cfg = synthetic_config(method, data, out / name,
                               [f"train.epochs={args.stage2_epochs}", "train.eval_every=1",
                                f"model.pretrained={init}", *overrides])
        s = train_run(cfg)
        return out / name / "last.pth", stage1["train_minutes"] + s["train_minutes"], curve(name)

    def row(label: str, metrics: dict, minutes: float | None, note: str = "",
            curve_png: str | None = None):
        results["rows"][label] = {**{k: metrics.get(k) for k in METRICS},
                                  "ms_per_image": metrics.get("ms_per_image"),
                                  "train_minutes": minutes, "note": note, "curve": curve_png,
                                  "commit": info["commit"], "date": info["date"]}
        print(f"  {label}: AP {metrics['AP']:.3f}", flush=True)
        save()

    base_ck = None
    if wanted & {"baseline", "bound", "splits"}:
        base_ck, minutes, png = stage2("baseline", f"center_offset_hrnet_{bb}", [])
        row("baseline", evaluate_run(base_ck, data, out_dir=out / "baseline" / "eval"), minutes,
            "center-offset, same schedule", png)
    if "bound" in wanted:
        for ws in (0.5, 1.0):  # half the paper's window, and the paper's
            row(f"upper bound (11x11 mesh, window_scale {ws})",
                _bound(base_ck, data, ws, out / "baseline" / f"bound_ws{ws}"), None,
                "oracle best mesh point per joint (supplementary Alg. 1)")

    full_ck = None
    if wanted & {"table5", "table7", "splits"}:
        variants = TABLE5 if "table5" in wanted else {"(f) LOGO-CAP full": TABLE5["(f) LOGO-CAP full"]}
        for label, (oks, reweigh, an) in variants.items():
            name = "logocap_" + label.split()[0].strip("()")
            ov = [f"loss.oks_loss={str(oks).lower()}", f"test.gaussian_reweigh={str(reweigh).lower()}",
                  f"model.kwargs.attentive_norm={str(an).lower()}"]
            ck, minutes, png = stage2(name, f"logocap_hrnet_{bb}", ov)
            row(f"Table 5 {label}", evaluate_run(ck, data, out_dir=out / name / "eval"), minutes,
                f"OKS loss {oks}, reweigh {reweigh}, AttNorm {an}", png)
            if label.startswith("(f)"):
                full_ck, full_minutes = ck, minutes
                if "table5" in wanted:  # the same model with the windows halved for 256 px
                    ck2, minutes2, png2 = stage2("logocap_f_ws05", f"logocap_hrnet_{bb}",
                                                 ov + ["test.window_scale=0.5", "test.global_size=49"])
                    row("LOGO-CAP full, windows halved (window_scale 0.5, global 49)",
                        evaluate_run(ck2, data, out_dir=out / "logocap_f_ws05" / "eval"), minutes2,
                        "window study: local steps, Gaussian and target sigma x0.5, global window 49",
                        png2)
    if "table7" in wanted:
        for level, what in TABLE7.items():
            row(f"Table 7 {level}", evaluate_run(full_ck, data, {"adaptation": level},
                                                  out_dir=out / "logocap_f" / f"eval_{level}"),
                full_minutes, what)
    if "table6" in wanted:
        for label, ov in TABLE6.items():
            name = "logocap_t6_" + label.replace(" ", "_").replace("x", "")
            ck, minutes, png = stage2(name, f"logocap_hrnet_{bb}", FULL + ov)
            row(f"Table 6 {label}", evaluate_run(ck, data, out_dir=out / name / "eval"), minutes,
                " ".join(ov) + " (11x11 / 3+1 is Table 5 (f))", png)

    if "splits" in wanted:  # the same models on other validation sets
        for split, (suffix, preset, seed) in SPLITS.items():
            other = Path(str(data) + suffix)
            ensure_synthetic(other, preset, 0, args.val_images, 256, seed=seed, preview=True)
            row(f"[{split}] baseline", evaluate_run(base_ck, other, out_dir=out / f"eval{suffix}" / "baseline"),
                None, f"val split of preset {preset}, seed {seed}")
            row(f"[{split}] {BOUND}", _bound(base_ck, other, 1.0, out / f"eval{suffix}" / "bound"),
                None, f"val split of preset {preset}, seed {seed}")
            row(f"[{split}] Table 5 (f) LOGO-CAP full",
                evaluate_run(full_ck, other, out_dir=out / f"eval{suffix}" / "logocap_f"),
                None, f"val split of preset {preset}, seed {seed}")

    results["table1"] = table1(results["rows"])
    # slim copies (weights + metadata, no optimizer state) for `logocap demo` and users
    if not args.quick:
        from logocap.engine.checkpoint import load_checkpoint
        from logocap.utils import atomic_torch_save
        for src, dst in ((out / "baseline" / "last.pth", f"center_offset_hrnet_{bb}_256.pth"),
                         (out / "logocap_f" / "last.pth", f"logocap_hrnet_{bb}_256.pth")):
            if src.is_file():
                ck = load_checkpoint(src)
                for k in ("optimizer", "scheduler", "rng", "scaler"):
                    ck.pop(k, None)
                atomic_torch_save(ck, ROOT / "checkpoints" / "synthetic" / dst)
                results.setdefault("checkpoints", [])
                if f"checkpoints/synthetic/{dst}" not in results["checkpoints"]:
                    results["checkpoints"].append(f"checkpoints/synthetic/{dst}")

    results["total_minutes"] = (time.time() - t_all) / 60
    save()
    print("\n" + f"{'row':<52}" + "".join(f"{m:>7}" for m in METRICS) + f"{'ms/img':>8}{'train min':>10}")
    for label, r in results["rows"].items():
        print(f"{label:<52}" + "".join(f"{r[m]:>7.3f}" for m in METRICS)
              + (f"{r['ms_per_image']:>8.1f}" if r["ms_per_image"] else f"{'-':>8}")
              + (f"{r['train_minutes']:>10.1f}" if r["train_minutes"] else f"{'-':>10}"))
    t = results["table1"]
    if t and t["share_recovered"] is not None:
        print(f"\nTable 1: baseline {t['baseline']:.3f}, bound {t['bound']:.3f}, LOGO-CAP "
              f"{t['logocap']:.3f}: LOGO-CAP recovers {100 * t['share_recovered']:.0f}% of the gap "
              "(paper: 34%)")
    print(f"\nwritten {path}; machine {info}")
    return 0


def _bound(checkpoint: Path, data: Path, window_scale: float, out_dir: Path) -> dict:
    from logocap.data.coco import CocoPoseDataset
    from logocap.data.paths import dataset_paths
    from logocap.engine.checkpoint import build_model_from_checkpoint, checkpoint_test_config
    from logocap.engine.upper_bound import upper_bound_eval

    model, meta, minfo = build_model_from_checkpoint(checkpoint)
    test_cfg = checkpoint_test_config(minfo)
    ann, images = dataset_paths(data, "val")
    ds = CocoPoseDataset(str(ann), str(images), meta=meta, mode="val", input_size=256)
    ub = upper_bound_eval(model, ds, meta, {**test_cfg, "window_scale": window_scale}, 256,
                          out_dir=out_dir, verbose=False)
    return ub["upper_bound"]


def _precision(run: Path) -> str | None:
    """The precision the run trained in, as resolved on its machine (config 'auto')."""
    summary = run / "summary.json"
    return json.loads(summary.read_text()).get("precision") if summary.is_file() else None


def table1(rows: dict) -> dict | None:
    """LOGO-CAP paper Table 1 on these rows: the share of the baseline -> bound gap recovered."""
    need = ("baseline", BOUND, "Table 5 (f) LOGO-CAP full")
    if not all(k in rows for k in need):
        return None
    base, bound, lc = (float(rows[k]["AP"]) for k in need)
    return {"baseline": base, "bound": bound, "logocap": lc,
            "share_recovered": (lc - base) / (bound - base) if bound > base else None}


def markdown(results: dict) -> str:
    """The README table of a results JSON (rows in the order they were run)."""
    m = results["machine"]
    lines = [f"Synthetic benchmark, {results['settings'].get('backbone', 'tiny')} HRNet at 256 px "
             f"(commit {m['commit']}, {m['date'][:10]}, {m['cpu']}, {m['threads']} threads):", "",
             "| row | " + " | ".join(METRICS) + " | train min | curve |",
             "|---|" + "---:|" * len(METRICS) + "---:|---|"]
    for label, r in results["rows"].items():
        cells = [f"{r[k]:.3f}" if r.get(k) is not None else "-" for k in METRICS]
        tm = f"{r['train_minutes']:.0f}" if r.get("train_minutes") else "-"
        cv = f"[png]({r['curve']})" if r.get("curve") else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {tm} | {cv} |")
    t = results.get("table1")
    if t and t.get("share_recovered") is not None:
        lines += ["", f"Table 1: LOGO-CAP recovers {100 * t['share_recovered']:.0f}% of the gap between "
                      f"the baseline ({t['baseline']:.3f}) and the oracle bound ({t['bound']:.3f}) "
                      "(paper: 34%)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
