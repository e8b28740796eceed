"""The training loop, readable top to bottom: data, model, loss, step, log, checkpoint, evaluate.

One process (CPU or one GPU) or many under ``torchrun`` (DDP; gloo on CPU, nccl on GPU). Rank 0
logs, evaluates and writes files. Recipe (official code, notes 4.5): Adam lr 1e-3 without weight
decay, MultiStepLR at epochs 90/120 of 140 (scaled to any epoch count), gamma 0.1.

Reproducibility contract:
- data order is a function of (seed, epoch) (DistributedSampler, also for one process) and the
  augmentation a function of (seed, epoch, index) (``dataset.set_epoch``), so ``resume`` after
  epoch k reproduces the uninterrupted run exactly;
- N processes with batch B/N follow one process with batch B: BatchNorm statistics are
  synchronised (``dist.convert_sync_batchnorm``), and the offset loss, which the official code
  normalises by the number of weighted entries *in the batch*, is given weights rescaled so that
  DDP's gradient average equals that global normalisation (``balance_offset_weights``).
  Not covered: LOGO-CAP's KAM loss divides by the number of valid candidates per process (as
  the official multi-GPU training does).
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from ..meta import get_meta
from ..utils import (LogocapError, atomic_write_bytes, atomic_write_text, single_thread_opencv,
                     single_thread_worker)
from . import dist as D
from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from ..precision import MixedPrecisionModel, Precision, resolve_precision

__all__ = ["TrainStep", "train", "lr_milestones", "balance_offset_weights", "build_train_dataset",
           "get_rng_state", "set_rng_state"]


class TrainStep(nn.Module):
    """(model, criterion) as one module, so DDP sees the whole step in one forward.

    With a ``precision`` the criterion sees the network through :class:`MixedPrecisionModel`
    (network in bf16 / fp16 autocast, outputs and losses in fp32).
    """

    is_train_step = True

    def __init__(self, model: nn.Module, criterion, precision: Precision | None = None):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.precision = precision

    def forward(self, batch: dict) -> dict:
        net = self.model if self.precision is None else MixedPrecisionModel(self.model, self.precision)
        return self.criterion(net, batch)


def lr_milestones(tcfg: dict) -> list[int]:
    """Epochs 90/120 of a 140-epoch schedule, scaled to ``tcfg['epochs']``."""
    of = tcfg.get("lr_steps_of", 140)
    return [int(round(e * tcfg["epochs"] / of)) for e in tcfg["lr_steps"]]


def warmup_factor(step: int, warmup_iters: int, start: float = 0.001) -> float:
    """Linear warm-up by iteration (mmpose's LinearLR, start factor 0.001): the lr multiplier of
    iteration ``step`` (0-based); 1 from ``warmup_iters`` on (and always when it is 0)."""
    if not warmup_iters or step >= warmup_iters:
        return 1.0
    return start + (1.0 - start) * step / warmup_iters


def balance_offset_weights(batch: dict, world_size: int) -> None:
    """Make DDP's gradient average equal the offset loss of the global batch.

    The offset loss is sum(w * l) / n with n the number of entries with w > 0 in the (local)
    batch. DDP averages the per-process gradients, i.e. computes mean_r(S_r / n_r), whereas one
    process with the whole batch computes sum_r(S_r) / N. Scaling process r's weights by
    world_size * n_r / N (n and N = sum_r n_r counted before scaling) turns the first into the
    second. One process: factor 1, nothing changes.
    """
    if world_size <= 1 or "offset_weights" not in batch:
        return
    w = batch["offset_weights"]
    n_local = (w > 0).sum().to(torch.float64)
    n_all = D.all_reduce_sum(n_local.clone())
    if n_all > 0 and n_local > 0:
        batch["offset_weights"] = w * float(world_size * n_local / n_all)


# ---------------------------------------------------------------------------------------- RNG
def get_rng_state() -> dict:
    """All RNG states as tensors / lists / ints (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]),
                   "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------- data
def _check_data(cfg: dict, split: str) -> tuple[Path, Path]:
    from ..data.paths import config_paths
    return config_paths(cfg["data"], split)


