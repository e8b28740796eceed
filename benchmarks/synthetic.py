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
  dekr     DEKR fine-tuned the same way, without and with the rescoring net (trained on the
           model's predictions on the train split, as ``logocap rescore-train``);
  hgr      the seed paper's Table 4: one training per switch combination (heatmap guidance,
           tradeoff loss, ART) plus the scoring net, each with its three qualities (regression
           = the regressed poses alone, heatmap = heatmap keypoints grouped with the ground-truth
           poses as cues, final);
  sar      top-down SAR on ground-truth boxes (128x96 crops) and bottom-up SAR on DEKR
           (``sar_dekr_hrnet_<backbone>``, skipped with a message while it is not registered).
Stage 1 is a center-offset model: DEKR and HGR take its trunk (their heads start from scratch),
top-down SAR its trunk without the last fusion into the low-resolution branches; each row's
``init`` says what the stage-1 file gave. Every row has AP, AR and Kpt.Error (mean px of matched
people's joints). The adaptive convolutions (DEKR's per-joint heads, HGR's ART units) make the
DEKR, HGR (d) and bottom-up SAR trainings several times slower per image than the others
(``benchmarks/train_speed.py``).

The precision is the training default (``auto``: bf16 + channels_last where the CPU computes
bfloat16 natively, else fp32); the JSON records which one ran.

    python benchmarks/synthetic.py                     # the whole benchmark (hours on 2 cores)
    python benchmarks/synthetic.py --rows baseline,bound
    python benchmarks/synthetic.py --rows dekr,hgr,sar     # the other method families
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

from logocap.engine.recipes import (CONFIG_DIR, ensure_synthetic, evaluate_heatmap_quality,  # noqa: E402
                                    evaluate_run, synthetic_config, train_run)
from logocap.models import list_models  # noqa: E402
from logocap.utils import machine_info  # noqa: E402

METRICS = ("AP", "AP50", "AP75", "APM", "APL", "AR")
KPT_ERROR = "KptErr"  # Kpt.Error, mean px over the labelled joints of matched people
ROWS = ("baseline", "bound", "table5", "table6", "table7", "splits", "dekr", "hgr", "sar")

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
# seed paper Table 4: (heatmap guidance, tradeoff loss, ART) per training; (e) = (d) + scoring
TABLE4 = {"(a) baseline": (False, False, False),
          "(b) +heatmap guidance": (True, False, False),
          "(c) +tradeoff loss": (True, True, False),
          "(d) +ART": (True, True, True)}
TABLE4_SCORING = "(e) +scoring"
# the paper's (regression, heatmap, final) AP with HRNet-W32 on COCO val2017
TABLE4_PAPER = {"(a) baseline": (59.6, 71.3, 64.5), "(b) +heatmap guidance": (60.5, 71.8, 64.9),
                "(c) +tradeoff loss": (61.5, 73.2, 66.2), "(d) +ART": (65.1, 73.3, 67.2),
                TABLE4_SCORING: (65.1, 73.3, 67.8)}
DEKR, DEKR_RESCORED = "DEKR", "DEKR + rescoring"
SAR_TOPDOWN, SAR_BOTTOMUP = "SAR top-down (ground-truth boxes)", "SAR bottom-up (on DEKR)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/synthetic",
                   help="synthetic benchmark folder (made if missing; shared with logocap demo)")
    p.add_argument("--out", default="runs/bench_v2", help="run folders")
    p.add_argument("--backbone", default="small", choices=["tiny", "small"])
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--stage1-epochs", type=int, default=None, help="60; 1 with --quick")
    p.add_argument("--stage2-epochs", type=int, default=None, help="4; 1 with --quick")
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
    if args.quick:  # epochs given explicitly win (a longer smoke check that predicts people)
        args.train_images, args.val_images, args.backbone = 64, 16, "tiny"
        args.data, args.out = args.data + "_quick", args.out + "_quick"
    epochs = (1, 1) if args.quick else (60, 4)
    args.stage1_epochs = epochs[0] if args.stage1_epochs is None else args.stage1_epochs
    args.stage2_epochs = epochs[1] if args.stage2_epochs is None else args.stage2_epochs
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

    def stage2(name: str, method: str, overrides: list[str], size: int = 256,
               recipe: str | None = None) -> tuple[Path, float, str | None]:
        cfg = synthetic_config(recipe or method, data, out / name,
                               [f"train.epochs={args.stage2_epochs}", "train.eval_every=1",
                                f"model.pretrained={init}", *overrides], size=size)
        cfg["model"]["name"] = method
        s = train_run(cfg)
        return out / name / "last.pth", stage1["train_minutes"] + s["train_minutes"], curve(name)

    def row(label: str, metrics: dict, minutes: float | None, note: str = "",
            curve_png: str | None = None, **extra):
        results["rows"][label] = {**{k: metrics.get(k) for k in METRICS},
                                  KPT_ERROR: metrics.get(KPT_ERROR),
                                  "ms_per_image": metrics.get("ms_per_image"),
                                  "train_minutes": minutes, "note": note, "curve": curve_png,
                                  **extra, "commit": info["commit"], "date": info["date"]}
        r = results["rows"][label]
        print(f"  {label}: AP{_cell(r['AP'], 6, 3)}, AR{_cell(r['AR'], 6, 3)}, Kpt.Error"
              f"{_cell(r[KPT_ERROR], 6, 2)} px", flush=True)
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

    if "dekr" in wanted:
        method = f"dekr_hrnet_{bb}"
        ck, minutes, png = stage2("dekr", method, [])
        init_note = _init_report(method, init)
        row(DEKR, evaluate_run(ck, data, {"rescore": None}, out_dir=out / "dekr" / "eval"),
            minutes, "DEKR fine-tuned from stage 1, no rescoring; " + init_note["short"], png,
            init=init_note["summary"])
        net, fit_minutes = _rescorer(ck, data, out / "dekr" / "rescore.pth")
        if net is not None:
            row(DEKR_RESCORED, evaluate_run(ck, data, {"rescore": str(net)},
                                            out_dir=out / "dekr" / "eval_rescore"),
                minutes + fit_minutes, "the DEKR row's model; scoring net trained on its "
                f"train-split predictions ({fit_minutes:.1f} min, logocap rescore-train's recipe)",
                png, init=init_note["summary"])

    if "hgr" in wanted:  # seed paper Table 4
        method = f"hgr_hrnet_{bb}"
        for label, (guidance, tradeoff, art) in TABLE4.items():
            name = "hgr_" + label.split()[0].strip("()")
            ov = [f"model.kwargs.heatmap_guidance={str(guidance).lower()}",
                  f"model.kwargs.adaptive={str(art).lower()}", f"loss.tradeoff={str(tradeoff).lower()}"]
            ck, minutes, png = stage2(name, method, ov)
            init_note = _init_report(method, init, heatmap_guidance=guidance, adaptive=art)
            q = _hgr_qualities(ck, data, out / name)
            row(f"Table 4 {label}", q["final"], minutes,
                f"heatmap guidance {guidance}, tradeoff loss {tradeoff}, ART {art}, no scoring "
                f"net; {init_note['short']}", png, **_quality_fields(q), init=init_note["summary"])
            if label.startswith("(d)"):
                net, fit_minutes = _rescorer(ck, data, out / name / "rescore.pth")
                if net is None:
                    continue
                final = evaluate_run(ck, data, {"rescore": str(net)}, out_dir=out / name / "eval_rescore")
                row(f"Table 4 {TABLE4_SCORING}", final, minutes + fit_minutes,
                    "the (d) model with the scoring net (trained on its train-split predictions, "
                    f"{fit_minutes:.1f} min); scoring changes the final quality only, so the "
                    "regression and heatmap qualities are those of (d)", png,
                    **_quality_fields({**q, "final": final}), init=init_note["summary"])

    if "sar" in wanted:
        method = f"sar_hrnet_{bb}_topdown"
        ck, minutes, png = stage2("sar_topdown", method, [], size=128)
        init_note = _init_report(method, init)
        row(SAR_TOPDOWN, evaluate_run(ck, data, out_dir=out / "sar_topdown" / "eval"), minutes,
            "128x96 crops of the ground-truth boxes (training and test), flip; "
            + init_note["short"], png, init=init_note["summary"])
        method = f"sar_dekr_hrnet_{bb}"
        if method not in list_models():
            print(f"  {SAR_BOTTOMUP}: skipped, model '{method}' is not registered yet "
                  "(the row runs once logocap registers it)", flush=True)
        else:  # its own synthetic recipe, else DEKR's recipe with this model
            recipe = method if (CONFIG_DIR / f"{method}_256_synthetic.yaml").is_file() else f"dekr_hrnet_{bb}"
            ck, minutes, png = stage2("sar_dekr", method, [], recipe=recipe)
            init_note = _init_report(method, init)
            row(SAR_BOTTOMUP, evaluate_run(ck, data, {"rescore": None}, out_dir=out / "sar_dekr" / "eval"),
                minutes, f"recipe {recipe}_256_synthetic.yaml; " + init_note["short"], png,
                init=init_note["summary"])

    results["table1"] = table1(results["rows"])
    results["claims"] = claims(results["rows"])
    # slim float16 copies (weights + metadata, no optimizer state) for `logocap demo` and users
    if not args.quick:
        from logocap.engine.checkpoint import slim_checkpoint
        for src, dst in ((out / "baseline" / "last.pth", f"center_offset_hrnet_{bb}_256.pth"),
                         (out / "logocap_f" / "last.pth", f"logocap_hrnet_{bb}_256.pth")):
            if src.is_file():
                slim_checkpoint(src, ROOT / "checkpoints" / "synthetic" / dst, half=True)
                results.setdefault("checkpoints", [])
                if f"checkpoints/synthetic/{dst}" not in results["checkpoints"]:
                    results["checkpoints"].append(f"checkpoints/synthetic/{dst}")

    results["total_minutes"] = (time.time() - t_all) / 60
    save()
    print("\n" + f"{'row':<52}" + "".join(f"{m:>7}" for m in METRICS)
          + f"{'KptErr':>8}{'ms/img':>8}{'train min':>10}")
    for label, r in results["rows"].items():
        print(f"{label:<52}" + "".join(_cell(r.get(m), 7, 3) for m in METRICS)
              + _cell(r.get(KPT_ERROR), 8, 2) + _cell(r.get("ms_per_image"), 8, 1)
              + _cell(r.get("train_minutes"), 10, 1))
    for c in results["claims"]:
        print(f"claim: {c['claim']}: {c['measured']:+.3f} AP (paper {c['paper']:+.1f}) -> "
              f"{'holds' if c['holds'] else 'does not hold'} here")
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


