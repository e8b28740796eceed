"""Recipes shared by the main job (``logocap demo``) and ``benchmarks/synthetic.py``.

Both run the same protocol on the synthetic benchmark: generate the data once, train the
center-offset baseline, fine-tune LOGO-CAP from it, evaluate everything with the official COCOeval.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from ..config import load_config
from ..utils import LogocapError

__all__ = ["ensure_synthetic", "synthetic_config", "train_run", "train_minutes", "evaluate_run",
           "evaluate_heatmap_quality", "CONFIG_DIR"]

# configs/ of a source checkout; the synthetic recipes are read from there (an install without
# the source tree has no configs/, and `synthetic_config` then says so with a LogocapError)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def ensure_synthetic(root: str | Path, preset: str = "default", num_train: int = 1000,
                     num_val: int = 100, size: int = 256, seed: int = 0, preview: bool = True) -> Path:
    """Generate the synthetic benchmark into ``root`` unless it is already there (same settings,
    read back from the ``stats.json`` that ``logocap synth`` writes)."""
    from ..data.synthetic import generate_synthetic

    root = Path(root)
    want = {"preset": preset, "size": size, "seed": seed, "train": num_train, "val": num_val}
    stats_file = root / "stats.json"
    if stats_file.is_file():
        st = json.loads(stats_file.read_text())
        have = {"preset": st.get("preset"), "size": st.get("size"), "seed": st.get("seed"),
                "train": st.get("train", {}).get("images"), "val": st.get("val", {}).get("images")}
        if have == want:
            print(f"using the synthetic benchmark in {root} ({want})")
            return root
        raise LogocapError(f"{root} holds a synthetic benchmark made with other settings ({have}, "
                           f"wanted {want}); choose another --data folder")
    if root.exists() and any(root.iterdir()):
        raise LogocapError(f"{root} exists and is not a synthetic benchmark folder; choose another --data")
    t0 = time.time()
    generate_synthetic(root, preset=preset, num_train=num_train, num_val=num_val, size=size,
                       seed=seed, preview=preview, overwrite=True)
    print(f"generated the synthetic benchmark in {root} in {time.time() - t0:.1f} s")
    return root


def synthetic_config(method: str, data_root: str | Path, out: str | Path,
                     overrides: list[str] | None = None, size: int = 256) -> dict:
    """The config of ``configs/{method}_{size}_synthetic.yaml`` (method e.g.
    center_offset_hrnet_tiny; ``size`` the network input: 256, or the crop height of a top-down
    model, e.g. sar_hrnet_small_topdown at 128) with data.root and train.out set, plus dotted
    overrides."""
    path = CONFIG_DIR / f"{method}_{size}_synthetic.yaml"
    if not path.is_file():
        raise LogocapError(f"no synthetic recipe {path.name} in {CONFIG_DIR}")
    cfg = load_config(path, overrides)
    cfg["data"]["root"] = str(data_root)
    cfg["train"]["out"] = str(out)
    return cfg


def train_run(cfg: dict) -> dict:
    """Train ``cfg``: reuse a finished run, resume an unfinished one (``out/last.pth`` of an
    earlier, interrupted session continues exactly), else start. ``train_minutes`` is the
    training time summed over the epochs (metrics.jsonl; evaluation not counted), so it is the
    same whether the run was done in one go or in several sessions."""
    from .checkpoint import load_checkpoint
    from .train import train

    cfg = copy.deepcopy(cfg)
    out = Path(cfg["train"]["out"])
    epochs = int(cfg["train"]["epochs"])
    done = 0
    if (out / "last.pth").is_file():
        done = int(load_checkpoint(out / "last.pth").get("epoch") or 0)
    if done >= epochs and (out / "summary.json").is_file():
        print(f"{out}: already trained ({done} epochs), reusing it")
        summary = json.loads((out / "summary.json").read_text())
    else:
        if done:
            print(f"{out}: resuming after epoch {done} of {epochs}")
            cfg["train"]["resume"] = True
        summary = {k: v for k, v in train(cfg, device="cpu").items() if k != "history"}
    return {**summary, "train_minutes": train_minutes(out)}


def train_minutes(out: str | Path) -> float:
    """Minutes of training (sum of the per-epoch times in ``out/metrics.jsonl``)."""
    path = Path(out) / "metrics.jsonl"
    total = 0.0
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if rec.get("type") == "epoch":
            total += float(rec.get("time", 0.0))
    return total / 60.0


def evaluate_run(checkpoint: str | Path, data_root: str | Path, test_overrides: dict | None = None,
                 out_dir: str | Path | None = None, split: str = "val", verbose: bool = False) -> dict:
    """COCOeval metrics of a checkpoint on the synthetic val split, plus ms per image."""
    from ..data.coco import CocoPoseDataset
    from ..data.paths import dataset_paths
    from .checkpoint import build_model_from_checkpoint, checkpoint_test_config, load_checkpoint
    from .evaluate import evaluate_model

    ckpt = load_checkpoint(checkpoint)
    model, meta, info = build_model_from_checkpoint(ckpt, None, "cpu")
    test_cfg = checkpoint_test_config(info, test_overrides)
    size = int(info.get("input_size") or 256)
    ann, images = dataset_paths(data_root, split)
    dataset = CocoPoseDataset(str(ann), str(images), meta=meta, mode="val", input_size=size)
    t0 = time.time()
    metrics, _ = evaluate_model(model, dataset, meta, test_cfg, size, device="cpu",
                                out_dir=out_dir, normalization=info.get("normalization"),
                                verbose=verbose)
    metrics = dict(metrics)
    metrics["ms_per_image"] = 1000.0 * (time.time() - t0) / max(1, len(dataset))
    return metrics


def evaluate_heatmap_quality(checkpoint: str | Path, data_root: str | Path,
                             out_dir: str | Path | None = None, split: str = "val") -> dict:
    """The heatmap quality of an HGR checkpoint (seed paper Table 4): COCOeval metrics (plus
    ``KptErr``) of its heatmap keypoints grouped with the ground-truth poses as the cues
    (``engine.hgr_quality``), test settings of the checkpoint, rescoring off."""
    from ..data.coco import CocoPoseDataset
    from ..data.paths import dataset_paths
    from ..evaluation import evaluate_predictions, poses_to_results
    from ..predict import Predictor
    from .evaluate import _add_keypoint_error
    from .hgr_quality import heatmap_quality_poses

    predictor = Predictor.from_checkpoint(checkpoint, None, "cpu", rescore=None)
    ann, images = dataset_paths(data_root, split)
    dataset = CocoPoseDataset(str(ann), str(images), meta=predictor.meta, mode="val",
                              input_size=predictor.input_size)
    poses = heatmap_quality_poses(predictor, dataset)
    metrics = evaluate_predictions(poses, dataset.coco, meta=predictor.meta, out_dir=out_dir,
                                   verbose=False)
    return _add_keypoint_error(dict(metrics), poses_to_results(poses), dataset.coco,
                               predictor.meta, list(poses), out_dir, False)
