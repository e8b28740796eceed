"""Training targets (ground truth -> maps) and their decoder, as the official generators
(notes 4.2; the same as DEKR's, with one heatmap-weight channel and segmentation areas).

All coordinates here are OUTPUT pixels (stride 4: input pixel 4 i <-> output index i) except
``areas`` and ``min_center_area``, which are input px^2 (the paper's 32^2 threshold and the
1/sqrt(area) weight live in the input frame).

Maps, for K keypoints and output size (w, h):
- ``heatmaps`` [K+1, h, w]: a peak-1 Gaussian per labelled joint inside the map (sigma), the
  person centre as the last channel (center_sigma), merged by max. Each Gaussian is written
  over the window floor(x - 3 sigma - 1) .. ceil(x + 3 sigma + 2) (end exclusive).
- ``heatmap_weights`` [1, h, w]: 1 inside any Gaussian window, ``bg_weight`` elsewhere, times the
  ignore mask (0 = crowd / unlabelled people / outside the image). With
  ``per_channel_weights=True`` (DEKR, notes 10.2): [K+1, h, w], channel c is 1 inside the windows
  of channel c's own Gaussians only.
- ``offsets`` [2K, h, w]: channel 2j = x, 2j+1 = y, value = pixel - joint, on the 8x8 square
  x, y in [floor(ct) - r, floor(ct) + r) around each centre, for labelled joints inside the map.
  Where squares overlap, the smaller person (by area) keeps the pixel, per joint channel.
- ``offset_weights`` [2K, h, w]: 1 / sqrt(area) where an offset is written, else 0. The area of
  the weights and of the overlap rule is ``offset_areas`` when given (DEKR's keypoint-box quirk,
  :func:`keypoint_box_area`), else ``areas``; ``areas`` alone decides who gets a centre.
"""
from __future__ import annotations

import numpy as np

__all__ = ["encode_targets", "person_centers", "decode_targets", "keypoint_box_area",
           "box_diagonal_area"]


def person_centers(keypoints: np.ndarray, bboxes: np.ndarray | None = None) -> np.ndarray:
    """Centre of each person [M, 3] (x, y, valid): mean of the labelled (v > 0) joints; the box
    centre (bboxes [M, 4] x0, y0, x1, y1) only when no joint is labelled (notes 4.2)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = kp[..., 2] > 0
    n = vis.sum(1)
    xy = (kp[..., :2] * vis[..., None]).sum(1) / np.maximum(n, 1)[:, None]
    valid = n > 0
    if bboxes is not None and len(kp):
        b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        box_c = (b[:, :2] + b[:, 2:]) / 2.0
        xy = np.where(valid[:, None], xy, box_c)
        valid = valid | (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return np.concatenate([xy, valid[:, None].astype(np.float64)], axis=1)


def keypoint_box_area(keypoints: np.ndarray) -> np.ndarray:
    """DEKR's offset-weight area (``cal_area_2_torch``, notes 10.2), a released quirk.

    keypoints [M, K, 3] as annotated (original px). The released code measures
    (max x - min x)^2 + (max y - min y)^2 over all K rows, labelled or not, plus the person's
    centre row, which is still (0, 0) at that point. So unlabelled (0, 0) joints and the zero
    row pull the minimum to 0: in practice max_x^2 + max_y^2, a squared distance from the image
    corner rather than a person size. Returns [M] (px^2; scale it with the augmentation).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] < 2:
        raise ValueError(f"keypoints must be [M, K, 3], got {kp.shape}")
    rows = np.concatenate([kp[..., :2], np.zeros((kp.shape[0], 1, 2))], axis=1)
    span = rows.max(1) - rows.min(1)  # [M, 2]
    return (span ** 2).sum(1)