def _cell(v, width: int, digits: int) -> str:
    return f"{v:>{width}.{digits}f}" if v is not None else f"{'-':>{width}}"


def _init_report(method: str, init: str, **kwargs) -> dict:
    """What the stage-1 file gives a model of ``method`` (the pretrained loader's report, as the
    training log prints it): ``summary`` (one line) and ``short`` (counts and the new parts)."""
    from logocap.engine.checkpoint import load_checkpoint
    from logocap.models import create_model
    from logocap.models.pretrained import load_pretrained

    k = len(load_checkpoint(init)["meta"]["keypoint_names"])
    rep = load_pretrained(create_model(method, num_keypoints=k, **kwargs), init)
    new = sorted({key.split(".")[0] for key in rep.missing})
    short = (f"stage-1 init: {len(rep.loaded)} tensors loaded (trunk), {len(rep.missing)} new "
             f"({', '.join(new) or 'none'}), {len(rep.unexpected)} stage-1 tensors unused")
    if rep.mismatched:
        short += f", {len(rep.mismatched)} of another shape"
    return {"summary": rep.summary(), "short": short}


def _rescorer(checkpoint: Path, data: Path, out_file: Path) -> tuple[Path | None, float]:
    """The scoring net of ``checkpoint`` trained on its predictions on the train split (reused
    when it is newer than the checkpoint); returns the file and the minutes its fitting took,
    or (None, minutes) with a message when the model predicts nobody to learn from."""
    from logocap.data.paths import dataset_paths
    from logocap.engine.rescore import fit_rescorer
    from logocap.utils import LogocapError

    if out_file.is_file() and out_file.stat().st_mtime >= checkpoint.stat().st_mtime:
        print(f"{out_file}: reusing the scoring net")
        summary = Path(str(out_file) + ".json")
        return out_file, json.loads(summary.read_text()).get("minutes", 0.0) if summary.is_file() else 0.0
    t0 = time.time()
    ann, images = dataset_paths(data, "train")
    try:
        info = fit_rescorer(checkpoint, ann, images, out_file, verbose=False)
    except LogocapError as e:  # e.g. an undertrained --quick model that finds nobody
        print(f"  scoring net of {checkpoint}: not trained, so its row is skipped: {e}", flush=True)
        return None, (time.time() - t0) / 60
    minutes = (time.time() - t0) / 60
    from logocap.utils import atomic_write_text
    atomic_write_text(str(out_file) + ".json", json.dumps({**info, "minutes": minutes}, indent=1))
    print(f"  scoring net: {info['samples']} poses of {info['images']} train images, final MSE "
          f"{info['losses'][-1]:.4f}, {minutes:.1f} min")
    return out_file, minutes


