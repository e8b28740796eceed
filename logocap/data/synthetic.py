"""A procedural multi-person benchmark in COCO keypoint format.

People are posed in a small 3-D body frame (x = the person's left, y = up, z = forward), turned
by a body yaw, projected orthographically and rendered with cv2 as capsules (limbs), a convex
torso and a head ellipse. Every pixel of the rendered scene carries a label
``1 + 16 * person + part``; visibility flags, masks, areas and boxes all come from that label map:

- joints outside the image, and face points turned away from the camera (back of the head:
  nose and eyes; profile: the far eye and ear) are unlabelled: v=0 with x=y=0, as in COCO;
- a labelled joint whose pixel shows one of the parts it belongs to is visible (v=2); if another
  person or another part of the same person (e.g. the torso in front of the far shoulder) covers
  it, it is occluded (v=1);
- ``segmentation`` (RLE), ``area`` and ``bbox`` are those of the person's visible pixels.

People whose visible area is below ``MIN_AREA`` pixels are kept as annotations with all joints
unlabelled (num_keypoints 0), i.e. ignore regions for training; fully hidden people are dropped.

Left/right cue a network can learn: the person's left limbs carry stripes across the limb, the
right ones are plain; eyes and nose are dark marks that show where the face points.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..meta import COCO
from ..utils import LogocapError, atomic_write_text

__all__ = ["PRESETS", "MIN_AREA", "Person", "sample_person", "render_people", "render_image",
           "box_iou_pairs", "generate_synthetic", "image_rng", "split_stats"]

META = COCO
K = META.num_keypoints
MIN_AREA = 64  # px^2 (8 x 8): smaller people become ignore regions (num_keypoints 0)

# Part ids within a person (16 slots; at most 15 people per image fit in a uint8 label map).
TORSO, HEAD, NECK, L_UARM, L_FARM, R_UARM, R_FARM, L_THIGH, L_SHIN, R_THIGH, R_SHIN, \
    L_FOOT, R_FOOT, L_HAND, R_HAND, FACE = range(16)
SLOTS = 16
MAX_PEOPLE = 15
LEFT_LIMBS = (L_UARM, L_FARM, L_THIGH, L_SHIN)

# Which parts a joint belongs to (its pixel showing one of them means "visible").
_JOINT_PARTS = {
    "nose": (HEAD, FACE), "left_eye": (HEAD, FACE), "right_eye": (HEAD, FACE),
    "left_ear": (HEAD, FACE), "right_ear": (HEAD, FACE),
    "left_shoulder": (TORSO, L_UARM), "right_shoulder": (TORSO, R_UARM),
    "left_elbow": (L_UARM, L_FARM), "right_elbow": (R_UARM, R_FARM),
    "left_wrist": (L_FARM, L_HAND), "right_wrist": (R_FARM, R_HAND),
    "left_hip": (TORSO, L_THIGH), "right_hip": (TORSO, R_THIGH),
    "left_knee": (L_THIGH, L_SHIN), "right_knee": (R_THIGH, R_SHIN),
    "left_ankle": (L_SHIN, L_FOOT), "right_ankle": (R_SHIN, R_FOOT),
}
_TORSO_JOINTS = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")

PRESETS: dict[str, dict] = {
    # few, well separated people on plain backgrounds
    "easy": dict(people=(1, 3), height=(0.3, 0.9), xrange=(0.15, 0.85), crowd=False,
                 clutter=(0, 0), distractors=(0, 0),
                 plain_bg=True, noise=(0.0, 3.0), blur=(0.0, 0.0), lying=0.05),
    # the main benchmark: up to 8 people, cluttered backgrounds with limb-like distractors
    "default": dict(people=(1, 8), height=(0.2, 0.95), xrange=(-0.05, 1.05), crowd=False,
                    clutter=(6, 18),
                    distractors=(1, 5), plain_bg=False, noise=(2.0, 8.0), blur=(0.0, 1.0),
                    lying=0.08),
    # OCHuman-like: people in overlapping groups; every image has a pair with box IoU > 0.5
    "crowd": dict(people=(2, 8), height=(0.35, 0.95), xrange=(0.0, 1.0), crowd=True,
                  clutter=(4, 12),
                  distractors=(1, 4), plain_bg=False, noise=(2.0, 8.0), blur=(0.0, 1.0),
                  lying=0.04),
}

_SKIN = np.array([[255, 224, 196], [234, 192, 160], [198, 144, 110], [160, 110, 75],
                  [110, 72, 48], [80, 52, 36]], np.float32)


@dataclass
class Person:
    """One posed person in image pixels (before occlusion is known)."""

    joints: np.ndarray  # (K, 2) float64 image px
    labelled: np.ndarray  # (K,) bool: False for face points turned away from the camera
    torso_ok: np.ndarray  # (K,) bool: the torso may show this joint (False on the far side)
    parts: list  # (depth, part, kind, geometry) drawn in depth order
    palette: np.ndarray  # (SLOTS, 3) float32 RGB per part
    stripes: np.ndarray  # (SLOTS, 5) float32: amplitude, ox, oy, dx / period, dy / period
    height: float  # nominal standing height in px


# ------------------------------------------------------------------------------ posing
def _rot_x(v, a):
    """Rotate body-frame vectors about the lateral axis (bending forward for a > 0)."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([x, y * math.cos(a) - z * math.sin(a), y * math.sin(a) + z * math.cos(a)], -1)


