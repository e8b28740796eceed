"""The speed-accuracy picture (LOGO-CAP paper Fig. 2): AP against ms per image for every model and
setting found in the benchmark JSONs, one PNG (``logocap bench plot``).

A point is any JSON object (at any depth: a ``rows`` dict or list, a nested section) holding
both a numeric ``AP`` and a numeric ``ms_per_image``; rows where either is missing or null (an
oracle bound has no speed) are left out. Its label is the row's key in a dict, or, for a list
item, its identifying fields (``name`` / ``model`` / ``setting`` / ``path`` / ``backend`` /
``size`` / ``batch`` / ``flip`` ...); points of one file share a colour, and the legend names the
file and the machine it was measured on (``machine``: cpu, threads, device).
"""
from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

from .utils import LogocapError, atomic_write_bytes

__all__ = ["collect_points", "plot_speed_accuracy", "DEFAULT_RESULTS", "DEFAULT_PNG"]

DEFAULT_RESULTS = Path("benchmarks") / "results"
DEFAULT_PNG = DEFAULT_RESULTS / "speed_accuracy.png"
# list items are named by these fields, in this order (those present)
_NAME_FIELDS = ("name", "label", "row", "setting", "model", "path", "backend", "exporter",
                "adaptation", "size", "input_size", "batch", "flip")


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _item_name(d: dict) -> str:
    parts = []
    for key in _NAME_FIELDS:
        if key in d and isinstance(d[key], (str, int, float, bool)) and d[key] is not None:
            v = d[key]
            parts.append(str(v) if key in ("name", "label", "row", "setting", "model", "path")
                         else f"{key} {v}")
    return ", ".join(parts)


def _walk(obj, trail: list[str], out: list[dict]) -> None:
    if isinstance(obj, dict):
        ap, ms = _number(obj.get("AP")), _number(obj.get("ms_per_image"))
        if ap is not None and ms is not None and ms > 0:
            out.append({"label": " / ".join(trail) or _item_name(obj) or "row", "AP": ap,
                        "ms_per_image": ms})
            return
        for k, v in obj.items():
            if k != "machine":
                _walk(v, trail if k == "rows" else trail + [str(k)], out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk(v, trail + [(_item_name(v) if isinstance(v, dict) else "") or f"#{i}"], out)


def collect_points(folder) -> tuple[list[dict], list[str]]:
    """-> ([{"file", "machine", "label", "AP", "ms_per_image"}], [problems]) for the ``*.json``
    files directly in ``folder`` (sorted by name). Unreadable or torn files are listed in
    ``problems`` and skipped; a missing folder is a LogocapError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LogocapError(f"no benchmark results folder {folder} (run from the repository root, "
                           "or give --results DIR)")
    points, problems = [], []
    for f in sorted(folder.glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            problems.append(f"{f.name}: unreadable ({type(e).__name__})")
            continue
        found: list[dict] = []
        _walk(data, [], found)
        machine = data.get("machine") if isinstance(data, dict) else None
        for p in found:
            p.update(file=f.name, machine=machine if isinstance(machine, dict) else {})
        points += found
    return points, problems


def _machine_text(m: dict) -> str:
    bits = [str(m[k]) for k in ("cpu",) if m.get(k)]
    if m.get("threads"):
        bits.append(f"{m['threads']} thread{'s' if m['threads'] != 1 else ''}")
    if m.get("device"):
        bits.append(str(m["device"]))
    return ", ".join(bits)


def _place_labels(fig, ax, points: list[dict], scale: float) -> None:
    """Label each point beside it: the side away from the right edge first, then the other side,
    then one line up or down, two, ...; the first spot that overlaps no marker and no earlier
    label and stays inside the axes wins (a leader line marks a moved label)."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    xy_all = [(p["ms_per_image"], p["AP"] * scale) for p in points]
    pix_all = [ax.transData.transform(xy) for xy in xy_all]
    placed = [Bbox.from_bounds(x - 4, y - 4, 8, 8) for x, y in pix_all]  # the markers
    # points that sit on top of each other (within 6 px) share one label
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(pix_all):
        for g in groups:
            gx, gy = pix_all[g[0]]
            if abs(x - gx) < 6 and abs(y - gy) < 6:
                g.append(i)
                break
        else:
            groups.append([i])
    points = [{"AP": points[g[0]]["AP"], "ms_per_image": points[g[0]]["ms_per_image"],
               "label": "; ".join(points[i]["label"] for i in g)} for g in groups]
    xy_of = [xy_all[g[0]] for g in groups]
    pix = [pix_all[g[0]] for g in groups]
    for i in sorted(range(len(points)), key=lambda j: (-points[j]["AP"], points[j]["ms_per_image"])):
        first_right = pix[i][0] > box.x0 + 0.6 * box.width
        tries = [(dy, right) for k in range(17) for right in (first_right, not first_right)
                 for dy in [(k + 1) // 2 * 8 * (1 if k % 2 else -1)]]
        for n, (dy, right) in enumerate(tries):
            ann = ax.annotate(points[i]["label"], xy_of[i], xytext=(-6 if right else 6, -3 + dy),
                              textcoords="offset points", ha="right" if right else "left",
                              fontsize=7, color="0.2", zorder=4,
                              arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5) if dy else None)
            ann.update_positions(renderer)
            bb = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
            inside = box.x0 <= bb.x0 and bb.x1 <= box.x1 and box.y0 <= bb.y0 and bb.y1 <= box.y1
            if inside and not any(bb.overlaps(o) for o in placed):
                break
            if n < len(tries) - 1:
                ann.remove()
        placed.append(bb)


def plot_speed_accuracy(points: list[dict], out, title: str | None = None) -> Path:
    """Draw the points (from :func:`collect_points`) and write the PNG atomically."""
    if not points:
        raise LogocapError("nothing to plot: no benchmark rows with both AP and ms_per_image")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    percent = all(p["AP"] <= 1.0 for p in points)  # COCOeval gives fractions
    files = list(dict.fromkeys(p["file"] for p in points))
    colours = plt.get_cmap("tab10")
    markers = "osD^v<>ph*"
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=120)
    xs = [p["ms_per_image"] for p in points]
    log_x = max(xs) / min(xs) > 20
    for i, f in enumerate(files):
        mine = [p for p in points if p["file"] == f]
        machine = _machine_text(mine[0]["machine"])
        ax.scatter([p["ms_per_image"] for p in mine], [p["AP"] * (100 if percent else 1) for p in mine],
                   color=colours(i % 10), marker=markers[i % len(markers)], s=42, zorder=3,
                   label=f + (f" ({machine})" if machine else ""))
    if log_x:
        ax.set_xscale("log")
    ax.margins(x=0.08, y=0.1)
    _place_labels(fig, ax, points, 100 if percent else 1)
    ax.set_xlabel("ms per image" + (" (log scale)" if log_x else ""))
    ax.set_ylabel("AP (%)" if percent else "AP")
    ax.set_title(title or "Speed vs accuracy of every benchmarked model and setting (cf. LOGO-CAP Fig. 2)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(out)
    try:
        atomic_write_bytes(out, buf.getvalue())
    except OSError as e:
        raise LogocapError(f"cannot write {out}: {e.strerror or e}") from None
    return out
