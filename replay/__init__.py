"""Replay memories in plain numpy (no TensorFlow here, by design).

`ReplayBuffer` stores whole observations (vector envs such as CartPole);
the Atari frame memory stores each 84x84 frame once and rebuilds stacks at
sample time. Both follow `ReplayMemory` (replay/base.py), and both can keep
priorities for prioritized replay (Schaul et al. 2016; `prioritized=True`,
`sample_prioritized`, `update_priorities`).
"""

from replay.base import Batch, PrioritizedBatch, ReplayMemory, ReplayMemoryError, check_fits_in_memory
from replay.frames import FrameReplayBuffer
from replay.uniform import ReplayBuffer

__all__ = ["Batch", "FrameReplayBuffer", "PrioritizedBatch", "ReplayBuffer", "ReplayMemory", "ReplayMemoryError", "check_fits_in_memory"]
