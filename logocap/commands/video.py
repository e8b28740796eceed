"""``logocap video SOURCE``: poses on a video file, stream URL or camera, frame by frame.

Writes ``<name>.poses.mp4`` (skeletons, each person's score, an FPS / latency overlay) and
``<name>.poses.jsonl`` (one JSON record per processed frame: frame index, time, image size,
latency, poses in original pixels) next to the video, or under ``--out``; a camera ``N`` is named
``cameraN``. ``--every N`` processes every N-th frame only (the others are skipped undecoded).
A progress bar shows frames per second; ``--show`` opens a window where a display exists (``q``
or Esc stops). Ctrl-C stops after the current frame and leaves a playable mp4 and a complete
jsonl of the frames done (a second Ctrl-C aborts at once; the mp4 is still closed properly).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

from ..utils import LogocapError
from .common import (add_device_arguments, add_test_arguments, add_weights_arguments, check_device,
                     check_out)

HELP = "predict poses on a video or camera: annotated mp4 with an FPS overlay + JSON lines per frame"

OUTPUT_TAG = ".poses"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="video file, stream URL, or camera index (0, 1, ...)")
    add_weights_arguments(p)
    p.add_argument("--out", default=None, help="output folder; none = next to the video "
                   "(the current folder for a camera)")
    p.add_argument("--every", type=int, default=1, help="process every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many processed frames")
    p.add_argument("--batch", type=int, default=1, help="frames per forward pass (more = higher "
                   "throughput, higher latency)")
    add_test_arguments(p)
    add_device_arguments(p)
    p.add_argument("--show", action="store_true", help="show the annotated frames in a window "
                   "(needs a display and an OpenCV build with a GUI)")


def output_paths(source_name: str, camera: bool, out: str | None) -> tuple[Path, Path]:
    """(mp4, jsonl) for a source: ``<file name>.poses.mp4`` / ``.jsonl`` next to it or in ``out``."""
    if camera or "://" in source_name:
        name = source_name if camera else "stream"
        folder = Path(out) if out else Path(".")
    else:
        name = Path(source_name).name
        folder = Path(out) if out else Path(source_name).parent
    stem = name + OUTPUT_TAG
    return folder / (stem + ".mp4"), folder / (stem + ".jsonl")


def _display_problem() -> str | None:
    """Why no window can be shown here, or None when one can."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    import cv2
    try:
        cv2.namedWindow("logocap video", cv2.WINDOW_NORMAL)
    except cv2.error:
        return "this OpenCV build has no GUI (opencv-python-headless)"
    return None


class _Stopper:
    """First Ctrl-C: finish the current frame, then stop cleanly. Second: abort (KeyboardInterrupt)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this frame (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def run(args) -> int:
    import cv2
    from tqdm import tqdm

    from ..api import load
    from ..sources import VideoSource, resolve_source
    from ..viz import draw_poses, draw_text_box

    if args.weights is None and args.onnx is None:
        raise LogocapError("--weights FILE is required (or --onnx FILE for an exported model)")
    check_device(args.device)
    check_out(args.out)
    if args.every < 1:
        raise LogocapError(f"--every must be >= 1, got {args.every}")
    if args.max_frames is not None and args.max_frames < 1:
        raise LogocapError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.batch < 1:
        raise LogocapError(f"--batch must be >= 1, got {args.batch}")
    if args.size is not None and (args.size < 64 or args.size % 64):
        raise LogocapError(f"--size must be a multiple of 64 (>= 64), got {args.size}")
    source = int(args.source) if args.source.isdigit() and not Path(args.source).exists() else args.source
    src = resolve_source(source)
    if not isinstance(src, VideoSource):
        raise LogocapError(f"{args.source} is not a video or a camera (use `logocap predict` for images)")
    try:
        options = {"flip": False} if args.no_flip else {}
        if args.precision:
            options["precision"] = args.precision
        model = load(args.model or args.weights or args.onnx, weights=args.weights if args.model else None,
                     backend=args.backend, onnx=args.onnx,
                     device=args.device, batch=args.batch, input_size=args.size, **options)
        mp4_path, jsonl_path = output_paths(src.name, src.camera, args.out)
        try:
            mp4_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LogocapError(f"cannot create the output folder {mp4_path.parent}: "
                               f"{e.strerror or e}") from None
        show = args.show
        if show:
            problem = _display_problem()
            if problem:
                print(f"warning: --show ignored: {problem}", file=sys.stderr)
                show = False
    except BaseException:
        src.close()
        raise

    out_fps = (src.fps or 30.0) / args.every
    total = src.expected_frames(args.every, args.max_frames)
    header = f"{model.name} @{model.input_size} {model.device.type}" + ("" if args.no_flip else " flip")
    writer = jsonl = None
    frames, t_start = 0, time.perf_counter()
    stamps: deque = deque(maxlen=30)  # end times of the last frames: the overlay's FPS
    latencies: list[float] = []
    bar = tqdm(total=total, desc="video", unit="frame", file=sys.stderr, dynamic_ncols=True)
    results = model(src, stream=True, every=args.every, max_frames=args.max_frames, keep_images=True)
    with _Stopper() as stopper:
        try:
            for poses in results:
                frame = poses.image
                if writer is None:  # opened on the first frame: nothing is created before
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(mp4_path), cv2.VideoWriter_fourcc(*"mp4v"), out_fps, (w, h))
                    if not writer.isOpened():
                        raise LogocapError(f"cannot write the video {mp4_path} (mp4v codec missing?)")
                    jsonl = open(jsonl_path, "w", encoding="utf-8")
                latency = poses.speed["inference"] + poses.speed.get("preprocess", 0.0)
                latencies.append(latency)
                stamps.append(time.perf_counter())
                fps = ((len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1
                       and stamps[-1] > stamps[0] else 1000.0 / max(latency, 1e-3))
                drawn = draw_poses(frame, poses, model.meta, args.threshold)
                draw_text_box(drawn, [f"{fps:5.1f} FPS   {latency:6.1f} ms/frame",
                                      f"frame {poses.frame_index}   {len(poses)} {'person' if len(poses) == 1 else 'people'}", header])
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                record = {"frame": poses.frame_index,
                          "time_s": round(poses.frame_index / src.fps, 4) if src.fps else None,
                          "image_size": list(poses.image_size), "latency_ms": round(latency, 2),
                          "poses": poses.to_dict()["poses"]}
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
                frames += 1
                bar.update(1)
                bar.set_postfix_str(f"{latency:.0f} ms/frame", refresh=False)
                if show:
                    cv2.imshow("logocap video", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                    if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                        break
                if stopper.requested:
                    break
        finally:
            bar.close()
            results.close()  # releases the capture
            if writer is not None:
                writer.release()  # writes the mp4 index: the file plays, however the loop ended
            if jsonl is not None:
                jsonl.close()
            if show:
                cv2.destroyAllWindows()
    elapsed = time.perf_counter() - t_start
    if frames == 0:
        raise LogocapError(f"no frames were processed from {src.name}")
    mean_latency = sum(latencies) / len(latencies)
    print(f"{'interrupted: ' if stopper.requested else ''}{frames} frames in {elapsed:.1f} s "
          f"({frames / elapsed:.1f} frames/s, model {mean_latency:.1f} ms/frame)")
    print(f"wrote {mp4_path}")
    print(f"wrote {jsonl_path}")
    return 130 if stopper.requested else 0
