"""Inference sources: images, folders, globs, .txt lists, videos, streams, and every bad-source case."""

import os
import shutil

import cv2
import numpy as np
import pytest

from utils.data.augment import letterbox
from utils.data.sources import LoadImages, LoadStreams, is_stream_source


def write_video(path, n=30, size=(96, 64), fps=10.0):
    """n frames of (w, h) = size; frame k is filled with grey level 8 * k (readable after compression)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for k in range(n):
        writer.write(np.full((size[1], size[0], 3), 8 * k, np.uint8))
    writer.release()
    return path


@pytest.fixture
def media(tmp_path, root):
    d = tmp_path / "media"
    d.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(root / "data/images" / name, d / name)
    cv2.imwrite(str(d / "gray.png"), np.full((40, 50), 77, np.uint8))
    (d / "notes.md").write_text("not an image")
    return d


def test_single_image(media):
    ds = LoadImages(str(media / "bus.jpg"), img_size=640, stride=32)
    items = list(ds)
    assert len(items) == 1 and len(ds) == 1
    path, im, im0, cap, s = items[0]
    assert path == str(media / "bus.jpg") and cap is None and ds.mode == "image"
    assert im0.shape == (1080, 810, 3) and im.shape == (3, 640, 480) and im.dtype == np.uint8
    ref = letterbox(im0, 640, stride=32, auto=True)[0]
    assert np.array_equal(im, ref.transpose(2, 0, 1)[::-1])  # CHW RGB
    assert s == f"image 1/1 {media / 'bus.jpg'}: "


def test_folder_glob_txt_list_and_mixture(media, tmp_path, monkeypatch):
    names = lambda ds: [os.path.basename(p) for p, *_ in ds]  # noqa: E731
    assert names(LoadImages(str(media))) == ["bus.jpg", "gray.png", "zidane.jpg"]  # .md ignored
    assert names(LoadImages(str(media / "*.jpg"))) == ["bus.jpg", "zidane.jpg"]
    lst = tmp_path / "list.txt"
    lst.write_text(f"{media / 'zidane.jpg'}\nmedia/gray.png\n\n")  # second line relative to the list
    monkeypatch.chdir(media)  # not relative to the working directory
    assert names(LoadImages(str(lst))) == ["zidane.jpg", "gray.png"]
    mixed = LoadImages([str(media / "bus.jpg"), str(media / "*.png")])
    out = list(mixed)
    assert [os.path.basename(p) for p, *_ in out] == ["bus.jpg", "gray.png"]
    assert out[1][2].shape == (40, 50, 3)  # grayscale read as 3-channel BGR
    assert [s.split(" ")[1] for *_, s in out] == ["1/2", "2/2"]


def test_video_frames_progress_and_stride(tmp_path):
    vid = write_video(tmp_path / "clip.mp4", n=30)
    ds = LoadImages(str(vid), img_size=128, stride=32)
    items = list(ds)
    assert len(items) == 30 and ds.mode == "video" and ds.frames == 30 and ds.fps == pytest.approx(10.0)
    path, im, im0, cap, s = items[2]
    assert isinstance(cap, cv2.VideoCapture) and im0.shape == (64, 96, 3) and im.shape == (3, 96, 128)
    assert s == f"video 1/1 (frame 3/30) {vid}: "
    levels = np.array([float(it[2].mean()) for it in items])  # frame k was written at grey 8k
    assert (np.abs(levels - 8 * np.arange(30)) <= 5).all() and (np.diff(levels) > 0).all()
    strided = list(LoadImages(str(vid), img_size=128, vid_stride=3))
    assert len(strided) == 10 and abs(float(strided[0][2].mean()) - 16) <= 3  # frames 3, 6, ... (YOLOv5's grab)
    assert strided[-1][4] == f"video 1/1 (frame 10/10) {vid}: "


def test_images_then_videos(media, tmp_path):
    write_video(media / "a.mp4", n=4)
    write_video(media / "b.avi", n=3)
    ds = LoadImages(str(media), img_size=64)
    kinds = [(os.path.basename(p), cap is not None) for p, _, _, cap, _ in ds]
    assert kinds[:3] == [("bus.jpg", False), ("gray.png", False), ("zidane.jpg", False)]
    assert kinds[3:] == [("a.mp4", True)] * 4 + [("b.avi", True)] * 3


def test_missing_sources_raise_naming_them(media):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        LoadImages(str(media / "nope.jpg"))
    with pytest.raises(FileNotFoundError, match=r"\*\.bmp.*no files match"):
        LoadImages(str(media / "*.bmp"))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        LoadImages(str(media / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="no images or videos found"):
        LoadImages(str(media / "notes.md"))
    empty = media / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images or videos found"):
        LoadImages(str(empty))


def test_corrupt_files_skipped_with_warning(media, log):
    (media / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (media / "broken.mp4").write_bytes(b"not a video at all" * 10)
    out = [os.path.basename(p) for p, *_ in LoadImages(str(media))]
    assert out == ["bus.jpg", "gray.png", "zidane.jpg"]
    assert any("broken.jpg" in m and "cannot be decoded" in m for m in log)
    assert any("broken.mp4" in m for m in log)


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    (tmp_path / "b.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"none of the 2 source file\(s\) could be decoded: .*a\.jpg"):
        list(LoadImages(str(tmp_path)))


def test_is_stream_source():
    for s in ("0", "1", "rtsp://host/stream", "http://cam.local/video.mjpg", "HTTPS://x/y", "list.streams"):
        assert is_stream_source(s), s
    for s in ("image.jpg", "data/images", "video.mp4", "*.jpg", "list.txt", 0.5):
        assert not is_stream_source(s), s


def test_load_streams_reads_frames_in_a_thread(tmp_path):
    vid = write_video(tmp_path / "cam.mp4", n=20)
    ds = LoadStreams(str(vid), img_size=128, stride=32, vid_stride=1)
    assert ds.mode == "stream" and ds.frames == [20] and ds.fps == [pytest.approx(10.0)]
    items = list(ds)
    assert 1 <= len(items) <= 20 and ds.frame == len(items)
    sources, im, im0s, cap, s = items[0]
    assert sources == [str(vid)] and cap is None and s == ""
    assert im.shape == (1, 3, 96, 128) and im.dtype == np.uint8 and len(im0s) == 1 and im0s[0].shape == (64, 96, 3)
    assert all(threads is not None and not threads.is_alive() for threads in ds.threads)


def test_load_streams_bad_sources(tmp_path):
    with pytest.raises(ConnectionError, match="failed to open '.*nope.mp4'"):
        LoadStreams(str(tmp_path / "nope.mp4"))
    with pytest.raises(ConnectionError, match="failed to open '9'"):
        LoadStreams("9")  # no such webcam here
