"""Classic-control envs seen as pixels: gray 84x84 frames, the last 4 stacked.

The chapter's point about Breakout holds for CartPole too: one frame shows
where the pole is but not where it is going, so the state is a stack of
frames. The frames come from the env's own renderer (CartPole: 600x400 RGB),
go through the same kind of wrappers as Atari (`ResizeFrame`, `FrameStack`)
and end in the same frame replay memory and Nature CNN.
"""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np

from envs.atari import FRAME_SIZE, FRAME_STACK, FrameStack, ResizeFrame


class GrayRender(gym.ObservationWrapper):
    """Replace the observation by the rendered frame in gray: the agent sees only pixels."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        frame = self._frame()
        self.observation_space = gym.spaces.Box(0, 255, frame.shape, np.uint8)

    def _frame(self) -> np.ndarray:
        if self.env.unwrapped.state is None:  # CartPole renders nothing before its first reset
            self.env.reset()
        return cv2.cvtColor(self.env.render(), cv2.COLOR_RGB2GRAY)

    def observation(self, observation) -> np.ndarray:
        return self._frame()


def wrap_pixels(env: gym.Env, frame_stack: int = FRAME_STACK) -> gym.Env:
    """Gray, resized, stacked frames `uint8 (84, 84, frame_stack)` from an env made with render_mode="rgb_array"."""
    if env.render_mode != "rgb_array":
        raise ValueError(f"pixel observations need render_mode='rgb_array', got {env.render_mode!r}")
    return FrameStack(ResizeFrame(GrayRender(env), FRAME_SIZE), frame_stack)
