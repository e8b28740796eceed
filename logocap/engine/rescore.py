"""Training the pose rescoring net (``models/rescore.py``; DEKR ``tools/train_scorenet.py``).

1. Training set: a model's predictions on a training split (the Predictor with its test
   settings, rescoring off); each predicted pose becomes one sample: its features
   (``rescore_features`` on the original-pixel pose) and, as target, its OKS with the best-matching
   ground-truth person of the image (COCO's OKS: per-joint exp(-d^2 / (2 area (2 sigma)^2)) over the
   labelled joints, the annotation's area). Images without a non-crowd annotated person give no
   samples. The release takes the same quantity from a patched COCOeval pass (its records repeat
   per area range); the max over the image's people is what that pass computes for each pose.
2. Training: Adam (lr 1e-3), mini-batches of 1024, 20 epochs, MSE (the released settings). The last
   partial batch of an epoch is used too (the release drops it, so a set smaller than one batch
   would not train at all).
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from ..meta import KeypointMeta
from ..models.rescore import RescoreNet, num_features, rescore_features
from ..utils import LogocapError

__all__ = ["rescore_training_set", "train_rescorer", "fit_rescorer", "pose_oks"]


def pose_oks(poses: np.ndarray, gt: np.ndarray, areas: np.ndarray, sigmas) -> np.ndarray:
    """COCO OKS of predictions [N, K, >=2] vs ground truth [G, K, 3] (areas [G]) -> [N, G]."""
    var = (2 * np.asarray(sigmas, np.float64)) ** 2  # [K]
    d2 = ((poses[:, None, :, :2] - gt[None, :, :, :2]) ** 2).sum(-1)  # [N, G, K]
    e = d2 / var / (np.asarray(areas, np.float64)[None, :, None] + np.spacing(1)) / 2
    vis = gt[None, :, :, 2] > 0
    return (np.exp(-e) * vis).sum(-1) / np.maximum(vis.sum(-1), 1)


def rescore_training_set(predictor, dataset, verbose: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features [N, F], target OKS [N], images used) from ``predictor`` on ``dataset``
    (a CocoPoseDataset; images are read by path, unreadable ones skipped with a warning)."""
    from ..data.transforms import load_image

    meta: KeypointMeta = predictor.meta
    feats, targets, used = [], [], 0
    ids = list(dataset.image_ids)
    bar = None
    if verbose:
        from tqdm import tqdm
        bar = tqdm(total=len(ids), desc="rescore data", leave=False, dynamic_ncols=True)
    for image_id in ids:
        if bar is not None:
            bar.update(1)
        anns = [a for a in dataset.gt_annotations(image_id)
                if not a.get("iscrowd", 0) and int(a.get("num_keypoints", 1)) > 0]
        if not anns:
            continue
        try:
            img = load_image(dataset.image_path(image_id))
        except LogocapError as e:
            print(f"warning: skipped: {e}", file=sys.stderr)
            continue
        poses = predictor.predict(img)
        used += 1
        if len(poses) == 0:
            continue
        gt = np.asarray([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
        areas = np.asarray([a.get("area", 0.0) for a in anns], np.float64)
        oks = pose_oks(np.asarray(poses.keypoints, np.float64), gt, areas, meta.sigmas).max(1)
        feats.append(rescore_features(torch.as_tensor(np.asarray(poses.keypoints), dtype=torch.float32), meta))
        targets.append(torch.as_tensor(oks, dtype=torch.float32))
    if bar is not None:
        bar.close()
    if not feats:
        raise LogocapError(f"no predictions on annotated images in {len(ids)} images: nothing to "
                           "train the rescoring net on")
    return torch.cat(feats), torch.cat(targets), used


def train_rescorer(features: torch.Tensor, targets: torch.Tensor, epochs: int = 20,
                   batch_size: int = 1024, lr: float = 1e-3, hidden: int = 256, seed: int = 0,
                   log=print) -> tuple[RescoreNet, list[float]]:
    """Fit a :class:`RescoreNet` to (features [N, F], targets [N]) with MSE; returns the net (eval
    mode) and the mean training loss of every epoch."""
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise LogocapError(f"need epochs >= 1, batch size >= 1 and lr > 0; got {epochs}, "
                           f"{batch_size}, {lr}")
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    net = RescoreNet(features.shape[1], hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(features)
    losses = []
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(n, generator=g)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = torch.nn.functional.mse_loss(net(features[idx]), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        log(f"epoch {epoch + 1}/{epochs}: MSE {losses[-1]:.5f}")
    return net.eval(), losses


def fit_rescorer(weights, ann, images, out, model: str | None = None, device: str = "cpu",
                 size: int | None = None, flip: bool = True, max_images: int | None = None,
                 epochs: int = 20, batch_size: int = 1024, lr: float = 1e-3, seed: int = 0,
                 verbose: bool = True) -> dict:
    """Predict the images of ``ann`` / ``images`` with checkpoint ``weights`` (rescoring off),
    train the rescoring net on the poses and write it to ``out`` (plus ``out``.json, the summary
    that is returned). ``size`` None = the checkpoint's input size."""
    import json

    from ..data.coco import CocoPoseDataset
    from ..models.rescore import save_rescorer
    from ..predict import Predictor
    from ..utils import atomic_write_text

    if size is not None and (size < 64 or size % 64):
        raise LogocapError(f"--size must be a multiple of 64 (>= 64), got {size}")
    overrides = {"rescore": None}  # the net learns to correct the decoder's own scores
    if not flip:
        overrides["flip"] = False
    if size:
        overrides["input_size"] = size
    predictor = Predictor.from_checkpoint(weights, model, device, **overrides)
    dataset = CocoPoseDataset(str(ann), str(images), meta=predictor.meta, mode="val",
                              input_size=predictor.input_size, max_images=max_images)
    log = print if verbose else (lambda *a, **k: None)
    log(f"predicting {len(dataset)} images of {ann} with {weights} "
        f"(input {predictor.input_size}, flip {'on' if predictor.cfg['flip'] else 'off'})")
    feats, targets, used = rescore_training_set(predictor, dataset, verbose)
    log(f"{len(feats)} poses from {used} annotated images; target OKS mean {float(targets.mean()):.3f}")
    net, losses = train_rescorer(feats, targets, epochs, batch_size, lr, seed=seed, log=log)
    info = {"weights": str(weights), "annotations": str(ann), "samples": len(feats),
            "images": used, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "target_oks_mean": float(targets.mean()), "losses": losses}
    save_rescorer(out, net, predictor.meta, extra={"training": info})
    atomic_write_text(str(out) + ".json", json.dumps(info, indent=1))
    log(f"rescoring net for '{predictor.meta.name}' ({num_features(predictor.meta)} features) "
        f"written to {out}; use it with --rescore {out} or test.rescore={out}")
    return info


def run_rescore_train(args) -> int:
    """``logocap rescore-train --weights W --data D --out F``: build the set, train, save."""
    from ..data.paths import dataset_paths

    ann, images = dataset_paths(args.data, args.split, args.ann, args.images)
    fit_rescorer(args.weights, ann, images, args.out, model=args.model, device=args.device,
                 size=args.size, flip=not args.no_flip, max_images=args.max_images,
                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    return 0