def box_diagonal_area(boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Z^2 = H^2 + W^2 of each instance box, the HGR offset normaliser (paper Eqn. 5: the offset
    weight 1 / Z = 1 / sqrt(this "area")).

    boxes [M, 4] (x0, y0, x1, y1), keypoints [M, K, 3], both original px. A person without a box
    (zero width or height) uses the box of its labelled joints; the result is at least 1 px^2.
    Returns [M] px^2 (scale it with the augmentation, like the areas).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    kp = np.asarray(keypoints, dtype=np.float64)
    span = b[:, 2:] - b[:, :2]
    if len(kp):
        vis = kp[..., 2:3] > 0
        lo = np.where(vis, kp[..., :2], np.inf).min(1)
        hi = np.where(vis, kp[..., :2], -np.inf).max(1)
        kspan = np.where(vis.any(1), hi - lo, 0.0)
        span = np.where((span > 0).all(1, keepdims=True), span, kspan)
    return np.maximum((span ** 2).sum(1), 1.0)


def _draw_gaussians(points: np.ndarray, sigma: float, w: int, h: int):
    """Max-merged peak-1 Gaussians of ``points`` [P, 2] and the union of their windows.

    Separable: each Gaussian is gy[:, None] * gx[None, :] with gx, gy zeroed outside the window,
    so all points are drawn at once with broadcasting; the window union is a matrix product.
    """
    hm = np.zeros((h, w), np.float32)
    win = np.zeros((h, w), bool)
    if len(points) == 0:
        return hm, win
    x, y = points[:, 0:1], points[:, 1:2]
    xs, ys = np.arange(w)[None, :], np.arange(h)[None, :]
    wx = (xs >= np.floor(x - 3 * sigma - 1)) & (xs < np.ceil(x + 3 * sigma + 2))
    wy = (ys >= np.floor(y - 3 * sigma - 1)) & (ys < np.ceil(y + 3 * sigma + 2))
    gx = (np.exp(-(xs - x) ** 2 / (2 * sigma ** 2)) * wx).astype(np.float32)
    gy = (np.exp(-(ys - y) ** 2 / (2 * sigma ** 2)) * wy).astype(np.float32)
    hm = np.max(gy[:, :, None] * gx[:, None, :], axis=0)
    win = (wy.T.astype(np.float32) @ wx.astype(np.float32)) > 0
    return hm, win


def encode_targets(keypoints: np.ndarray, areas: np.ndarray, ignore_mask: np.ndarray | None,
                   out_size: tuple[int, int], num_keypoints: int, sigma: float = 2.0,
                   center_sigma: float = 4.0, bg_weight: float = 0.1, radius: int = 4,
                   min_center_area: float = 32.0 ** 2, bboxes: np.ndarray | None = None,
                   per_channel_weights: bool = False,
                   offset_areas: np.ndarray | None = None) -> dict:
    """Ground truth -> target maps (see the module docstring).

    keypoints [M, K, 3] output px (v = 0: unlabelled); areas [M] input px^2; ignore_mask [h, w]
    (1 keep, 0 ignore; None = all 1); out_size (w, h); bboxes [M, 4] (x0, y0, x1, y1) output px,
    used for the centre of people with no labelled joint. Persons with area < min_center_area get
    no centre (so no offsets) but keep their joint Gaussians. Returns float32 numpy arrays
    ``heatmaps`` [K+1, h, w], ``heatmap_weights`` [1, h, w] ([K+1, h, w] with
    ``per_channel_weights``), ``offsets`` and ``offset_weights`` [2K, h, w]. ``offset_areas`` [M]
    (input px^2) replaces ``areas`` in the offset weights and the overlap rule.
    """
    w, h = int(out_size[0]), int(out_size[1])
    K = int(num_keypoints)
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, K, 3)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    if len(areas) != len(kp):
        raise ValueError(f"{len(kp)} people but {len(areas)} areas")
    off_areas = areas if offset_areas is None else \
        np.asarray(offset_areas, dtype=np.float64).reshape(-1)
    if len(off_areas) != len(kp):
        raise ValueError(f"{len(kp)} people but {len(off_areas)} offset areas")

    def inside(xy):  # the official test: 0 <= x < w and 0 <= y < h
        return (xy[..., 0] >= 0) & (xy[..., 1] >= 0) & (xy[..., 0] < w) & (xy[..., 1] < h)

    centers = person_centers(kp, bboxes)
    has_center = (centers[:, 2] > 0) & (areas >= min_center_area) & inside(centers)
    joint_ok = (kp[..., 2] > 0) & inside(kp)  # [M, K]

    heatmaps = np.zeros((K + 1, h, w), np.float32)
    windows = np.zeros((K + 1, h, w), bool)  # each channel's own Gaussian windows
    for j in range(K):
        heatmaps[j], windows[j] = _draw_gaussians(kp[joint_ok[:, j], j, :2], sigma, w, h)
    heatmaps[K], windows[K] = _draw_gaussians(centers[has_center, :2], center_sigma, w, h)
    window = windows if per_channel_weights else windows.any(0, keepdims=True)

    weights = np.where(window, 1.0, bg_weight).astype(np.float32)
    if ignore_mask is not None:
        weights *= np.asarray(ignore_mask, dtype=np.float32).reshape(1, h, w)

    # Offsets: larger people first, so the smaller person overwrites (keeps) shared pixels.
    offsets = np.zeros((2 * K, h, w), np.float32)
    offset_weights = np.zeros((2 * K, h, w), np.float32)
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    for m in sorted(np.flatnonzero(has_center), key=lambda i: -off_areas[i]):
        cx, cy = int(np.floor(centers[m, 0])), int(np.floor(centers[m, 1]))
        x0, x1 = max(cx - radius, 0), min(cx + radius, w)
        y0, y1 = max(cy - radius, 0), min(cy + radius, h)
        js = np.flatnonzero(joint_ok[m])
        if len(js) == 0 or x1 <= x0 or y1 <= y0:
            continue
        jx, jy = kp[m, js, 0][:, None, None], kp[m, js, 1][:, None, None]
        offsets[2 * js, y0:y1, x0:x1] = xs[None, None, x0:x1] - jx
        offsets[2 * js + 1, y0:y1, x0:x1] = ys[None, y0:y1, None] - jy
        wgt = 1.0 / np.sqrt(max(off_areas[m], 1e-6))
        offset_weights[2 * js, y0:y1, x0:x1] = wgt
        offset_weights[2 * js + 1, y0:y1, x0:x1] = wgt

    return {"heatmaps": heatmaps, "heatmap_weights": weights, "offsets": offsets,
            "offset_weights": offset_weights}