def _limb_dir(side, abduct, flex):
    """Unit direction of a limb from 'hanging down': abduction outwards, flexion forwards."""
    return np.array([side * math.sin(abduct) * math.cos(flex), -math.cos(abduct) * math.cos(flex),
                     math.sin(flex)])


def _sample_angles(rng, lying_p):
    """Joint angles (radians) from a mixture of pose families; wide on purpose."""
    r = np.radians
    u = rng.uniform
    fam = rng.choice(5, p=[0.35, 0.3, 0.12, 0.15, 0.08])
    a = {"lean": r(rng.normal(0, 8)), "bend": r(u(-10, 20))}
    for s in ("l", "r"):
        a[s + "_abd"], a[s + "_aflex"], a[s + "_elbow"] = r(u(5, 40)), r(u(-30, 40)), r(u(0, 60))
        a[s + "_labd"], a[s + "_lflex"], a[s + "_knee"] = r(u(0, 15)), r(u(-20, 25)), r(u(0, 25))
        if fam == 1:  # active: arms anywhere, walking / kicking legs
            a[s + "_abd"], a[s + "_aflex"], a[s + "_elbow"] = r(u(0, 180)), r(u(-60, 120)), r(u(0, 150))
            a[s + "_labd"], a[s + "_lflex"], a[s + "_knee"] = r(u(0, 40)), r(u(-40, 70)), r(u(0, 100))
            a["bend"] = r(u(-20, 50))
        elif fam == 2:  # arms up
            a[s + "_abd"], a[s + "_elbow"] = r(u(110, 180)), r(u(0, 90))
        elif fam == 3:  # crouching / sitting
            a[s + "_lflex"], a[s + "_knee"] = r(u(50, 110)), r(u(60, 140))
            a["bend"] = r(u(0, 50))
        elif fam == 4:  # bending over
            a["bend"] = r(u(50, 90))
            a[s + "_abd"], a[s + "_aflex"] = r(u(0, 30)), r(u(-20, 90))
    a["roll"] = a["lean"]
    if rng.random() < lying_p:  # lying: the whole body turned in the image plane
        a["roll"] = r(rng.choice([-1, 1]) * u(70, 110))
    return a


