"""Replay memories in plain numpy (no TensorFlow here, by design).

`ReplayBuffer` stores whole observations (vector envs such as CartPole);
the Atari frame memory stores each 84x84 frame once and rebuilds stacks at
sample time; the sequence memory keeps whole episodes' steps for a recurrent
Q-network (R2D2's sequences with stored state). All follow `ReplayMemory`
(replay/base.py), and all can keep priorities for prioritized replay (Schaul et al. 2016; `prioritized=True`,
`sample_prioritized`, `update_priorities`).
"""

from replay.base import Batch, PrioritizedBatch, ReplayMemory, ReplayMemoryError, check_fits_in_memory
from replay.frames import FrameReplayBuffer
from replay.sequences import SequenceBatch, SequenceReplay
from replay.uniform import ReplayBuffer

__all__ = ["Batch", "FrameReplayBuffer", "PrioritizedBatch", "ReplayBuffer", "ReplayMemory", "ReplayMemoryError", "SequenceBatch",
           "SequenceReplay", "check_fits_in_memory"]
