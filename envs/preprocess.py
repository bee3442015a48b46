"""Raw Atari screens to what the Nature network eats, outside an env: gray, 84x84, the last 4 stacked.

`make_env` does this with wrappers while it steps the emulator; a program
that runs its own ALE env (`gym.make("ALE/Breakout-v5")`, RGB 210x160 screens)
and asks a trained agent for actions needs the same steps on each screen it
gets. Gray is the luminance ALE's own grayscale mode gives (measured equal to
OpenCV's RGB2GRAY on Breakout), the resize is OpenCV's INTER_AREA, and the
stack starts full of the episode's first frame, as envs.atari.FrameStack does.
The max over the two last emulator frames of a skip cannot be redone from one
screen per step; with ALE's own frame skip the screens differ from training by
that flicker filter only.
"""

from __future__ import annotations

import cv2
import numpy as np

from envs.base import FRAME_SIZE, FRAME_STACK


class AtariFramePreprocessor:
    """Feed it one screen per env step (RGB `(H, W, 3)` or gray `(H, W)`); it returns the stacked uint8 `(84, 84, 4)`."""

    def __init__(self, size: int = FRAME_SIZE, stack: int = FRAME_STACK):
        self.size, self.stack = size, stack
        self._frames: np.ndarray | None = None

    def reset(self) -> None:
        """Call at the start of each episode: the next screen fills every slot."""
        self._frames = None

    def frame(self, screen: np.ndarray) -> np.ndarray:
        """One screen as a gray `(84, 84)` uint8 frame."""
        screen = np.asarray(screen, dtype=np.uint8)
        if screen.ndim == 3 and screen.shape[-1] == 3:
            screen = cv2.cvtColor(screen, cv2.COLOR_RGB2GRAY)
        if screen.ndim != 2:
            raise ValueError(f"a screen is (H, W, 3) RGB or (H, W) gray, got shape {screen.shape}")
        if screen.shape != (self.size, self.size):
            screen = cv2.resize(screen, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return screen

    def __call__(self, screen: np.ndarray) -> np.ndarray:
        frame = self.frame(screen)
        if self._frames is None:
            self._frames = np.repeat(frame[..., None], self.stack, axis=-1)
        else:
            self._frames[..., :-1] = self._frames[..., 1:].copy()
            self._frames[..., -1] = frame
        return self._frames.copy()
