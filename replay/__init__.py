"""Replay memories in plain numpy (no TensorFlow here, by design).

`ReplayBuffer` stores whole observations (vector envs such as CartPole);
the Atari frame memory stores each 84x84 frame once and rebuilds stacks at
sample time.
"""

from replay.frames import FrameReplayBuffer
from replay.uniform import Batch, ReplayBuffer, ReplayMemoryError, check_fits_in_memory

__all__ = ["Batch", "FrameReplayBuffer", "ReplayBuffer", "ReplayMemoryError", "check_fits_in_memory"]
