"""Writing videos: H.264 mp4 files that browsers play, finalized even when play is interrupted.

`VideoRecorder` takes RGB frames or pygame Surfaces (agent/rollout/hud.py draws them)
one by one; `check_writable_file` / `check_writable_dir` prove an output path
can be written before any episode is played.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np
import pygame

from common.errors import UserError
from agent.rollout.hud import surface_to_rgb


def check_writable_file(path: str | Path, what: str) -> Path:
    """Create the parent folder and prove it can be written before any episode is played.

    Raises:
        UserError: if the folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {str(path)!r} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {what} {str(path)!r}: {e.strerror or e}") from None
    return path


def check_writable_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    check_writable_file(path / "probe", what)
    return path


class VideoRecorder:
    """An H.264 (yuv420p) mp4 that browsers play, streamed to ffmpeg and finalized even when play is interrupted.

    Frames are piped one by one (never a whole episode in memory) to the ffmpeg
    binary that the `imageio-ffmpeg` wheel ships, which encodes them with
    libx264 into a hidden temp file next to `path`. A small writer thread
    feeds the pipe, so a Ctrl-C in the main thread can never land inside a
    pipe write (imageio-ffmpeg kills ffmpeg then, leaving a file without its
    index). `close()` (call it in a `finally`, or use `with`) ends the stream,
    waits for ffmpeg to write the index (moved to the front, `+faststart`, so
    a browser can start playing before the download ends) and renames the
    file into place. A file is created only once a frame has been written.
    yuv420p needs an even width and height: odd sizes are padded with black.

    Without imageio-ffmpeg, or when its ffmpeg cannot start or lacks libx264,
    `cv2.VideoWriter` writes MPEG-4 Part 2 (fourcc mp4v) instead, which
    desktop players play but browsers do not; one warning line on stderr says
    so and why.
    """

    QUEUE_FRAMES = 4  # frames waiting for ffmpeg at most: bounds memory, lets encoding overlap play
    _libx264: dict[str, bool] = {}  # ffmpeg executable -> has the libx264 encoder (asked once per process)

    def __init__(self, path: str | Path, fps: float):
        self.path = check_writable_file(path, "video")
        self.fps = float(fps)
        self.tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix or '.mp4'}")
        self.writer: cv2.VideoWriter | None = None  # the mp4v fallback
        self.size: tuple[int, int] | None = None  # (width, height) as written
        self.frames = 0
        self.codec: str | None = None  # "h264" or "mp4v" once the first frame opened a writer
        self._queue: queue.Queue[bytes | None] | None = None  # frames for the ffmpeg writer thread
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None  # what stopped the writer thread

    def write(self, rgb: np.ndarray) -> None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"a video frame is (H, W, 3) uint8 RGB, got shape {rgb.shape} dtype {rgb.dtype}")
        h, w = rgb.shape[:2]
        if self._thread is None and self.writer is None:
            self.size = (w + w % 2, h + h % 2)  # yuv420p and mp4v want even sizes; pad, never crop
            self._open()
        if (w, h) != self.size:
            rgb = cv2.copyMakeBorder(rgb, 0, self.size[1] - h, 0, self.size[0] - w, cv2.BORDER_CONSTANT, value=0)
        if self._thread is not None:
            if self._error is not None:
                raise self._fail()
            self._queue.put(np.ascontiguousarray(rgb).tobytes())  # a copy: the caller may reuse its buffer
        else:
            self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def write_surface(self, surface: pygame.Surface) -> None:
        self.write(surface_to_rgb(surface))

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None if no frame was written.

        Raises:
            UserError: if ffmpeg failed and there is no playable file.
        """
        if self._thread is not None:
            error = self._stop_thread()
            if error is None and not (self.tmp.is_file() and self.tmp.stat().st_size > 0):
                error = RuntimeError("it wrote no file")
            if error is not None:
                raise self._fail(error)
        elif self.writer is not None:
            self.writer.release()
            self.writer = None
        else:
            return None
        os.replace(self.tmp, self.path)
        return self.path

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _open(self) -> None:
        reason = self._open_h264()
        if reason is None:
            self.codec = "h264"
            return
        print(f"warning: video {str(self.path)!r} is MPEG-4 Part 2 (mp4v), which browsers do not play: {reason}", file=sys.stderr)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not self.writer.isOpened():
            self.writer = None
            raise UserError(f"cannot open a video writer for {str(self.path)!r} ({reason}, and opencv has no mp4v encoder or the path is not writable)")
        self.codec = "mp4v"

    def _open_h264(self) -> str | None:
        """Start ffmpeg and the thread that feeds it; None, or why H.264 cannot be written."""
        try:
            import imageio_ffmpeg
        except ImportError:
            return "imageio-ffmpeg is not installed (pip install imageio-ffmpeg)"
        try:
            exe = imageio_ffmpeg.get_ffmpeg_exe()
            if exe not in VideoRecorder._libx264:
                encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60).stdout
                VideoRecorder._libx264[exe] = " libx264 " in encoders
            if not VideoRecorder._libx264[exe]:
                return f"the ffmpeg at {exe} has no libx264 encoder"
            faststart = ["-movflags", "+faststart"] if self.tmp.suffix.lower() in (".mp4", ".m4v", ".mov") else []
            gen = imageio_ffmpeg.write_frames(
                str(self.tmp), self.size, fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
                quality=None,  # libx264's own default (crf 23) keeps the HUD text crisp
                macro_block_size=2,  # the size is already even: no rescaling by ffmpeg
                ffmpeg_log_level="error", output_params=faststart,
            )
            gen.send(None)  # runs up to the first `yield`: ffmpeg is started
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            return f"imageio-ffmpeg's ffmpeg cannot start ({e})"
        self._queue = queue.Queue(maxsize=self.QUEUE_FRAMES)
        self._error = None
        self._thread = threading.Thread(target=self._feed, args=(gen,), name=f"ffmpeg {self.path.name}", daemon=True)
        self._thread.start()
        return None

    def _feed(self, gen) -> None:
        """The writer thread: frames from the queue to ffmpeg's stdin until None; then ffmpeg finishes the file."""
        try:
            while (frame := self._queue.get()) is not None:
                gen.send(frame)
        except BaseException as e:  # ffmpeg died (its own message went to stderr)
            self._error = e
            while self._queue.get() is not None:  # keep taking frames so write() never blocks
                pass
        finally:
            gen.close()  # closes ffmpeg's stdin and waits while it writes the index

    def _stop_thread(self) -> BaseException | None:
        self._queue.put(None)
        self._thread.join()
        self._thread = self._queue = None
        return self._error

    def _fail(self, error: BaseException | None = None) -> UserError:
        """Stop the writer, drop the temp file; the one-line error to raise."""
        if self._thread is not None:
            error = self._stop_thread() or error
        self.tmp.unlink(missing_ok=True)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return UserError(f"ffmpeg failed writing video {str(self.path)!r}: {first_line}")