def sample_person(rng: np.random.Generator, height: float, center, lying_p: float = 0.08,
                  yaw: float | None = None) -> Person:
    """Sample proportions, pose, yaw and colours of one person; ``center`` is the pelvis (px)."""
    u = rng.uniform
    prop = lambda m: m * u(0.88, 1.12)  # noqa: E731  per-person proportions
    wide = u(0.8, 1.25)
    torso_len, neck_len, head_r = prop(0.30), prop(0.04), prop(0.065)
    sw, hw, depth = prop(0.23) * wide, prop(0.17) * wide, prop(0.12) * wide
    uarm, farm, thigh, shin = prop(0.17), prop(0.15), prop(0.24), prop(0.23)
    a = _sample_angles(rng, lying_p)
    if yaw is None:  # 0 = facing the camera; mostly frontal, as in photos of people
        mode = rng.random()
        yaw = rng.normal(0, 0.6) if mode < 0.6 else rng.normal(math.pi, 0.6) if mode < 0.75 \
            else u(-math.pi, math.pi)
    psi = float(yaw)
    head_psi = psi + u(-0.7, 0.7)
    bend = a["bend"]

    # --- body frame joints (x = left, y = up, z = forward), pelvis at the origin
    P = {}
    up = _rot_x(np.array([0.0, 1.0, 0.0]), bend)
    neck = up * torso_len
    P["left_hip"], P["right_hip"] = np.array([hw / 2, 0, 0]), np.array([-hw / 2, 0, 0])
    P["left_shoulder"] = neck + np.array([sw / 2, 0, 0])
    P["right_shoulder"] = neck + np.array([-sw / 2, 0, 0])
    head_c = neck + up * (neck_len + head_r)
    for s, side, name in (("l", 1.0, "left"), ("r", -1.0, "right")):
        d1 = _rot_x(_limb_dir(side, a[s + "_abd"], a[s + "_aflex"]), bend)
        d2 = _rot_x(_limb_dir(side, a[s + "_abd"], a[s + "_aflex"] + a[s + "_elbow"]), bend)
        P[name + "_elbow"] = P[name + "_shoulder"] + d1 * uarm
        P[name + "_wrist"] = P[name + "_elbow"] + d2 * farm
        d3 = _limb_dir(side, a[s + "_labd"], a[s + "_lflex"])
        d4 = _limb_dir(side, a[s + "_labd"], a[s + "_lflex"] - a[s + "_knee"])
        P[name + "_knee"] = P[name + "_hip"] + d3 * thigh
        P[name + "_ankle"] = P[name + "_knee"] + d4 * shin
    # face points on the head sphere: azimuth from forward towards the left, elevation up
    face = {"nose": (0.0, -0.1), "left_eye": (0.35, 0.2), "right_eye": (-0.35, 0.2),
            "left_ear": (math.pi / 2, 0.05), "right_ear": (-math.pi / 2, 0.05)}
    labelled = np.ones(K, bool)
    face_z = {}
    for name, (az, el) in face.items():
        # head yaw is applied here directly; the body yaw is applied to everything below
        lat, fwd = math.sin(az + head_psi - psi), math.cos(az + head_psi - psi)
        P[name] = head_c + head_r * np.array([0.92 * lat, el, 0.92 * fwd])
        face_z[name] = math.cos(az + head_psi)  # towards the camera
        need = 0.15 if "ear" not in name else -0.45  # ears show in frontal views, eyes do not from behind
        labelled[META.keypoint_names.index(name)] = face_z[name] > need

    # --- body frame -> camera: yaw about the vertical axis, then the image-plane roll
    def cam(v):
        v = np.asarray(v, np.float64)
        X = v[..., 0] * math.cos(psi) + v[..., 2] * math.sin(psi)
        Z = -v[..., 0] * math.sin(psi) + v[..., 2] * math.cos(psi)
        cr, sr = math.cos(a["roll"]), math.sin(a["roll"])
        x_img = center[0] + height * (cr * X + sr * v[..., 1])
        y_img = center[1] + height * (sr * X - cr * v[..., 1])
        return np.stack([x_img, y_img], -1), Z * height

    names = META.keypoint_names
    joints, jz = cam(np.stack([P[n] for n in names]))
    J = {n: joints[i] for i, n in enumerate(names)}
    Zj = {n: jz[i] for i, n in enumerate(names)}
    torso_ok = np.array([n not in _TORSO_JOINTS or Zj[n] > -0.09 * height for n in names])

    # --- parts with painter's depth (mean camera z); radii in px
    px = lambda f: max(1.0, f * height * wide)  # noqa: E731
    parts = []

    def cap(part, a_, b_, rad):
        parts.append(((Zj[a_] + Zj[b_]) / 2, part, "cap", (J[a_], J[b_], px(rad))))

    for name, pu, pf, pt, ps, pfoot, phand in (("left", L_UARM, L_FARM, L_THIGH, L_SHIN, L_FOOT, L_HAND),
                                                ("right", R_UARM, R_FARM, R_THIGH, R_SHIN, R_FOOT, R_HAND)):
        cap(pu, name + "_shoulder", name + "_elbow", 0.036)
        cap(pf, name + "_elbow", name + "_wrist", 0.028)
        cap(pt, name + "_hip", name + "_knee", 0.052)
        cap(ps, name + "_knee", name + "_ankle", 0.038)
        w = J[name + "_wrist"] + (J[name + "_wrist"] - J[name + "_elbow"]) * 0.25
        parts.append((Zj[name + "_wrist"] + 1e-3, phand, "circle", (w, px(0.032))))
        toe, tz = cam(P[name + "_ankle"] + np.array([0.0, -0.02, 0.11]))
        parts.append(((Zj[name + "_ankle"] + tz) / 2, pfoot, "cap", (J[name + "_ankle"], toe, px(0.022))))
    # torso: a box with a depth, projected; its hull is the polygon
    corners = []
    for base, half in ((neck, sw / 2 + 0.02), (np.zeros(3), hw / 2 + 0.03)):
        for sx in (-1, 1):
            for sz in (-1, 1):
                corners.append(base + np.array([sx * half, 0, sz * depth / 2]))
    cxy, cz = cam(np.stack(corners))
    parts.append((float(cz.mean()) - 0.03 * height, TORSO, "poly", cxy))
    nxy, nz = cam(neck)
    hxy, hz = cam(head_c)
    parts.append((float(nz) - 0.02 * height, NECK, "cap", (nxy, hxy, px(0.03))))
    # the head goes over the torso and neck; arms in front of the body still cover it
    head_depth = max(float(hz), float(cz.mean())) + 1e-3
    tilt = math.degrees(math.atan2(hxy[1] - nxy[1], hxy[0] - nxy[0])) + 90
    r_px = head_r * height
    parts.append((head_depth, HEAD, "ellipse", (hxy, (0.85 * r_px, r_px), tilt)))
    for name in ("left_eye", "right_eye", "nose"):  # dark face marks show where the face points
        if face_z[name] > 0.15:
            rad = max(1.0, (0.16 if name != "nose" else 0.12) * r_px)
            parts.append((head_depth + 2e-3, FACE, "circle", (J[name], rad)))
    parts.sort(key=lambda p: p[0])

    # --- colours: skin, shirt (with or without sleeves), trousers (or shorts), hair, shoes
    skin = _SKIN[rng.integers(len(_SKIN))] * u(0.9, 1.1)
    shirt, pants, shoes = rng.uniform(20, 235, (3, 3)).astype(np.float32)
    hair = np.array([40, 30, 20], np.float32) * u(0.5, 2.5)
    pal = np.zeros((SLOTS, 3), np.float32)
    pal[[TORSO, L_UARM, R_UARM]] = shirt
    pal[[L_FARM, R_FARM]] = shirt if rng.random() < 0.5 else skin
    pal[[L_THIGH, R_THIGH]] = pants
    pal[[L_SHIN, R_SHIN]] = pants if rng.random() < 0.7 else skin
    pal[[HEAD, NECK, L_HAND, R_HAND]] = skin
    pal[[L_FOOT, R_FOOT]] = shoes
    if math.cos(head_psi) < -0.2:  # back of the head: hair
        pal[HEAD] = hair
    pal[FACE] = skin * 0.35
    # stripes: across the person's left limbs (the learnable side cue); torso pattern random
    stripes = np.zeros((SLOTS, 5), np.float32)
    period = max(3.0, 0.045 * height)
    amp = u(0.18, 0.3)
    for part, (ja, jb) in zip(LEFT_LIMBS, (("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
                                           ("left_hip", "left_knee"), ("left_knee", "left_ankle"))):
        d = J[jb] - J[ja]
        d = d / max(1e-6, float(np.hypot(*d)))
        stripes[part] = (amp, J[ja][0], J[ja][1], d[0] / period, d[1] / period)
    if rng.random() < 0.5:
        t = u(0, math.pi)
        p2 = period * u(0.7, 2.0)
        stripes[TORSO] = (u(0.1, 0.3), center[0], center[1], math.cos(t) / p2, math.sin(t) / p2)
    return Person(joints, labelled, torso_ok, parts, pal, stripes, float(height))


# ------------------------------------------------------------------------------ rendering
def _draw_part(canvas, value, kind, geom, shift=2):
    s = 1 << shift
    if kind == "cap":
        a, b, r = geom
        cv2.line(canvas, tuple(np.round(a * s).astype(int).tolist()),
                 tuple(np.round(b * s).astype(int).tolist()), value, max(2, int(round(2 * r))),
                 cv2.LINE_8, shift)
    elif kind == "circle":
        c, r = geom
        cv2.circle(canvas, tuple(np.round(c * s).astype(int).tolist()), int(round(r * s)), value, -1,
                   cv2.LINE_8, shift)
    elif kind == "ellipse":
        c, axes, ang = geom
        cv2.ellipse(canvas, tuple(np.round(c * s).astype(int).tolist()),
                    (max(1, int(round(axes[0] * s))), max(1, int(round(axes[1] * s)))), ang, 0, 360,
                    value, -1, cv2.LINE_8, shift)
    else:  # convex polygon
        hull = cv2.convexHull(np.round(geom * s).astype(np.int32))
        cv2.fillConvexPoly(canvas, hull, value, cv2.LINE_8, shift)


def _background(rng, size, cfg):
    """Plain or gradient background, clutter shapes and limb-like distractors (uint8 RGB)."""
    u = rng.uniform
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    if cfg["plain_bg"]:
        c1 = np.clip(c0 + rng.normal(0, 20, 3), 0, 255).astype(np.float32)
    t = np.linspace(0, 1, size, dtype=np.float32)
    horizontal = rng.random() < 0.5
    ramp = t[None, :, None] if horizontal else t[:, None, None]
    bg = np.ascontiguousarray(np.broadcast_to(c0 + (c1 - c0) * ramp, (size, size, 3)).astype(np.uint8))
    for _ in range(int(rng.integers(cfg["clutter"][0], cfg["clutter"][1] + 1))):
        col = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        x, y = rng.uniform(-0.1, 1.1, 2) * size
        e = u(0.03, 0.35) * size
        if kind == 0:
            cv2.rectangle(bg, (int(x), int(y)), (int(x + e * u(0.3, 2)), int(y + e * u(0.3, 2))), col, -1)
        elif kind == 1:
            cv2.circle(bg, (int(x), int(y)), int(e / 2), col, -1)
        elif kind == 2:
            cv2.line(bg, (int(x), int(y)), (int(x + u(-1, 1) * e * 2), int(y + u(-1, 1) * e * 2)), col,
                     int(u(1, 6)))
        else:
            pts = (rng.uniform(-1, 1, (int(rng.integers(3, 7)), 2)) * e + (x, y)).astype(np.int32)
            cv2.fillPoly(bg, [pts], col)
    # distractors: skin / clothing coloured capsules and ellipses that belong to nobody
    for _ in range(int(rng.integers(cfg["distractors"][0], cfg["distractors"][1] + 1))):
        col = _SKIN[rng.integers(len(_SKIN))] if rng.random() < 0.5 else rng.uniform(20, 235, 3)
        col = tuple(float(c) for c in col)
        x, y = rng.uniform(0, 1, 2) * size
        length, r = u(0.05, 0.25) * size, u(0.01, 0.03) * size
        ang = u(0, 2 * math.pi)
        if rng.random() < 0.7:
            cv2.line(bg, (int(x), int(y)), (int(x + length * math.cos(ang)), int(y + length * math.sin(ang))),
                     col, max(2, int(2 * r)))
        else:
            cv2.ellipse(bg, (int(x), int(y)), (max(1, int(r * 2.5)), max(1, int(r * 3.2))),
                        math.degrees(ang), 0, 360, col, -1)
    return bg


def render_people(size: int, people: list[Person], background: np.ndarray | None = None):
    """Draw ``people`` (back to front, in list order) over ``background``.

    Returns (image uint8 RGB, label map uint8, keypoints (P, K, 3) float64 with COCO flags).
    """
    if len(people) > MAX_PEOPLE:
        raise ValueError(f"at most {MAX_PEOPLE} people per image")
    label = np.zeros((size, size), np.uint8)
    for p, person in enumerate(people):
        for _, part, kind, geom in person.parts:
            _draw_part(label, 1 + p * SLOTS + part, kind, geom)
    img = np.zeros((size, size, 3), np.uint8) if background is None else background.copy()
    ys, xs = np.nonzero(label)
    if len(people) and ys.size:
        pal = np.zeros((256, 3), np.float32)
        st = np.zeros((256, 5), np.float32)
        for p, person in enumerate(people):
            pal[1 + p * SLOTS:1 + (p + 1) * SLOTS] = person.palette
            st[1 + p * SLOTS:1 + (p + 1) * SLOTS] = person.stripes
        lab = label[ys, xs]
        s = st[lab]
        # stripes: alternate bands along each part's axis, dimmed by the part's amplitude
        phase = (xs - s[:, 1]) * s[:, 3] + (ys - s[:, 2]) * s[:, 4]
        dim = 1.0 - s[:, 0] * (np.floor(phase) % 2 == 1)
        img[ys, xs] = np.clip(pal[lab] * dim[:, None], 0, 255).astype(np.uint8)

    # visibility flags from the label map (vectorised over all people and joints)
    kp = np.zeros((len(people), K, 3), np.float64)
    if not people:
        return img, label, kp
    joints = np.stack([q.joints for q in people])  # (P, K, 2)
    labelled = np.stack([q.labelled for q in people])
    torso_ok = np.stack([q.torso_ok for q in people])
    allowed = np.zeros((len(people), K, SLOTS), bool)
    for j, name in enumerate(META.keypoint_names):
        allowed[:, j, list(_JOINT_PARTS[name])] = True
    allowed[:, :, TORSO] &= torso_ok
    xi, yi = np.round(joints[..., 0]).astype(np.int64), np.round(joints[..., 1]).astype(np.int64)
    inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
    at = label[np.clip(yi, 0, size - 1), np.clip(xi, 0, size - 1)].astype(np.int64)
    owner, part = (at - 1) // SLOTS, (at - 1) % SLOTS
    pidx = np.arange(len(people))[:, None]
    own = (at > 0) & (owner == pidx) & np.take_along_axis(allowed, part[..., None], 2)[..., 0]
    lab_ok = inside & labelled
    kp[..., 2] = np.where(lab_ok, np.where(own, 2, 1), 0)
    kp[..., :2] = np.where(lab_ok[..., None], joints, 0.0)
    return img, label, kp


def box_iou_pairs(boxes: np.ndarray) -> np.ndarray:
    """IoU of every pair (i < j) of COCO [x, y, w, h] boxes, as a flat array."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) < 2:
        return np.zeros(0)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    ih = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    inter = iw * ih
    area = b[:, 2] * b[:, 3]
    iou = inter / np.maximum(area[:, None] + area[None] - inter, 1e-9)
    i, j = np.triu_indices(len(b), 1)
    return iou[i, j]


def annotations_from_render(label: np.ndarray, kp: np.ndarray, num_people: int) -> list[dict]:
    """COCO annotations (without ids) from the label map; keeps the order of ``people``.

    Entries for fully hidden people are None so callers can still match them to their person.
    """
    owner = (label.astype(np.int16) - 1) // SLOTS
    owner[label == 0] = -1
    out = []
    for p in range(num_people):
        m = owner == p
        if not m.any():
            out.append(None)
            continue
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        area = int(mask_utils.area(rle))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        k = kp[p].copy()
        if area < MIN_AREA:  # too small to learn from: an ignore region
            k[:] = 0
        flat = []
        for x, y, v in k:
            flat += [round(float(x), 2), round(float(y), 2), int(v)]
        out.append({
            "category_id": META.category_id,
            "keypoints": flat,
            "num_keypoints": int((k[:, 2] > 0).sum()),
            "area": area,
            "bbox": bbox,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "iscrowd": 0,
        })
    return out


def _place(rng, size, cfg, n):
    """Heights (px) and pelvis centres for ``n`` people; crowds are built as overlapping groups."""
    lo, hi = cfg["height"]
    heights, centers = [], []
    for i in range(n):
        if cfg["crowd"] and i > 0 and rng.random() < 0.9:
            # next to someone already placed, at a similar scale: boxes overlap heavily
            ref = int(rng.integers(i))
            h = float(np.clip(heights[ref] * rng.uniform(0.85, 1.15), lo * size, hi * size))
            c = centers[ref] + np.array([rng.uniform(-0.25, 0.25), rng.uniform(-0.1, 0.1)]) * heights[ref]
        else:
            h = size * math.exp(rng.uniform(math.log(lo), math.log(hi)))
            ylo, yhi = 0.4 * h, size - 0.35 * h  # most of a standing body inside; some cut off
            y = rng.uniform(ylo, yhi) if yhi > ylo else rng.uniform(0.35, 0.65) * size
            c = np.array([rng.uniform(*cfg["xrange"]) * size, y])  # pelvis; beyond [0, 1]: cut
        heights.append(h)
        centers.append(c)
    return heights, centers


def _render(rng, size, cfg):
    """One image: returns (image, annotations, nominal height fractions of kept annotations)."""
    n = int(rng.integers(cfg["people"][0], cfg["people"][1] + 1))
    n = min(n, MAX_PEOPLE)
    for attempt in range(20):
        heights, centers = _place(rng, size, cfg, n)
        people = [sample_person(rng, h, c, cfg["lying"]) for h, c in zip(heights, centers)]
        # back to front: smaller (further away) people first, with some randomness
        order = np.argsort(np.array(heights) * rng.uniform(0.8, 1.2, n), kind="stable")
        people = [people[i] for i in order]
        bg = _background(rng, size, cfg)
        img, label, kp = render_people(size, people, bg)
        anns = annotations_from_render(label, kp, len(people))
        keep = [i for i, a in enumerate(anns) if a is not None]
        boxes = [anns[i]["bbox"] for i in keep]
        if not cfg["crowd"] or (box_iou_pairs(boxes) > 0.5).any():
            break
    # sensor effects: blur and noise (after the labels, which they do not change)
    sigma = rng.uniform(*cfg["blur"])
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    std = rng.uniform(*cfg["noise"])
    if std > 0:
        noise = rng.standard_normal(img.shape, dtype=np.float32) * std
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, [anns[i] for i in keep], [people[i].height / size for i in keep]


def render_image(rng: np.random.Generator, size: int, preset_cfg: dict | str = "default"):
    """Render one synthetic image: (RGB uint8 (size, size, 3), list of COCO annotations without ids)."""
    cfg = PRESETS[preset_cfg] if isinstance(preset_cfg, str) else preset_cfg
    img, anns, _ = _render(rng, size, cfg)
    return img, anns


# ------------------------------------------------------------------------------ dataset writer
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
PREVIEW_COUNT = 16


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: the same (seed, split, index) always gives the same image."""
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])