def decode_targets(heatmaps: np.ndarray, offsets: np.ndarray, offset_weights: np.ndarray,
                   threshold: float = 0.5) -> list[dict]:
    """Invert :func:`encode_targets` (for tests and data inspection, not for network outputs).

    Centres = local maxima (3x3) of the centre channel above ``threshold``; at each centre pixel
    p, joint j = p - offset_j(p), labelled where the offset weight is > 0. Returns one dict per
    person: ``center`` (x, y) output px, ``score``, ``keypoints`` [K, 3] (x, y, labelled 0/1).
    """
    ct = np.asarray(heatmaps, dtype=np.float32)[-1]
    h, w = ct.shape
    pad = np.pad(ct, 1, constant_values=-np.inf)
    neigh = np.stack([pad[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])
    peaks = (ct >= neigh.max(0)) & (ct > threshold)
    ys, xs = np.nonzero(peaks)
    K = offsets.shape[0] // 2
    off = np.asarray(offsets).reshape(K, 2, h, w)[:, :, ys, xs]  # [K, 2, N]
    wgt = np.asarray(offset_weights).reshape(K, 2, h, w)[:, 0, ys, xs] > 0  # [K, N]
    people = []
    for n in np.argsort(-ct[ys, xs]):
        kx = (xs[n] - off[:, 0, n]) * wgt[:, n]
        ky = (ys[n] - off[:, 1, n]) * wgt[:, n]
        people.append({"center": np.array([xs[n], ys[n]], np.float32), "score": float(ct[ys[n], xs[n]]),
                       "keypoints": np.stack([kx, ky, wgt[:, n]], 1).astype(np.float32)})
    return people
