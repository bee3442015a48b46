"""What every module of envs shares, with nothing heavy to import: the modes, the error, frame and view names.

`envs/__init__.py` re-exports `MODES` and `EnvError`, so callers outside envs keep
`from envs import EnvError`; modules inside envs import from here, so none of
them imports the package that imports them. No gymnasium, cv2 or ale-py here:
the config (`agent.core.config`) checks `pixel_view` against `PIXEL_VIEWS`.
"""

from __future__ import annotations

MODES = ("train", "eval", "play")

FRAME_SIZE = 84  # Mnih et al. (2015): 84x84 gray frames (Atari, pixel envs, `envs.preprocess`)
FRAME_STACK = 4  # Mnih et al. (2015): the last 4 frames make a state

# What a pixel env shows (`envs.pixels.VIEWS` maps each to its crop): the "full" frame, "cart" (CartPole:
# a window that follows the cart) or "cart_track" (that window over a strip of the whole track).
PIXEL_VIEWS = ("full", "cart", "cart_track")

# What part of a vector observation the agent sees (`envs.observe.ObservePositions`): the "full" state, or only its
# "position" entries, the velocities hidden, so that one observation no longer tells the state (a POMDP).
OBSERVATIONS = ("full", "position")


class EnvError(ValueError):
    """The env id is unknown or the env cannot be used by a DQN."""
