"""VideoRecorder writes H.264 (yuv420p) mp4s that browsers play, streamed through imageio-ffmpeg's ffmpeg.

Each file is checked with the ffmpeg binary that the imageio-ffmpeg wheel
ships (it has no ffprobe: `ffmpeg -i file` prints the stream line) and read
back frame by frame. The cv2 mp4v writer stays as the fallback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import imageio_ffmpeg  # a dependency (pyproject.toml): without it these tests fail, they are not skipped
import numpy as np
import pytest

from common.errors import UserError
from agent.rollout.video import VideoRecorder
from videos import read_video

WIDTH, HEIGHT = 161, 99  # odd on purpose: yuv420p needs even sizes, so the recorder pads to 162x100
PADDED = (WIDTH + 1, HEIGHT + 1)
LEVELS = [20 + 10 * i for i in range(20)]  # one flat gray level per frame: order and content are checkable


def gray_frame(level: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), level, np.uint8)


def write_clip(path: Path, levels=LEVELS, fps: float = 25) -> VideoRecorder:
    recorder = VideoRecorder(path, fps)
    try:
        for level in levels:
            recorder.write(gray_frame(level))
    finally:
        assert recorder.close() == path
    return recorder


def stream_info(path: Path) -> str:
    """The `Stream #0:0 ... Video: ...` line that `ffmpeg -i` prints (on stderr; it exits 1 for want of an output)."""
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if "Video:" in line]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def read_rgb_frames(path: Path) -> tuple[dict, list[np.ndarray]]:
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    return meta, frames


def assert_levels(frames: list[np.ndarray], levels=LEVELS) -> None:
    """Frame i shows gray level i inside the written area and black in the padding (lossy codec: a few levels)."""
    assert len(frames) == len(levels)
    for frame, level in zip(frames, levels):
        assert frame.shape == (PADDED[1], PADDED[0], 3)
        assert abs(float(frame[:HEIGHT, :WIDTH].mean()) - level) < 4, (frame[:HEIGHT, :WIDTH].mean(), level)
        assert float(frame[:HEIGHT - 4, -1].mean()) < level / 2 + 8, "the padded column is black, not a stretched image"
        assert float(frame[-1, :WIDTH - 4].mean()) < level / 2 + 8, "the padded row is black, not a stretched image"


def test_writes_h264_yuv420p_that_reads_back_frame_by_frame(tmp_path, capfd):
    out = tmp_path / "clip.mp4"
    recorder = write_clip(out)
    assert recorder.codec == "h264" and recorder.frames == len(LEVELS) and recorder.size == PADDED
    assert "MPEG-4 Part 2" not in capfd.readouterr().err

    info = stream_info(out)
    assert re.search(r"Video: h264\b", info), info
    assert "yuv420p" in info and f"{PADDED[0]}x{PADDED[1]}" in info, info
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "+faststart: the index comes first, so browsers stream it"

    meta, frames = read_rgb_frames(out)
    assert tuple(meta["size"]) == PADDED and meta["fps"] == pytest.approx(25)
    assert_levels(frames)
    # what tests/test_play.py and people use to read videos back: opencv's bundled ffmpeg decodes H.264
    bgr = read_video(out)
    assert_levels(bgr)
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(25)


def test_falls_back_to_mp4v_without_imageio_ffmpeg(tmp_path, monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` raises ImportError
    out = tmp_path / "fallback.mp4"
    recorder = write_clip(out)
    assert recorder.codec == "mp4v"
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "MPEG-4 Part 2" in line]
    assert len(warnings) == 1 and "imageio-ffmpeg is not installed" in warnings[0], err
    monkeypatch.undo()

    assert re.search(r"Video: mpeg4\b", stream_info(out))
    assert_levels(read_video(out))
    assert not list(tmp_path.glob(".*"))


def test_falls_back_to_mp4v_when_ffmpeg_cannot_start(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-such-ffmpeg"))
    out = tmp_path / "fallback.mp4"
    assert write_clip(out).codec == "mp4v"
    err = capfd.readouterr().err
    assert "MPEG-4 Part 2" in err and "cannot start" in err, err
    assert len(read_video(out)) == len(LEVELS)


def test_no_frame_no_file(tmp_path):
    out = tmp_path / "empty.mp4"
    with VideoRecorder(out, 30) as recorder:
        pass
    assert recorder.close() is None and recorder.frames == 0
    assert list(tmp_path.iterdir()) == []


def test_the_temp_file_is_renamed_into_place(tmp_path):
    out = tmp_path / "clip.mp4"
    recorder = VideoRecorder(out, 30)
    recorder.write(gray_frame(100))
    assert recorder.tmp.parent == tmp_path and recorder.tmp.name.startswith(".") and not out.exists()
    recorder.close()
    assert out.is_file() and not recorder.tmp.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_an_exception_mid_recording_still_finalizes_the_file(tmp_path):
    out = tmp_path / "cut.mp4"
    with pytest.raises(RuntimeError, match="mid-episode"):
        with VideoRecorder(out, 30) as recorder:
            for level in LEVELS[:7]:
                recorder.write(gray_frame(level))
            raise RuntimeError("mid-episode")
    assert "h264" in stream_info(out)
    _, frames = read_rgb_frames(out)
    assert_levels(frames, LEVELS[:7])
    assert not list(tmp_path.glob(".*"))


def test_ffmpeg_failing_is_one_clear_error_and_leaves_nothing(tmp_path, capfd):
    out = tmp_path / "clip.no-such-container"  # ffmpeg cannot choose an output format and exits
    recorder = VideoRecorder(out, 30)
    with pytest.raises(UserError) as e:
        try:
            for level in LEVELS * 10:
                recorder.write(gray_frame(level))
        finally:
            recorder.close()
    assert "ffmpeg failed writing video" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
    assert recorder.close() is None


def test_rejects_frames_that_are_not_rgb_uint8(tmp_path):
    recorder = VideoRecorder(tmp_path / "x.mp4", 30)
    with pytest.raises(ValueError, match="uint8 RGB"):
        recorder.write(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        recorder.write(np.zeros((10, 10, 4), np.uint8))
    assert recorder.close() is None and not list(tmp_path.iterdir())
