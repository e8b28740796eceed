"""Official keypoint evaluation: results json -> pycocotools / xtcocotools COCOeval -> the standard numbers.

* COCO-style sets (``meta.dataset_type == "coco"``: COCO, OCHuman, synthetic, custom) use
  pycocotools ``COCOeval(gt, dt, "keypoints")`` with ``params.kpt_oks_sigmas = meta.sigmas`` and
  report the ten standard numbers ``AP AP50 AP75 APM APL AR AR50 AR75 ARM ARL``.
* CrowdPose (``meta.dataset_type == "crowdpose"``) uses xtcocotools
  ``COCOeval(gt, dt, "keypoints_crowd", sigmas, use_area=False)`` (the CrowdPose protocol) and
  reports ``AP AP50 AP75 AR AR50 AR75 AP_easy AP_medium AP_hard``.

Conventions (see docs/EVALUATION.md):
* ``params.imgIds`` is the set of evaluated images (``img_ids``; by default every image of the
  annotation file), so an image the model saw but found nobody in still counts its people as misses.
* Empty results: ``COCO.loadRes`` cannot load an empty list, and with no prediction every AP/AR is
  0 by definition, so we return all zeros explicitly (no COCOeval call).
* Bad input (missing / malformed json, unknown image ids, wrong keypoint count, NaN) raises
  :class:`LogocapError` before pycocotools sees it; errors inside COCOeval are never swallowed.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from .meta import KeypointMeta, get_meta, meta_from_coco_category
from .utils import LogocapError, atomic_write_text, read_json

__all__ = [
    "COCO_METRIC_NAMES", "CROWDPOSE_METRIC_NAMES", "metric_names", "load_coco_gt", "load_results",
    "poses_to_results", "write_results_json", "coco_evaluate", "evaluate_predictions", "format_table",
    "check_ground_truth",
    "ground_truth_poses", "keypoint_error", "format_keypoint_error",
]

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")
# Order of xtcocotools' stats for "keypoints_crowd".
CROWDPOSE_METRIC_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")

# CrowdPose difficulty split on the image's crowdIndex (the values xtcocotools' summarize uses).
_CROWD_EASY_BELOW, _CROWD_HARD_FROM = 0.2, 0.8


def metric_names(meta: KeypointMeta) -> tuple[str, ...]:
    return CROWDPOSE_METRIC_NAMES if meta.dataset_type == "crowdpose" else COCO_METRIC_NAMES


# ---------------------------------------------------------------------------------------- loading
def _coco_from_dict(data: dict, cls):
    """Build a (py|xt)cocotools COCO object from an in-memory dict without its chatter."""
    coco = cls()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_gt(ann):
    """A pycocotools COCO object from an annotation json path (or pass a COCO object through)."""
    if not isinstance(ann, (str, Path)):
        if not hasattr(ann, "dataset") or not hasattr(ann, "getImgIds"):
            raise LogocapError(f"ground truth must be a COCO object or an annotation json path, "
                               f"got {type(ann).__name__}")
        return ann
    from pycocotools.coco import COCO

    data = read_json(ann, "annotation")
    if not isinstance(data, dict):
        raise LogocapError(f"annotation file {ann} must hold a JSON object, got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise LogocapError(f"annotation file {ann} lacks the list(s): {', '.join(missing)}")
    try:
        return _coco_from_dict(data, COCO)
    except (KeyError, TypeError) as e:
        raise LogocapError(f"annotation file {ann} is malformed (an entry lacks or mistypes {e})") from None


def load_results(results) -> list:
    """The results list from a list or a results json path (not yet validated)."""
    if isinstance(results, (str, Path)):
        data = read_json(results, "results")
        where = f"results file {results}"
    else:
        data, where = results, "results"
    if not isinstance(data, list):
        raise LogocapError(f"{where} must be a JSON list of person records, got {type(data).__name__}")
    return data


def _resolve_meta(coco_gt, meta) -> KeypointMeta:
    if meta is not None:
        try:
            return get_meta(meta)
        except ValueError as e:
            raise LogocapError(str(e)) from None
    cats = [c for c in coco_gt.dataset.get("categories", []) if c.get("keypoints")]
    if len(cats) != 1:
        raise LogocapError(f"the annotation file has {len(cats)} categories with keypoints; "
                           "exactly one is needed to infer the keypoint set (or pass meta)")
    try:
        return meta_from_coco_category(cats[0])
    except ValueError as e:
        raise LogocapError(f"annotation file: {e}") from None


def _check_gt(coco_gt, meta: KeypointMeta) -> None:
    """Fail on one line for what would otherwise be a KeyError deep inside COCOeval."""
    k3 = 3 * meta.num_keypoints
    need = ("image_id", "category_id", "iscrowd", "keypoints", "bbox")
    need += ("num_keypoints",) if meta.dataset_type == "crowdpose" else ("area",)
    for ann in coco_gt.dataset.get("annotations", []):
        lacks = [k for k in need if k not in ann]
        if lacks:
            raise LogocapError(f"annotation id {ann.get('id', '?')} lacks {', '.join(lacks)}")
        if len(ann["keypoints"]) != k3:
            raise LogocapError(f"annotation id {ann.get('id', '?')} has {len(ann['keypoints'])} keypoint "
                               f"values; the '{meta.name}' set needs {k3} ({meta.num_keypoints} x 3)")
    if meta.dataset_type == "crowdpose":
        for img in coco_gt.dataset.get("images", []):
            if "crowdIndex" not in img:
                raise LogocapError(f"CrowdPose evaluation needs 'crowdIndex' on every image; "
                                   f"image {img.get('id', '?')} has none")


def check_ground_truth(coco_gt, meta=None):
    """The checks :func:`coco_evaluate` makes on the ground truth, without any results ->
    ``(COCO object, meta)``. The training loop runs them before its first step, so a bad
    validation annotation is found at once, not after an epoch."""
    coco_gt = load_coco_gt(coco_gt)
    meta = _resolve_meta(coco_gt, meta)
    if meta.dataset_type == "crowdpose":
        _require_xtcocotools()
    _check_gt(coco_gt, meta)
    return coco_gt, meta


def _is_in(value, ids: set) -> bool:
    try:
        return value in ids
    except TypeError:  # unhashable (a list, a dict): certainly not a COCO id
        return False


def _clean_results(results: list, coco_gt, meta: KeypointMeta) -> list[dict]:
    """Validated copies with only the four fields COCOeval needs (loadRes mutates its input)."""
    k3 = 3 * meta.num_keypoints
    img_ids = set(coco_gt.getImgIds())
    cat_ids = {c["id"] for c in coco_gt.dataset.get("categories", []) if c.get("keypoints")}
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise LogocapError(f"result {i} is a {type(r).__name__}, not a person record")
        lacks = [k for k in ("image_id", "category_id", "keypoints", "score") if k not in r]
        if lacks:
            raise LogocapError(f"result {i} lacks {', '.join(lacks)}")
        kp = r["keypoints"]
        if not isinstance(kp, (list, tuple)) or len(kp) != k3:
            n = len(kp) if isinstance(kp, (list, tuple)) else type(kp).__name__
            raise LogocapError(f"result {i} has {n} keypoint values; the '{meta.name}' set needs "
                               f"{k3} ({meta.num_keypoints} x 3)")
        if not _is_in(r["image_id"], img_ids):
            raise LogocapError(f"result {i} is for image_id {r['image_id']!r}, "
                               "which is not in the annotation file")
        if not _is_in(r["category_id"], cat_ids):
            raise LogocapError(f"result {i} has category_id {r['category_id']!r}; the annotation "
                               f"file's keypoint categories are {sorted(cat_ids)}")
    # numbers checked in one numpy pass (val2017 results hold ~100k people)
    try:
        kps = np.array([r["keypoints"] for r in results], dtype=np.float64).reshape(len(results), k3)
        scores = np.array([r["score"] for r in results], dtype=np.float64).reshape(len(results))
    except (TypeError, ValueError):
        raise LogocapError("results hold a non-numeric keypoint value or score") from None
    bad = ~(np.isfinite(kps).all(1) & np.isfinite(scores))
    if bad.any():
        raise LogocapError(f"result {int(np.argmax(bad))} has a NaN or infinite keypoint value or score")
    return [{"image_id": r["image_id"], "category_id": r["category_id"], "keypoints": kp, "score": sc}
            for r, kp, sc in zip(results, kps.tolist(), scores.tolist())]


# ---------------------------------------------------------------------------------------- writing
def poses_to_results(poses_by_image: dict) -> list[dict]:
    """COCO results records for ``{image_id: Poses}`` (K*3 floats in original pixels, score)."""
    out = []
    for image_id, poses in poses_by_image.items():
        out.extend(poses.to_coco(image_id=image_id))
    return out


def write_results_json(results: list[dict], path: str | Path) -> None:
    """The whole results list in one atomic write (never half a file)."""
    atomic_write_text(path, json.dumps(results))


def format_table(metrics: dict) -> str:
    names = list(metrics)
    width = max(6, *(len(n) for n in names))
    head = " | ".join(f"{n:>{width}}" for n in names)
    row = " | ".join(f"{metrics[n]:>{width}.3f}" for n in names)
    return f"{head}\n{'-' * len(head)}\n{row}"


# ---------------------------------------------------------------------------------------- evaluation
def _crowd_type_results(E, coco_gt, img_ids, first=_CROWD_EASY_BELOW, second=_CROWD_HARD_FROM):
    """AP on the easy / medium / hard images (split on crowdIndex), as xtcocotools computes it.

    xtcocotools' own ``get_type_result`` re-reads the annotation file from disk and splits all of
    its images; this does the same average over the evaluated images of the in-memory object.
    """
    splits = ([], [], [])
    for i in img_ids:
        ci = coco_gt.imgs[i]["crowdIndex"]
        splits[0 if ci < first else 1 if ci < second else 2].append(i)
    res = []
    for ids in splits:
        E.params.imgIds = ids
        E.evaluate()
        E.accumulate()
        # precision [T, R, K, A, M]; area index 0 = "all". -1 when a split has no ground truth.
        res.append(round(float(np.mean(E.eval["precision"][:, :, :, 0, :])), 4))
    return res


def _run_cocoeval(dets: list[dict], coco_gt, meta: KeypointMeta, img_ids: list) -> np.ndarray:
    sigmas = np.asarray(meta.sigmas, dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints; we print our own table
        if meta.dataset_type == "crowdpose":
            from xtcocotools.coco import COCO as XCOCO
            from xtcocotools.cocoeval import COCOeval as XCOCOeval

            gt = _coco_from_dict(coco_gt.dataset, XCOCO)
            dt = gt.loadRes(dets)
            E = XCOCOeval(gt, dt, "keypoints_crowd", sigmas, use_area=False)
            E.params.imgIds = list(img_ids)
            E.get_type_result = lambda first, second: _crowd_type_results(E, gt, img_ids, first, second)
        else:
            from pycocotools.cocoeval import COCOeval

            dt = coco_gt.loadRes(dets)
            E = COCOeval(coco_gt, dt, "keypoints")
            E.params.kpt_oks_sigmas = sigmas
            E.params.imgIds = list(img_ids)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return np.asarray(E.stats, dtype=np.float64)


def _require_xtcocotools() -> None:
    try:
        import xtcocotools.cocoeval  # noqa: F401
    except ImportError as e:
        raise LogocapError("CrowdPose evaluation needs xtcocotools: pip install 'logocap[crowdpose]' "
                           f"(with numpy 2, build it from source: pip install cython && pip install "
                           f"--no-build-isolation --no-binary xtcocotools xtcocotools) [{e}]") from None


def coco_evaluate(results, coco_gt, meta=None, img_ids: Iterable[int] | None = None,
                  out_json: str | Path | None = None, verbose: bool = True) -> dict:
    """Evaluate keypoint results with the official COCO / CrowdPose protocol.

    Args:
        results: list of COCO results records, or a results json path.
        coco_gt: pycocotools COCO object or annotation json path.
        meta: KeypointMeta or name; default: from the annotation file's keypoint category.
        img_ids: the evaluated images (default: every image of the annotation file).
        out_json: where to write the metrics (atomic); None = do not write.
        verbose: print the metrics table.
    Returns:
        ``{name: float}`` in the order of :func:`metric_names` (all 0.0 for empty results; -1 is
        pycocotools' value when no evaluated image has labelled people).
    """
    coco_gt, meta, dets, img_ids = _prepare(results, coco_gt, meta, img_ids)
    names = metric_names(meta)
    if not dets:
        # loadRes cannot take an empty list; no prediction means AP = AR = 0 by definition.
        metrics = {n: 0.0 for n in names}
    else:
        stats = _run_cocoeval(dets, coco_gt, meta, img_ids)
        metrics = {n: float(v) for n, v in zip(names, stats)}
    if verbose:
        print(f"{meta.name} keypoints: {len(dets)} results on {len(img_ids)} images"
              + (" (no results: all metrics are 0)" if not dets else ""))
        print(format_table(metrics))
    if out_json is not None:
        atomic_write_text(out_json, json.dumps(metrics, indent=1))
    return metrics


def _prepare(results, coco_gt, meta, img_ids):
    """Checked ground truth and meta, cleaned results, and the sorted evaluated image ids (every
    one of them must be in the annotation file)."""
    coco_gt, meta = check_ground_truth(coco_gt, meta)
    dets = _clean_results(load_results(results), coco_gt, meta)
    known = set(coco_gt.getImgIds())
    img_ids = sorted(known) if img_ids is None else sorted(set(img_ids))
    unknown = [i for i in img_ids if i not in known]
    if unknown:
        raise LogocapError(f"{len(unknown)} evaluated image id(s) are not in the annotation file "
                           f"(first: {unknown[0]!r})")
    return coco_gt, meta, dets, img_ids


KPT_ERROR_OKS = 0.5  # Kpt.Error matches at COCOeval's loosest OKS threshold


def keypoint_error(results, coco_gt, meta=None, img_ids: Iterable[int] | None = None,
                   oks_threshold: float = KPT_ERROR_OKS) -> dict:
    """Kpt.Error (SAR notes §10): mean Euclidean distance in original-image pixels between the
    predicted and the ground-truth joints of matched people, over the labelled (v > 0) joints.

    Matching is COCOeval's own (``evaluateImg`` of pycocotools / xtcocotools, run with one OKS
    threshold ``oks_threshold`` = 0.5, area range "all", the 20 best-scored predictions per image):
    predictions in score order each take the still-unmatched ground-truth person of highest OKS,
    if that OKS is >= the threshold; people without keypoints and crowd regions are ignored.
    Each matched ground-truth person contributes its labelled joints; unmatched people and
    predictions contribute nothing (AP / AR measure those).

    Returns ``{"mean_px", "per_joint_px" {name: px}, "joints", "matched_people", "gt_people",
    "oks_threshold"}``; a mean over no joint is None.
    """
    coco_gt, meta, dets, img_ids = _prepare(results, coco_gt, meta, img_ids)
    k = meta.num_keypoints
    pairs = []  # (gt keypoints [K, 3], predicted keypoints [K, 3])
    if dets:
        sigmas = np.asarray(meta.sigmas, dtype=np.float64)
        with contextlib.redirect_stdout(io.StringIO()):
            if meta.dataset_type == "crowdpose":
                from xtcocotools.coco import COCO as XCOCO
                from xtcocotools.cocoeval import COCOeval as XCOCOeval

                gt = _coco_from_dict(coco_gt.dataset, XCOCO)
                E = XCOCOeval(gt, gt.loadRes(dets), "keypoints_crowd", sigmas, use_area=False)
            else:
                from pycocotools.cocoeval import COCOeval

                E = COCOeval(coco_gt, coco_gt.loadRes(dets), "keypoints")
                E.params.kpt_oks_sigmas = sigmas
            E.params.imgIds = list(img_ids)
            E.params.iouThrs = np.array([float(oks_threshold)])
            E.params.areaRng, E.params.areaRngLbl = [[0, 1e10]], ["all"]
            E.params.maxDets = [20]
            E.evaluate()
        for ev in E.evalImgs:
            if ev is None:
                continue
            for g, gid in enumerate(ev["gtIds"]):
                did = int(ev["gtMatches"][0, g])
                if did > 0 and not ev["gtIgnore"][g]:
                    pairs.append((E.cocoGt.anns[gid]["keypoints"], E.cocoDt.anns[did]["keypoints"]))
    evaluated = set(img_ids)
    gt_people = sum(1 for a in coco_gt.dataset["annotations"]
                    if a["image_id"] in evaluated and not a.get("iscrowd", 0)
                    and any(v > 0 for v in a["keypoints"][2::3]))
    names = list(meta.keypoint_names)
    if pairs:
        g = np.asarray([p[0] for p in pairs], np.float64).reshape(-1, k, 3)
        d = np.asarray([p[1] for p in pairs], np.float64).reshape(-1, k, 3)
        vis = g[..., 2] > 0
        dist = np.linalg.norm(d[..., :2] - g[..., :2], axis=-1)
        n_j = vis.sum(0)
        per = np.where(n_j > 0, (dist * vis).sum(0) / np.maximum(n_j, 1), np.nan)
        mean = float((dist * vis).sum() / vis.sum()) if vis.any() else None
    else:
        per, n_j, mean = np.full(k, np.nan), np.zeros(k, int), None
    return {"mean_px": mean,
            "per_joint_px": {n: (None if not np.isfinite(v) else float(v)) for n, v in zip(names, per)},
            "joints": int(np.sum(n_j)), "matched_people": len(pairs), "gt_people": int(gt_people),
            "oks_threshold": float(oks_threshold)}


def format_keypoint_error(err: dict) -> str:
    """One line for the console: the mean, the count, and the worst joint."""
    if err["mean_px"] is None:
        return (f"Kpt.Error: undefined (no labelled joint of a matched person; {err['matched_people']} "
                f"of {err['gt_people']} people matched at OKS >= {err['oks_threshold']:g})")
    per = {n: v for n, v in err["per_joint_px"].items() if v is not None}
    worst = max(per, key=per.get)
    return (f"Kpt.Error: {err['mean_px']:.2f} px over {err['joints']} joints of "
            f"{err['matched_people']}/{err['gt_people']} matched people (OKS >= "
            f"{err['oks_threshold']:g}); worst joint {worst} {per[worst]:.2f} px")


def evaluate_predictions(poses_by_image: dict, coco_gt, meta=None, out_dir: str | Path | None = None,
                         verbose: bool = True) -> dict:
    """Evaluate ``{image_id: Poses}`` on exactly those images.

    With ``out_dir``, the results json is kept as ``results.json`` and the metrics go to
    ``metrics.json`` (both atomic).
    """
    results = poses_to_results(poses_by_image)
    out_json = None
    if out_dir is not None:
        write_results_json(results, Path(out_dir) / "results.json")
        out_json = Path(out_dir) / "metrics.json"
    return coco_evaluate(results, coco_gt, meta=meta, img_ids=list(poses_by_image),
                         out_json=out_json, verbose=verbose)


def ground_truth_poses(dataset, jitter: float = 0.0, seed: int = 0) -> dict:
    """The ground truth of a val ``CocoPoseDataset`` pushed through the model's coordinate path.

    Each labelled joint goes original px -> network input (the dataset's test-time affine) ->
    back with the one inverse, optionally plus Gaussian ``jitter`` (original px; the same draw
    scaled, so more jitter is strictly worse). Unlabelled joints sit at the box centre, never
    (0, 0). Evaluated with :func:`evaluate_predictions` this must give AP 1 at zero jitter: the
    check that the harness (resize, inverse, json, COCOeval) is sound.
    """
    from .data.transforms import apply_affine, invert_affine, test_transform
    from .structures import Poses

    rng = np.random.default_rng(seed)
    out = {}
    for image_id in dataset.image_ids:
        anns = [a for a in dataset.gt_annotations(image_id) if a.get("num_keypoints", 0) > 0]
        info = dataset.coco.imgs[image_id]
        k = dataset.meta.num_keypoints
        if not anns:
            out[image_id] = Poses(np.zeros((0, k, 3)), np.zeros(0), dataset.meta, image_id=image_id)
            continue
        kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), k, 3)
        box_c = np.array([[a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2] for a in anns])
        xy = np.where(kp[..., 2:] > 0, kp[..., :2], box_c[:, None, :])
        M, _ = test_transform(info["height"], info["width"], dataset.input_size)
        back = apply_affine(apply_affine(xy, M), invert_affine(M))
        back = back + jitter * rng.standard_normal(back.shape)
        score = (kp[..., 2:] > 0).astype(np.float64)
        out[image_id] = Poses(np.concatenate([back, score], -1), np.ones(len(anns)), dataset.meta,
                              image_id=image_id, image_size=(info["height"], info["width"]))
    return out