def _check_args(out_dir, preset, num_train, num_val, size, seed, ext, overwrite):
    if preset not in PRESETS:
        raise LogocapError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    for name, n in (("number of train images", num_train), ("number of val images", num_val)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise LogocapError(f"the {name} must be a non-negative integer, got {n!r}")
    if num_train + num_val == 0:
        raise LogocapError("nothing to generate: both --train and --val are 0")
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise LogocapError(f"image size must be an integer >= 64, got {size!r}")
    if size > 4096:
        raise LogocapError(f"image size must be <= 4096, got {size}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LogocapError(f"seed must be a non-negative integer, got {seed!r}")
    if ext not in ("jpg", "png"):
        raise LogocapError(f"image format must be jpg or png, got '{ext}'")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LogocapError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LogocapError(f"output folder {out} exists and is not empty (use --overwrite to replace it)")
    return out


def split_stats(images: list[dict], anns: list[dict], heights: list[float]) -> dict:
    """Statistics of one split (what a user checks before training on it)."""
    n_img = max(1, len(images))
    by_image: dict[int, list] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    labelled = [a for a in anns if a["num_keypoints"] > 0]
    v = np.array([a["keypoints"][2::3] for a in labelled], np.float64).reshape(-1)
    pairs = sum(int((box_iou_pairs([a["bbox"] for a in by_image.get(im["id"], [])]) > 0.5).sum())
                for im in images)
    with_pair = sum(int((box_iou_pairs([a["bbox"] for a in by_image.get(im["id"], [])]) > 0.5).any())
                    for im in images)
    h = np.asarray(heights, np.float64)
    return {
        "images": len(images),
        "people": len(anns),
        "people_labelled": len(labelled),
        "people_ignored": len(anns) - len(labelled),
        "people_per_image": round(len(anns) / n_img, 3),
        "max_people_per_image": max((len(v_) for v_ in by_image.values()), default=0),
        "height_fraction_mean": round(float(h.mean()), 3) if h.size else 0.0,
        "height_fraction_min": round(float(h.min()), 3) if h.size else 0.0,
        "height_fraction_max": round(float(h.max()), 3) if h.size else 0.0,
        # over the joints of labelled people
        "occluded_fraction_of_labelled": round(float((v == 1).sum() / max(1, (v > 0).sum())), 3),
        "unlabelled_fraction": round(float((v == 0).mean()), 3) if v.size else 0.0,
        "iou50_pairs_per_image": round(pairs / n_img, 3),
        "images_with_iou50_pair": round(with_pair / n_img, 3),
    }


def _write_split(tmp: Path, split, n, preset, size, seed, ext, preview, progress):
    """Render and write one split into ``tmp``; returns its stats."""
    from tqdm import tqdm

    from ..viz import contact_sheet, draw_poses, encode_image

    cfg = PRESETS[preset]
    img_dir = tmp / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns, heights, sheet = [], [], [], []
    for i in tqdm(range(n), desc=f"synth {split}", unit="img", disable=not progress or n == 0):
        img, img_anns, hf = _render(image_rng(seed, split, i), size, cfg)
        image_id = i + 1
        name = f"{i:06d}.{ext}"
        # plain writes are fine here: the whole folder is renamed into place at the end
        (img_dir / name).write_bytes(encode_image(img, "." + ext, jpeg_quality=92))
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for a, h in zip(img_anns, hf):
            anns.append({"id": len(anns) + 1, "image_id": image_id, **a})
            heights.append(h)
        if preview and i < PREVIEW_COUNT:
            kp = np.array([a["keypoints"] for a in img_anns], np.float32).reshape(-1, K, 3)
            sheet.append(draw_poses(img, kp, META, gt=True))
    stats = split_stats(images, anns, heights)
    coco = {
        "info": {"description": "logocap synthetic multi-person keypoints", "preset": preset,
                 "split": split, "size": size, "seed": seed, "stats": stats},
        "images": images,
        "annotations": anns,
        "categories": [META.coco_category()],
    }
    atomic_write_text(tmp / "annotations" / f"person_keypoints_{split}.json",
                      json.dumps(coco, separators=(",", ":")))
    if preview and sheet:
        from ..viz import save_image
        save_image(tmp / f"preview_{split}.png", contact_sheet(sheet, cols=4))
    return stats


def generate_synthetic(out_dir, preset: str = "default", num_train: int = 1000, num_val: int = 200,
                       size: int = 256, seed: int = 0, preview: bool = False, overwrite: bool = False,
                       ext: str = "jpg", progress: bool = True) -> dict:
    """Write a synthetic COCO-format keypoint dataset to ``out_dir``; returns its statistics.

    Layout: ``annotations/person_keypoints_{train,val}.json``, ``images/{train,val}/NNNNNN.jpg``,
    ``stats.json`` and, with ``preview``, ``preview_{split}.png``. Everything is written to a
    temporary folder next to ``out_dir`` and renamed into place, so a failure leaves nothing
    half-written. Same arguments -> byte-identical json.
    """
    out = _check_args(out_dir, preset, num_train, num_val, size, seed, ext, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes a private folder; the dataset is not private
    try:
        t0 = time.perf_counter()
        stats = {"preset": preset, "size": size, "seed": seed}
        for split, n in (("train", num_train), ("val", num_val)):
            stats[split] = _write_split(tmp, split, n, preset, size, seed, ext, preview, progress)
        elapsed = time.perf_counter() - t0
        atomic_write_text(tmp / "stats.json", json.dumps(stats, indent=1))
        if out.exists():  # empty, or --overwrite: move the old folder aside, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # timing is reported, never stored: the files stay byte-identical across runs
    stats = dict(stats, images_per_second=round((num_train + num_val) / max(elapsed, 1e-9), 1))
    return stats