def _dataset_meta(cfg: dict):
    try:
        return get_meta(cfg["data"]["dataset"])
    except ValueError:
        return None  # custom keypoint set: the dataset reads it from the annotation file


def build_train_dataset(cfg: dict):
    """The training set of ``cfg`` as the model's method family builds it (bottom-up targets with
    the family's options, or person crops for a top-down family)."""
    from ..families import family_of

    ann, img = _check_data(cfg, "train")
    ds = family_of(cfg["model"]["name"]).build_train_dataset(
        ann, img, _dataset_meta(cfg), cfg["data"], seed=cfg["train"]["seed"])
    # an unreadable image among many is skipped with a warning and counted, not a crash mid-epoch
    bad = ds.check_images()
    if bad:
        if len(bad) == len(ds.image_ids):
            raise LogocapError(f"none of the {len(bad)} training images in {img} can be read "
                               f"(first: {bad[0][0]}: {bad[0][1]})")
        skip = {p for p, _ in bad}
        ds.image_ids = [i for i in ds.image_ids if str(ds.image_path(i)) not in skip]
        print(f"warning: skipping {len(bad)} unreadable training image(s), e.g. {bad[0][0]} "
              f"({bad[0][1]}); training on {len(ds.image_ids)}", file=sys.stderr)
    return ds


def build_val_dataset(cfg: dict):
    from ..data.coco import CocoPoseDataset

    ann, img = _check_data(cfg, "val")
    return CocoPoseDataset(str(ann), str(img), meta=_dataset_meta(cfg), mode="val",
                           input_size=cfg["data"]["input_size"],
                           max_images=cfg["data"]["max_images"])


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------- model
def _load_pretrained(model: nn.Module, path: str, log) -> None:
    """ImageNet HRNet (backbone), an official or a logocap checkpoint (whole model)."""
    from ..models.pretrained import load_pretrained

    log("pretrained: " + load_pretrained(model, path).summary())


# ---------------------------------------------------------------------------------------- logging
class _RunLog:
    """metrics.jsonl (one line per log step and per epoch), metrics.csv and loss.png (per epoch).

    ``epoch`` in the records counts from 1 (the epoch a step belongs to / the epochs completed).
    """

    def __init__(self, out: Path, start_epoch: int, resumed_record: dict | None = None):
        self.jsonl = out / "metrics.jsonl"
        self.csv, self.png = out / "metrics.csv", out / "loss.png"
        self.records = []
        if self.jsonl.is_file():  # resume: keep what happened before the resumed epoch
            torn = 0
            for line in self.jsonl.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:  # a kill in the middle of an append
                    torn += 1
                    continue
                if isinstance(rec, dict) and rec.get("epoch", 0) <= start_epoch:
                    self.records.append(rec)
            if torn:
                print(f"warning: {self.jsonl}: dropped {torn} unreadable line(s) (a run killed "
                      f"while writing)", file=sys.stderr)
            # a kill after the checkpoint was written but before the epoch was logged: the
            # checkpoint carries its epoch's record
            if resumed_record and not any(r.get("type") == "epoch" and r.get("epoch") == start_epoch
                                          for r in self.records):
                self.records.append(dict(resumed_record))
            atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records))

    def add(self, rec: dict) -> None:
        self.records.append(rec)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if rec["type"] == "epoch":
            self._write_csv()
            self._plot()

    def _write_csv(self) -> None:
        rows = [r for r in self.records if r["type"] == "epoch"]
        cols = []
        for r in rows:
            cols += [k for k in r if k != "type" and k not in cols]
        lines = [",".join(cols)] + [",".join(_fmt(r.get(c, "")) for c in cols) for r in rows]
        atomic_write_text(self.csv, "\n".join(lines) + "\n")

    def _plot(self) -> None:
        import io

        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r for r in self.records if r["type"] == "step"]
        epochs = [r for r in self.records if r["type"] == "epoch"]
        fig, ax = plt.subplots(figsize=(6, 4))
        if steps:
            ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6,
                    label="loss (log steps)")
        ax.plot([r["step"] for r in epochs], [r["loss"] for r in epochs], "o-", label="loss (epoch mean)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss")
        if all(r["loss"] > 0 for r in steps + epochs):
            ax.set_yscale("log")
        handles, labels = ax.get_legend_handles_labels()
        evals = [r for r in epochs if "val_AP" in r]
        if evals:  # the learning curve: val AP per evaluated epoch on a second axis
            ax2 = ax.twinx()
            ax2.plot([r["step"] for r in evals], [r["val_AP"] for r in evals], "s-", color="C3",
                     label="val AP")
            ax2.set_ylabel("val AP (COCOeval)")
            ax2.set_ylim(0, max(0.05, 1.1 * max(r["val_AP"] for r in evals)))
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, loc="upper right")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(self.png, buf.getvalue())


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------- safety
# what --resume needs besides the weights
_RESUME_KEYS = ("optimizer", "scheduler", "epoch", "global_step", "rng")