def _hgr_qualities(checkpoint: Path, data: Path, run: Path) -> dict:
    """The three qualities of an HGR checkpoint (seed paper §4.3), each a metrics dict."""
    return {"regression": evaluate_run(checkpoint, data, {"group_radius": 0, "rescore": None},
                                       out_dir=run / "eval_regression"),
            "heatmap": evaluate_heatmap_quality(checkpoint, data, out_dir=run / "eval_heatmap"),
            "final": evaluate_run(checkpoint, data, {"rescore": None}, out_dir=run / "eval")}


def _quality_fields(q: dict) -> dict:
    """Row fields of the HGR qualities: AP per quality and the metrics of the two cue ones."""
    return {"regression_AP": q["regression"]["AP"], "heatmap_AP": q["heatmap"]["AP"],
            "qualities": {n: {k: q[n].get(k) for k in (*METRICS, KPT_ERROR)}
                          for n in ("regression", "heatmap")}}


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


def claims(rows: dict) -> list[dict]:
    """The papers' claims that these rows test: (claim, rows compared, quality, paper's gain in
    AP points); measured = AP difference (0-1 scale) when both rows are there."""
    t4 = {k: f"Table 4 {k}" for k in (*TABLE4, TABLE4_SCORING)}
    # paper gains: LOGO-CAP Table 2 (COCO val, HRNet-W32), seed paper Table 4
    tests = [("DEKR: rescoring improves AP", DEKR, DEKR_RESCORED, "AP", 0.8),
             ("LOGO-CAP beats DEKR without rescoring", DEKR, "Table 5 (f) LOGO-CAP full", "AP", 2.4),
             ("HGR: heatmap guidance improves regression quality", t4["(a) baseline"],
              t4["(b) +heatmap guidance"], "regression_AP", 0.9),
             ("HGR: ART improves regression quality", t4["(c) +tradeoff loss"], t4["(d) +ART"],
              "regression_AP", 3.6),
             ("HGR: the tradeoff loss improves heatmap quality", t4["(b) +heatmap guidance"],
              t4["(c) +tradeoff loss"], "heatmap_AP", 1.4),
             ("HGR: scoring improves final AP", t4["(d) +ART"], t4[TABLE4_SCORING], "AP", 0.6)]
    out = []
    for claim, a, b, key, paper in tests:
        if a in rows and b in rows and rows[a].get(key) is not None and rows[b].get(key) is not None:
            d = float(rows[b][key]) - float(rows[a][key])
            out.append({"claim": claim, "rows": [a, b], "quality": key, "paper": paper,
                        "measured": d, "holds": d > 0})
    return out


