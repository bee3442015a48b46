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

from envs.atari import FrameStack, ResizeFrame
from envs.base import FRAME_SIZE, FRAME_STACK, PIXEL_VIEWS


class GrayRender(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Replace the observation by the rendered frame in gray: the agent sees only pixels."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"GrayRender needs an env made with render_mode='rgb_array', got {env.render_mode!r}")
        # The observations are rendered frames, so "rgb_array" is the one render mode this env
        # has; gymnasium's tools (check_env, spec.make) read the modes to try from here.
        self.metadata = {**env.metadata, "render_modes": ["rgb_array"]}
        frame = self._frame()
        self.observation_space = gym.spaces.Box(0, 255, frame.shape, np.uint8)

    def _frame(self) -> np.ndarray:
        if self.env.unwrapped.state is None:  # CartPole renders nothing before its first reset
            self.env.reset()
        return cv2.cvtColor(self.env.render(), cv2.COLOR_RGB2GRAY)

    def observation(self, observation) -> np.ndarray:
        return self._frame()


class CartWindow(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """CartPole only: the part of the frame where the pole is, following the cart.

    Squeezing the whole 600x400 frame into 84x84 leaves a pole 1-2 pixels
    wide whose tip moves 3 pixels before the episode fails. This window
    (rows 160-320, 240 columns around the cart, as in PyTorch's DQN tutorial)
    is resized 2.9x less, so angle and angular velocity show. The cart is
    found from the pixels themselves (its black body below the track), not
    from the env's state; near the edges the window stops at the frame's
    border, so the cart moves off-centre as it nears the x limit.
    """

    ROWS = (160, 320)  # pole top (upright: row ~172) to the cart's bottom (row 314)
    WIDTH = 240  # the cart (50) and the pole tip's reach at the 12 degree limit (+-26), with room to see motion
    BODY_ROWS = (306, 315)  # only the cart is drawn here

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        h, w = env.observation_space.shape
        if (h, w) != (400, 600):
            raise ValueError(f"CartWindow expects CartPole's 600x400 frames, got {w}x{h}")
        self.observation_space = gym.spaces.Box(0, 255, (self.ROWS[1] - self.ROWS[0], self.WIDTH), np.uint8)

    def observation(self, frame: np.ndarray) -> np.ndarray:
        body = np.flatnonzero((frame[self.BODY_ROWS[0]:self.BODY_ROWS[1]] < 64).any(axis=0))
        centre = int(body.mean()) if len(body) else frame.shape[1] // 2  # off screen: the cart has left, the episode ends
        left = min(max(centre - self.WIDTH // 2, 0), frame.shape[1] - self.WIDTH)
        return np.ascontiguousarray(frame[self.ROWS[0]:self.ROWS[1], left:left + self.WIDTH])


class CartTrackWindow(CartWindow):
    """`CartWindow` with the whole track underneath: where the cart is, and (across the stack) how fast it goes.

    Inside the window the cart stays in the middle and the track is a plain
    line, so the cart's position and velocity do not show until the window
    stops at the frame's edge: an agent can balance the pole but not see
    itself drift towards the x limit, which ends most of its games. A strip
    under the window shows the cart's rows of the whole frame, 600 columns
    squeezed into the window's 240 (`cv2.INTER_AREA`), each row repeated so
    the strip keeps `STRIP_ROWS` rows after the resize to 84x84. At 84
    columns for 4.8 m a step moves the cart 0.2 pixel at 0.5 m/s, so its
    velocity shows only in the grey levels of the blob's edges across the stack.
    """

    STRIP_ROWS = 24  # ~11 of the 84 rows after the resize: the cart is a ~7x11 blob on it

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, (self.ROWS[1] - self.ROWS[0] + self.STRIP_ROWS, self.WIDTH), np.uint8)

    def observation(self, frame: np.ndarray) -> np.ndarray:
        body = frame[self.BODY_ROWS[0]:self.BODY_ROWS[1]]
        track = cv2.resize(body, (self.WIDTH, len(body)), interpolation=cv2.INTER_AREA)
        strip = np.repeat(track, -(-self.STRIP_ROWS // len(track)), axis=0)[:self.STRIP_ROWS]
        return np.concatenate([super().observation(frame), strip], axis=0)


# Each name of envs.base.PIXEL_VIEWS (the one list, which make_env and the config check) -> the wrapper that crops
# the gray frame; tests/test_pixels.py checks that the two agree.
VIEWS = {"full": None, "cart": CartWindow, "cart_track": CartTrackWindow}


def wrap_pixels(env: gym.Env, frame_stack: int = FRAME_STACK, view: str = "full") -> gym.Env:
    """Gray, resized, stacked frames `uint8 (84, 84, frame_stack)` from an env made with render_mode="rgb_array".

    Args:
        view: "full" frame, "cart" (`CartWindow`) or "cart_track" (`CartTrackWindow`); the last two CartPole only.
    """
    if env.render_mode != "rgb_array":
        raise ValueError(f"pixel observations need render_mode='rgb_array', got {env.render_mode!r}")
    if view not in PIXEL_VIEWS:
        raise ValueError(f"view must be one of {list(PIXEL_VIEWS)}, got {view!r}")
    env = GrayRender(env)
    if VIEWS[view] is not None:
        env = VIEWS[view](env)
    return FrameStack(ResizeFrame(env, FRAME_SIZE), frame_stack)