def _check_resumable(ckpt: dict, path: Path) -> None:
    """One line naming what a resume checkpoint lacks (a copied best.pth, a released file, a plain
    state_dict hold weights only), and the warm start that uses just the weights."""
    missing = [k for k in _RESUME_KEYS if ckpt.get(k) is None] if ckpt.get("format") == "logocap" \
        else list(_RESUME_KEYS)
    if missing:
        raise LogocapError(f"cannot resume from {path}: it holds weights but no training state "
                           f"({', '.join(missing)} missing); to start a new run from these weights "
                           f"use --init-weights {path} (model.pretrained={path}) without --resume")


def _diverged(net: nn.Module, images: torch.Tensor) -> str | None:
    """Why the weights must not be saved, or None: a NaN/Inf weight or buffer, or NaN/Inf outputs
    in eval mode (weights at ~1e12 still train with finite batch statistics but predict NaN)."""
    bad = [k for k, v in net.state_dict().items()
           if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        return f"{len(bad)} weight tensor(s) hold NaN/Inf (e.g. {bad[0]})"
    p = next(net.parameters())
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(images[:1].to(p.device, p.dtype))
    finally:
        net.train(was_training)
    bad = [k for k, v in out.items() if torch.is_tensor(v) and not torch.isfinite(v).all()]
    return f"the model predicts NaN/Inf ({', '.join(bad)})" if bad else None


def _kept(out: Path) -> str:
    last = out / "last.pth"
    return f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written"


def _report_images(batch: dict, seen: set) -> None:
    """Warn once per file about images replaced mid-epoch (undecodable) or truncated JPEGs."""
    for key, what in (("skipped_images", "skipped (replaced by another image)"),
                      ("image_warnings", None)):
        for msg in batch.pop(key, ()):
            if msg not in seen:
                seen.add(msg)
                print(f"warning: {what + ': ' if what else ''}{msg}", file=sys.stderr)


# ---------------------------------------------------------------------------------------- the loop
def train(cfg: dict, device: str | None = None, sync_bn: bool | None = None) -> dict:
    """Train ``cfg`` (logocap.config.DEFAULTS shape); returns a summary dict.

    ``device``: "cpu" / "cuda" / None (CUDA when available). ``sync_bn``: synchronise BatchNorm
    over processes (default: cfg["train"]["sync_bn"] if present, else True); ignored for one
    process.
    """
    owns_group = not D.is_initialized()
    info = D.init_distributed(device)
    try:
        return _train(cfg, info, sync_bn)
    finally:
        if owns_group:
            D.cleanup()


def _train(cfg: dict, info: D.DistInfo, sync_bn: bool | None) -> dict:
    from ..data.coco import collate_train
    from ..losses import build_criterion
    from ..models import create_model

    from ..config import validate_test_cfg
    from ..evaluation import check_ground_truth
    from ..utils import remove_stale_temporaries

    tcfg = cfg["train"]
    out = Path(tcfg["out"])
    validate_test_cfg(cfg["test"])  # a bad decoding setting fails now, not at the first evaluation
    log = print if info.is_main else (lambda *a, **k: None)
    if sync_bn is None:
        sync_bn = bool(tcfg.get("sync_bn", True))

    # ---- data: order = f(seed, epoch), augmentation = f(seed, epoch, index)
    dataset = build_train_dataset(cfg)
    meta = dataset.meta
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=int(tcfg["seed"]), drop_last=True)
    if int(cfg["data"]["num_workers"]) > 0:
        single_thread_opencv()  # before the workers are forked (see utils.single_thread_worker)
    loader = DataLoader(dataset, batch_size=int(tcfg["batch_size"]), sampler=sampler,
                        num_workers=int(cfg["data"]["num_workers"]), drop_last=True,
                        worker_init_fn=single_thread_worker,
                        collate_fn=getattr(dataset, "collate_fn", collate_train),  # top-down: its own
                        pin_memory=info.device.type == "cuda")
    iters = len(loader) if tcfg["max_iters_per_epoch"] is None else \
        min(len(loader), int(tcfg["max_iters_per_epoch"]))
    if iters == 0:
        raise LogocapError(f"{len(dataset)} training images give no full batch of "
                           f"{tcfg['batch_size']} per process x {info.world_size} processes")

    # ---- model, loss, optimiser, schedule
    _seed_everything(int(tcfg["seed"]))
    model = create_model(cfg["model"]["name"], num_keypoints=meta.num_keypoints, **cfg["model"]["kwargs"])
    if cfg["model"]["pretrained"]:
        _load_pretrained(model, cfg["model"]["pretrained"], log)
    if info.distributed and sync_bn:
        model = D.convert_sync_batchnorm(model, info.device)
    model.to(info.device)
    precision = resolve_precision(tcfg["precision"], info.device, tcfg["channels_last"])
    precision.prepare_model(model)
    criterion = build_criterion(model, cfg["loss"], cfg["test"], meta=meta)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(tcfg["lr"]),
                                 weight_decay=float(tcfg["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, lr_milestones(tcfg),
                                                     gamma=float(tcfg["lr_gamma"]))
    use_amp = precision.uses_scaler  # fp16 (CUDA) only; bf16 needs no loss scaling
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # ---- resume
    start_epoch, global_step, best_ap = 0, 0, -math.inf
    if tcfg["resume"]:
        ckpt = load_checkpoint(out / "last.pth") if (out / "last.pth").is_file() else None
        if ckpt is None:
            raise LogocapError(f"nothing to resume: {out / 'last.pth'} does not exist")
        _check_resumable(ckpt, out / "last.pth")
        load_weights(model, ckpt["state_dict"], what=f"resume checkpoint {out / 'last.pth'}")
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and use_amp:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
        best_ap = float(ckpt.get("best_ap", -math.inf))
        set_rng_state(ckpt["rng"])
        log(f"resumed from {out / 'last.pth'} after epoch {start_epoch}")

    step = TrainStep(model, criterion, precision)
    ddp = nn.parallel.DistributedDataParallel(
        step, device_ids=[info.local_rank] if info.device.type == "cuda" else None) \
        if info.distributed else step

    runlog = None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_temporaries(out):  # left by a run killed while writing
            log(f"removed a stale temporary file of an interrupted write: {p}")
        from ..config import dump_config
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        runlog = _RunLog(out, start_epoch, ckpt.get("epoch_record") if tcfg["resume"] else None)
        log(f"training {cfg['model']['name']} on {len(dataset)} images, {info.world_size} "
            f"process(es) x batch {tcfg['batch_size']}, {iters} it/epoch, device {info.device}"
            f", precision {precision.describe()}; run folder {out}")

    # the validation annotations are checked now (every process), not after the first epoch
    val_dataset = build_val_dataset(cfg) if int(tcfg["eval_every"] or 0) > 0 else None
    if val_dataset is not None:
        check_ground_truth(val_dataset.coco, meta)
    epochs = int(tcfg["epochs"])
    history = []
    seen_images = set()  # image problems already reported
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        ddp.train()
        sums, t0 = {}, time.time()
        scheduled = [g["lr"] for g in optimizer.param_groups]  # this epoch's lr, before warm-up
        bar = _progress(info.is_main, iters, f"epoch {epoch + 1}/{epochs}")
        for it, batch in enumerate(loader):
            if it >= iters:
                break
            _report_images(batch, seen_images)
            batch = precision.cast_batch(_to_device(batch, info.device))
            balance_offset_weights(batch, info.world_size)
            warmup = int(tcfg.get("warmup_iters") or 0)  # train.warmup_iters
            if global_step <= warmup:  # (the last one restores the scheduled lr)
                for g, base in zip(optimizer.param_groups, scheduled):
                    g["lr"] = base * warmup_factor(global_step, warmup)
            losses = ddp(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            global_step += 1
            vals = {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1}
            if not math.isfinite(vals["loss"]):
                raise LogocapError(f"training loss is {vals['loss']} at epoch {epoch + 1}, iteration "
                                   f"{it + 1}: training diverged, {_kept(out)}; lower train.lr or "
                                   f"check the data")
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{vals['loss']:.4g}")
            if runlog is not None and global_step % int(tcfg["log_every"]) == 0:
                runlog.add({"type": "step", "epoch": epoch + 1, "iter": it, "step": global_step,
                            "lr": optimizer.param_groups[0]["lr"], **vals})
        if bar is not None:
            bar.close()
        for g, base in zip(optimizer.param_groups, scheduled):  # undo a warm-up in progress:
            g["lr"] = base  # MultiStepLR scales the lr it finds in the optimizer
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        # epoch means over all processes (what a single process with the whole batch would log)
        keys = sorted(sums)
        mean = D.all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64,
                                             device=info.device)) / (iters * info.world_size)
        rec = {"type": "epoch", "epoch": epoch + 1, "step": global_step, "lr": lr,
               "time": round(time.time() - t0, 3), **{k: float(v) for k, v in zip(keys, mean)}}
        rng = get_rng_state()  # the training stream continues from here, evaluation or not

        # ---- save (rank 0), then evaluate: a failing evaluation never costs the epoch's weights
        if info.is_main:
            why = _diverged(D.unwrap(ddp), batch["image"])
            if why:  # never overwrite a good checkpoint with a diverged one
                raise LogocapError(f"training diverged at epoch {epoch + 1}: {why}; {_kept(out)}; "
                                   f"lower train.lr or check the data")
            extra = {"global_step": global_step, "best_ap": best_ap, "rng": rng, "epoch_record": rec,
                     "scaler": scaler.state_dict() if use_amp else None}
            save_checkpoint(out / "last.pth", ddp, meta, cfg, optimizer, scheduler,
                            epoch=epoch + 1, extra=extra)
        every = int(tcfg["eval_every"] or 0)
        is_best = False
        if info.is_main and every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            if val_dataset is None:
                val_dataset = build_val_dataset(cfg)
            from .evaluate import evaluate_model
            metrics, _ = evaluate_model(D.unwrap(ddp), val_dataset, meta, cfg["test"],
                                        cfg["data"]["input_size"], device=info.device,
                                        out_dir=out / "eval" / f"epoch_{epoch + 1:03d}")
            ddp.train()
            set_rng_state(rng)
            rec.update({f"val_{k}": v for k, v in metrics.items()})
            if metrics["AP"] > best_ap:
                best_ap, is_best = metrics["AP"], True
        history.append(rec)
        if info.is_main:
            runlog.add(rec)
            if is_best:  # last.pth again, so that a resume knows the new best AP
                extra["best_ap"] = best_ap
                save_checkpoint(out / "last.pth", ddp, meta, cfg, optimizer, scheduler,
                                epoch=epoch + 1, extra=extra)
                save_checkpoint(out / "best.pth", ddp, meta, cfg, epoch=epoch + 1,
                                extra={"global_step": global_step, "best_ap": best_ap})
            log(f"epoch {epoch + 1}/{epochs}: loss {rec['loss']:.5g}"
                + (f", val AP {rec['val_AP']:.4f}" if "val_AP" in rec else ""))
        D.barrier()  # others wait while rank 0 evaluates and writes

    summary = {"out_dir": str(out), "epochs": epochs, "global_step": global_step,
               "history": history, "best_ap": None if best_ap == -math.inf else best_ap,
               "last_checkpoint": str(out / "last.pth"), "world_size": info.world_size,
               "is_main": info.is_main, "precision": precision.describe(),
               "final_loss": history[-1]["loss"] if history else None}
    if info.is_main:
        atomic_write_text(out / "summary.json", json.dumps({k: v for k, v in summary.items()
                                                           if k != "history"}, indent=1))
    return summary


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