def markdown(results: dict) -> str:
    """The README table of a results JSON (rows in the order they were run)."""
    m = results["machine"]
    lines = [f"Synthetic benchmark, {results['settings'].get('backbone', 'tiny')} HRNet at 256 px "
             f"(commit {m['commit']}, {m['date'][:10]}, {m['cpu']}, {m['threads']} threads):", "",
             "| row | " + " | ".join(METRICS) + " | Kpt.Error px | train min | curve |",
             "|---|" + "---:|" * len(METRICS) + "---:|---:|---|"]
    for label, r in results["rows"].items():
        cells = [f"{r[k]:.3f}" if r.get(k) is not None else "-" for k in METRICS]
        err = f"{r[KPT_ERROR]:.2f}" if r.get(KPT_ERROR) is not None else "-"
        tm = f"{r['train_minutes']:.0f}" if r.get("train_minutes") else "-"
        cv = f"[png]({r['curve']})" if r.get("curve") else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {err} | {tm} | {cv} |")
    t4 = [(k, results["rows"][f"Table 4 {k}"]) for k in (*TABLE4, TABLE4_SCORING)
          if f"Table 4 {k}" in results["rows"]]
    if t4:  # seed paper Table 4: the three qualities (AP) of each row
        lines += ["", "HGR ablation (seed paper Table 4): AP of the regressed poses alone (regression "
                      "quality), of the heatmap keypoints grouped with the ground-truth poses "
                      "(heatmap quality) and of the whole method (final quality); paper: HRNet-W32, "
                      "COCO val2017. In the heatmap quality the ground truth replaces the regressed "
                      "poses as the cues; a joint with no heatmap candidate (heat > 0.01) within "
                      "test.group_radius takes the nearest candidate of its type, or counts as "
                      "missed if there is none (keeping the ground-truth joint, the literal rule, "
                      "would score heatmaps that find nothing as perfect).", "",
                  "| row | regression | heatmap | final | paper regression / heatmap / final |",
                  "|---|---:|---:|---:|---:|"]
        for k, r in t4:
            cells = [f"{r[q]:.3f}" if r.get(q) is not None else "-"
                     for q in ("regression_AP", "heatmap_AP", "AP")]
            lines.append(f"| {k} | " + " | ".join(cells) + " | "
                         + " / ".join(f"{v:.1f}" for v in TABLE4_PAPER[k]) + " |")
    cl = results.get("claims") or claims(results["rows"])
    if cl:
        lines += ["", "Claims tested (AP difference of the second row minus the first; paper in AP "
                      "points):", ""]
        for c in cl:
            lines.append(f"- {c['claim']}: {c['measured']:+.3f} ({c['rows'][1]} vs {c['rows'][0]}; "
                         f"paper {c['paper']:+.1f}): {'holds' if c['holds'] else 'does not hold'} here")
    t = results.get("table1")
    if t and t.get("share_recovered") is not None:
        lines += ["", f"Table 1: LOGO-CAP recovers {100 * t['share_recovered']:.0f}% of the gap between "
                      f"the baseline ({t['baseline']:.3f}) and the oracle bound ({t['bound']:.3f}) "
                      "(paper: 34%)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
