"""Keypoint metadata: the one home of names, flip pairs, skeleton, OKS sigmas and colours.

Nothing else in the library hard-codes a keypoint count: everything reads ``meta.num_keypoints``,
``meta.flip_index``, ``meta.sigmas`` etc. from a :class:`KeypointMeta`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["KeypointMeta", "COCO", "CROWDPOSE", "get_meta", "meta_for_model", "meta_from_coco_category",
           "list_metas", "rescore_limbs"]


def _side(name: str) -> str:
    n = name.lower()
    if n.startswith("left") or n.startswith("l_"):
        return "left"
    if n.startswith("right") or n.startswith("r_"):
        return "right"
    return "center"


# Drawing colours (RGB) by body side; one place for them too.
SIDE_COLORS = {"left": (0, 200, 255), "right": (255, 128, 0), "center": (60, 220, 60)}


@dataclass(frozen=True)
class KeypointMeta:
    """Describes one keypoint set.

    ``flip_pairs`` are given by name; ``flip_index`` is derived from them.
    ``skeleton`` is a list of 0-indexed (a, b) joint pairs.
    """

    name: str
    keypoint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[str, str], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    dataset_type: str = "coco"  # "coco" (pycocotools) or "crowdpose" (xtcocotools)
    category_id: int = 1
    category_name: str = "person"
    # derived
    flip_index: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        names = list(self.keypoint_names)
        if len(set(names)) != len(names):
            raise ValueError(f"keypoint names of meta '{self.name}' are not unique: {names}")
        if len(self.sigmas) != len(names):
            raise ValueError(
                f"meta '{self.name}': {len(self.sigmas)} sigmas for {len(names)} keypoints")
        idx = list(range(len(names)))
        for a, b in self.flip_pairs:
            if a not in names or b not in names:
                raise ValueError(f"meta '{self.name}': flip pair ({a}, {b}) names an unknown keypoint")
            ia, ib = names.index(a), names.index(b)
            idx[ia], idx[ib] = ib, ia
        for a, b in self.skeleton:
            if not (0 <= a < len(names) and 0 <= b < len(names)):
                raise ValueError(f"meta '{self.name}': skeleton edge ({a}, {b}) out of range")
        object.__setattr__(self, "flip_index", tuple(idx))

    # ------------------------------------------------------------------ derived views
    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def flip_index_with_center(self) -> tuple[int, ...]:
        """Flip index for the K keypoint heatmaps plus the center channel (index K)."""
        return self.flip_index + (self.num_keypoints,)

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float32)

    @property
    def sides(self) -> tuple[str, ...]:
        return tuple(_side(n) for n in self.keypoint_names)

    @property
    def keypoint_colors(self) -> tuple[tuple[int, int, int], ...]:
        return tuple(SIDE_COLORS[s] for s in self.sides)

    @property
    def skeleton_colors(self) -> tuple[tuple[int, int, int], ...]:
        """Colour of each skeleton edge: left if both ends are left (or one left, one center)..."""
        sides = self.sides
        out = []
        for a, b in self.skeleton:
            sa, sb = sides[a], sides[b]
            s = sa if sa == sb else ("left" if "left" in (sa, sb) and "right" not in (sa, sb)
                                     else "right" if "right" in (sa, sb) and "left" not in (sa, sb)
                                     else "center")
            out.append(SIDE_COLORS[s])
        return tuple(out)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """Plain dict (lists/strings/floats only) so it can travel in a weights_only checkpoint."""
        return {
            "name": self.name,
            "keypoint_names": list(self.keypoint_names),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "skeleton": [list(e) for e in self.skeleton],
            "sigmas": [float(s) for s in self.sigmas],
            "dataset_type": self.dataset_type,
            "category_id": int(self.category_id),
            "category_name": self.category_name,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "KeypointMeta":
        try:
            return cls(
                name=str(d["name"]),
                keypoint_names=tuple(d["keypoint_names"]),
                flip_pairs=tuple(tuple(p) for p in d["flip_pairs"]),
                skeleton=tuple(tuple(int(i) for i in e) for e in d["skeleton"]),
                sigmas=tuple(float(s) for s in d["sigmas"]),
                dataset_type=str(d.get("dataset_type", "coco")),
                category_id=int(d.get("category_id", 1)),
                category_name=str(d.get("category_name", "person")),
            )
        except KeyError as e:
            raise ValueError(f"keypoint meta dict lacks the field {e}") from None

    def coco_category(self) -> dict:
        """A COCO ``categories`` entry (skeleton 1-indexed, as COCO writes it)."""
        return {
            "id": self.category_id,
            "name": self.category_name,
            "supercategory": self.category_name,
            "keypoints": list(self.keypoint_names),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }

    def same_keypoints(self, other: "KeypointMeta") -> bool:
        return self.keypoint_names == other.keypoint_names and self.flip_index == other.flip_index


_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)


def _pairs_by_prefix(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for n in names:
        if n.startswith("left_") and ("right_" + n[5:]) in names:
            out.append((n, "right_" + n[5:]))
    return tuple(out)


# COCO skeleton (0-indexed), the 19 limbs of the COCO annotation file.
_COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

COCO = KeypointMeta(
    name="coco",
    keypoint_names=_COCO_NAMES,
    flip_pairs=_pairs_by_prefix(_COCO_NAMES),
    skeleton=_COCO_SKELETON,
    sigmas=(.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
            .107, .107, .087, .087, .089, .089),
)

_CROWDPOSE_NAMES = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "head", "neck",
)

CROWDPOSE = KeypointMeta(
    name="crowdpose",
    keypoint_names=_CROWDPOSE_NAMES,
    flip_pairs=_pairs_by_prefix(_CROWDPOSE_NAMES),
    skeleton=((12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7),
              (6, 7), (6, 8), (8, 10), (7, 9), (9, 11)),
    # CrowdPose sigmas as used by xtcocotools / the CrowdPose toolkit
    sigmas=(.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089, .079, .079),
    dataset_type="crowdpose",
)

_REGISTRY = {"coco": COCO, "ochuman": COCO, "synthetic": COCO, "crowdpose": CROWDPOSE}

# Limbs of the pose rescoring net (DEKR ``lib/utils/rescore.py``; notes 10.3 step 9): (a, b) pairs,
# feature = joint a - joint b, in the released ORDER (the trained nets depend on it), and the two
# limbs whose mean length is the scale (#9 and #11 of the list). For COCO these are the torso sides
# (left shoulder-left hip, right shoulder-right hip); the CrowdPose list reuses the indices, which
# there pick left hip-left knee and left knee-left ankle.
_RESCORE_LIMBS = {
    _COCO_NAMES: (((0, 1), (0, 2), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 6), (5, 7), (5, 11),
                   (6, 8), (6, 12), (7, 9), (8, 10), (11, 12), (11, 13), (12, 14), (13, 15),
                   (14, 16)), (9, 11)),
    _CROWDPOSE_NAMES: (((12, 13), (13, 0), (13, 1), (0, 2), (1, 3), (2, 4), (3, 5), (0, 6), (1, 7),
                        (6, 8), (7, 9), (8, 10), (9, 11), (6, 7), (0, 1)), (9, 11)),
}


def rescore_limbs(meta: KeypointMeta) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """(limbs, scale limbs) of the rescoring features for a keypoint set.

    COCO-17 and CrowdPose-14: the released lists (19 and 15 limbs; 74- and 59-d features). Any
    other set: its skeleton, scaled by the mean length of all its limbs. ValueError if it has no
    skeleton.
    """
    if meta.keypoint_names in _RESCORE_LIMBS:
        return _RESCORE_LIMBS[meta.keypoint_names]
    if not meta.skeleton:
        raise ValueError(f"keypoint set '{meta.name}' has no skeleton to build rescoring features from")
    return tuple(meta.skeleton), tuple(range(len(meta.skeleton)))


def list_metas() -> list[str]:
    return sorted(_REGISTRY)


def get_meta(name: str | KeypointMeta | dict) -> KeypointMeta:
    """Look up a meta by name (``coco``, ``crowdpose``, ...), or pass one through."""
    if isinstance(name, KeypointMeta):
        return name
    if isinstance(name, dict):
        return KeypointMeta.from_dict(name)
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown keypoint set '{name}'; known: {', '.join(list_metas())}") from None


def meta_for_model(model, meta: str | KeypointMeta | dict) -> KeypointMeta:
    """``get_meta(meta)``, checked against the keypoints ``model`` predicts (its ``num_keypoints``,
    where it names one): LogocapError when the two differ."""
    from .utils import LogocapError

    meta = get_meta(meta)
    k = getattr(model, "num_keypoints", meta.num_keypoints)
    if k != meta.num_keypoints:
        raise LogocapError(f"model predicts {k} keypoints but the keypoint set "
                           f"'{meta.name}' has {meta.num_keypoints}")
    return meta


def meta_from_coco_category(category: dict, sigmas: Sequence[float] | None = None,
                            name: str | None = None) -> KeypointMeta:
    """Build a meta from a COCO ``categories`` entry (custom keypoint sets).

    Flip pairs come from ``left_*``/``right_*`` names. If ``sigmas`` is not given and the names
    equal a known set, that set's sigmas are used; otherwise a uniform 0.05 is used (say so in docs).
    """
    if "keypoints" not in category or not category["keypoints"]:
        raise ValueError(f"category {category.get('name', '?')!r} has no 'keypoints' list")
    names = tuple(category["keypoints"])
    for known in (COCO, CROWDPOSE):
        if names == known.keypoint_names:
            return known if sigmas is None else KeypointMeta(
                name=name or known.name, keypoint_names=names, flip_pairs=known.flip_pairs,
                skeleton=known.skeleton, sigmas=tuple(sigmas), dataset_type=known.dataset_type)
    sk = tuple((int(a) - 1, int(b) - 1) for a, b in category.get("skeleton", []))
    return KeypointMeta(
        name=name or str(category.get("name", "custom")),
        keypoint_names=names,
        flip_pairs=_pairs_by_prefix(names),
        skeleton=sk,
        sigmas=tuple(sigmas) if sigmas is not None else (0.05,) * len(names),
        category_id=int(category.get("id", 1)),
        category_name=str(category.get("name", "person")),
    )
