"""Replay memories in plain numpy (no TensorFlow here, by design).

`ReplayBuffer` stores whole observations (vector envs such as CartPole);
the Atari frame memory stores each 84x84 frame once and rebuilds stacks at
sample time. Both follow `ReplayMemory` (replay/base.py).
"""

from replay.base import Batch, ReplayMemory, ReplayMemoryError, check_fits_in_memory
from replay.frames import FrameReplayBuffer
from replay.uniform import ReplayBuffer

__all__ = ["Batch", "FrameReplayBuffer", "ReplayBuffer", "ReplayMemory", "ReplayMemoryError", "check_fits_in_memory"]
