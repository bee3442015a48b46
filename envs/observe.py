"""Hide an env's velocities: `observe="position"` makes a partially observed control task (a POMDP).

With CartPole's cart velocity and pole angular velocity removed, one observation no longer says where the
pole is going: a feed-forward Q-network on single observations cannot balance it for long, stacked
observations (two positions give a velocity) or a recurrent Q-network can. This is the "flickering" /
velocity-masked test bed of recurrent value learning (Hausknecht & Stone 2015; Meng et al. 2021's masked
CartPole).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.base import EnvError

# For each env family, the indices of its observation's position entries (gymnasium's documented layouts).
POSITION_ENTRIES: dict[str, tuple[int, ...]] = {
    "CartPole": (0, 2),  # cart position, pole angle (dropped: cart velocity 1, pole angular velocity 3)
    "Acrobot": (0, 1, 2, 3),  # cos/sin of both joint angles (dropped: the two angular velocities)
    "MountainCar": (0,),  # car position (dropped: velocity)
    "LunarLander": (0, 1, 4, 6, 7),  # x, y, angle, both legs' contact (dropped: the linear and angular velocities)
}


def position_entries(env_id: str) -> tuple[int, ...]:
    """The observation entries `observe="position"` keeps for `env_id`.

    Raises:
        EnvError: an env whose positions this module does not know.
    """
    family = env_id.split("-v")[0]
    if family not in POSITION_ENTRIES:
        known = ", ".join(f"{name}-v*" for name in POSITION_ENTRIES)
        raise EnvError(f"observe=\"position\" knows the position entries of {known} only; use observe=\"full\" for {env_id}")
    return POSITION_ENTRIES[family]


class ObservePositions(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Keep only the given entries of a Box vector observation (the positions), in their order."""

    def __init__(self, env: gym.Env, entries: tuple[int, ...]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, entries=[int(i) for i in entries])  # a list: what JSON gives back
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1 or max(entries) >= space.shape[0]:
            raise EnvError(f"observe=\"position\" needs a vector observation with entries {list(entries)}, got {space}")
        self.entries = np.asarray(entries, np.int64)
        self.observation_space = gym.spaces.Box(space.low[self.entries], space.high[self.entries], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation)[self.entries]


class StackObservations(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """The last `k` vector observations as one flat vector `(k * d,)`, oldest first, newest last.

    The vector counterpart of the frame stack of Mnih et al. (2015): two positions one step apart give a
    velocity, so a feed-forward network on a stack can act where one on single observations cannot.
    At reset every slot holds the episode's first observation, as the frame stack does.
    """

    def __init__(self, env: gym.Env, k: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, k=k)
        gym.Wrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise EnvError(f"stacking vector observations needs a vector observation, got {space}")
        if k < 1:
            raise EnvError(f"frame_stack must be >= 1 observation, got {k}")
        self.k = int(k)
        self._stack = np.zeros((self.k, space.shape[0]), dtype=space.dtype)
        self.observation_space = gym.spaces.Box(np.tile(space.low, self.k), np.tile(space.high, self.k), dtype=space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._stack[...] = obs
        return self._stack.reshape(-1).copy(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._stack[:-1] = self._stack[1:].copy()
        self._stack[-1] = obs
        return self._stack.reshape(-1).copy(), reward, terminated, truncated, info
