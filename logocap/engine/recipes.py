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

__all__ = ["ensure_synthetic", "synthetic_config", "train_run", "evaluate_run", "CONFIG_DIR"]

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
                     overrides: list[str] | None = None) -> dict:
    """The config of ``configs/{method}_256_synthetic.yaml`` (method e.g. center_offset_hrnet_tiny)
    with data.root and train.out set, plus dotted overrides."""
    path = CONFIG_DIR / f"{method}_256_synthetic.yaml"
    if not path.is_file():
        raise LogocapError(f"no synthetic recipe {path.name} in {CONFIG_DIR}")
    cfg = load_config(path, overrides)
    cfg["data"]["root"] = str(data_root)
    cfg["train"]["out"] = str(out)
    return cfg


def train_run(cfg: dict) -> dict:
    """Train (resuming when ``out/last.pth`` is complete for this config) and time it."""
    from .train import train

    cfg = copy.deepcopy(cfg)
    out = Path(cfg["train"]["out"])
    summary_file = out / "summary.json"
    if summary_file.is_file() and (out / "last.pth").is_file():
        s = json.loads(summary_file.read_text())
        if s.get("epochs") == cfg["train"]["epochs"] and (out / "train_time.json").is_file():
            print(f"{out}: already trained ({s['epochs']} epochs), reusing it")
            return {**s, **json.loads((out / "train_time.json").read_text())}
    t0 = time.time()
    summary = train(cfg, device="cpu")
    minutes = (time.time() - t0) / 60.0
    from ..utils import atomic_write_text
    atomic_write_text(out / "train_time.json", json.dumps({"train_minutes": minutes}))
    return {**{k: v for k, v in summary.items() if k != "history"}, "train_minutes": minutes}


def evaluate_run(checkpoint: str | Path, data_root: str | Path, test_overrides: dict | None = None,
                 out_dir: str | Path | None = None, split: str = "val", verbose: bool = False) -> dict:
    """COCOeval metrics of a checkpoint on the synthetic val split, plus ms per image."""
    from ..data.coco import CocoPoseDataset
    from .checkpoint import build_model_from_checkpoint, checkpoint_test_config, load_checkpoint
    from .evaluate import evaluate_model

    ckpt = load_checkpoint(checkpoint)
    model, meta, info = build_model_from_checkpoint(ckpt, None, "cpu")
    test_cfg = checkpoint_test_config(info, test_overrides)
    root = Path(data_root)
    size = int(info.get("input_size") or 256)
    dataset = CocoPoseDataset(str(root / "annotations" / f"person_keypoints_{split}.json"),
                              str(root / "images" / split), meta=meta, mode="val", input_size=size)
    t0 = time.time()
    metrics, _ = evaluate_model(model, dataset, meta, test_cfg, size, device="cpu",
                                out_dir=out_dir, normalization=info.get("normalization"),
                                verbose=verbose)
    metrics = dict(metrics)
    metrics["ms_per_image"] = 1000.0 * (time.time() - t0) / max(1, len(dataset))
    return metrics
