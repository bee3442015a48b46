"""Reading videos back in tests: every frame, through opencv's decoder (the one users' tools often use)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_video(path: Path) -> list[np.ndarray]:
    """All frames of `path` as BGR arrays, in order; fails if cv2 cannot open it."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} is not a readable video"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames
