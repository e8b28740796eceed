"""Sources: image reading and conversion, size limits, source kinds, videos and cameras."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from logocap import sources
from logocap.sources import (ImageSource, VideoSource, read_image, resolve_source, to_rgb_uint8)
from logocap.utils import LogocapError


def write_video(path, n=12, size=(48, 64), fps=10.0):
    """A small video whose frame i is filled with grey level 10 * i (so frames can be told apart)."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((h, w, 3), (10 * i) % 256, np.uint8))
    writer.release()
    return path


def png_claiming_size(path, w, h):
    """A valid 1x1 PNG whose header then claims w x h pixels (no memory needed to make it)."""
    ok, buf = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    data = bytearray(buf.tobytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_array_conversions():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert to_rgb_uint8(rgb) is not None and np.array_equal(to_rgb_uint8(rgb), rgb)
    gray = rgb[..., 0]
    assert np.array_equal(to_rgb_uint8(gray), np.repeat(gray[..., None], 3, 2))
    assert np.array_equal(to_rgb_uint8(gray[..., None]), np.repeat(gray[..., None], 3, 2))
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], 2)
    assert np.array_equal(to_rgb_uint8(rgba), rgb)
    sixteen = rgb.astype(np.uint16) * 257  # 16-bit version of the same picture
    assert np.array_equal(to_rgb_uint8(sixteen), rgb)
    assert to_rgb_uint8(np.ones((3, 3), bool)).max() == 255
    assert to_rgb_uint8(np.zeros((1, 1, 3), np.uint8)).shape == (1, 1, 3)  # 1x1 is fine
    with pytest.raises(LogocapError, match="uint8"):
        to_rgb_uint8(rgb.astype(np.float32))
    with pytest.raises(LogocapError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(LogocapError, match="empty"):
        to_rgb_uint8(np.zeros((0, 4, 3), np.uint8))


def test_size_limits_name_the_size():
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # no memory used
    with pytest.raises(LogocapError, match=r"20000x20000 = 400 megapixels, over the limit of 100"):
        to_rgb_uint8(huge)
    with pytest.raises(LogocapError, match=r"200x2 pixels, a strip longer than 32:1"):
        to_rgb_uint8(np.zeros((2, 200, 3), np.uint8))


def test_read_image_bad_files(tmp_path):
    with pytest.raises(LogocapError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(LogocapError, match="folder"):
        read_image(tmp_path)
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(LogocapError, match=r"empty image file \(0 bytes\)"):
        read_image(tmp_path / "zero.jpg")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(LogocapError, match="cannot decode"):
        read_image(tmp_path / "text.png")
    # refused from the header, before decoding 400 megapixels
    with pytest.raises(LogocapError, match="20000x20000 = 400 megapixels"):
        read_image(png_claiming_size(tmp_path / "huge.png", 20000, 20000))


def test_read_image_converts_gray_rgba_16bit(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    bgr = rgb[..., ::-1]
    cv2.imwrite(str(tmp_path / "rgb.png"), bgr)
    assert np.array_equal(read_image(tmp_path / "rgb.png"), rgb)
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[..., 0])
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.repeat(rgb[..., :1], 3, 2))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.concatenate([bgr, np.full((6, 9, 1), 7, np.uint8)], 2))
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 257)
    got = read_image(tmp_path / "deep.png")
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - rgb).max() <= 1
    cv2.imwrite(str(tmp_path / "one.png"), np.zeros((1, 1, 3), np.uint8))
    assert read_image(tmp_path / "one.png").shape == (1, 1, 3)


def test_resolve_source_kinds(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.jpg", "d/sub/b.png", "d/a.jpg.poses.jpg"):  # the last: our own drawing
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "d" / "notes.txt").write_text("x")
    folder = resolve_source(tmp_path / "d")
    assert isinstance(folder, ImageSource) and not folder.single
    assert [p.name for p in folder.items] == ["a.jpg", "b.png"]
    one = resolve_source(str(tmp_path / "d" / "a.jpg"))
    assert one.single and len(one) == 1
    assert [p.name for p in resolve_source(str(tmp_path / "d" / "**" / "*.png")).items] == ["b.png"]
    listed = resolve_source([tmp_path / "d" / "a.jpg", img, tmp_path / "d" / "sub"])
    assert len(listed) == 3 and not listed.single
    assert resolve_source(img).single and len(resolve_source(np.stack([img, img]))) == 2
    with pytest.raises(LogocapError, match="no such file or folder"):
        resolve_source(str(tmp_path / "nope.jpg"))
    with pytest.raises(LogocapError, match="no image files match"):
        resolve_source(str(tmp_path / "*.tif"))
    with pytest.raises(LogocapError, match="empty"):
        resolve_source([])
    with pytest.raises(LogocapError, match="not an image source"):
        resolve_source({"a": 1})
    video = resolve_source(write_video(tmp_path / "v.avi"))
    assert isinstance(video, VideoSource)
    video.close()


def test_video_source_frames_every_and_max(tmp_path):
    path = write_video(tmp_path / "v.avi", n=12)
    with VideoSource(str(path)) as v:
        assert v.frame_count == 12 and v.fps == pytest.approx(10.0)
        frames = list(v.frames())
    assert [i for i, _ in frames] == list(range(12))
    assert frames[3][1].shape == (48, 64, 3)
    assert abs(int(frames[3][1].mean()) - 30) <= 3  # frame 3 is grey level 30 (JPEG-coded)
    with VideoSource(str(path)) as v:
        assert v.expected_frames(every=5) == 3
        assert [i for i, _ in v.frames(every=5)] == [0, 5, 10]
    with VideoSource(str(path)) as v:
        assert [i for i, _ in v.frames(every=2, max_frames=4)] == [0, 2, 4, 6]


def test_video_source_errors(tmp_path):
    with pytest.raises(LogocapError, match="not found"):
        VideoSource(str(tmp_path / "missing.mp4"))
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(LogocapError, match=r"0 bytes"):
        VideoSource(str(tmp_path / "zero.mp4"))
    (tmp_path / "text.avi").write_bytes(b"this is not a video" * 100)
    with pytest.raises(LogocapError, match="cannot open video|gives no frames"):
        VideoSource(str(tmp_path / "text.avi"))
    with pytest.raises(LogocapError, match="camera 63 cannot be opened"):
        VideoSource(63)
    with pytest.raises(LogocapError, match="camera 63"):
        resolve_source("63")  # digits that are not a file: a camera index


def test_limits_are_module_constants(monkeypatch):
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(LogocapError, match="over the limit"):
        to_rgb_uint8(np.zeros((10, 10, 3), np.uint8))
