"""One episode loop for everything that plays whole episodes: evaluation, videos, the window, the benches.

`EpisodeRunner` plays an env with a policy (agent/dqn/policies.py) and yields a
`StepView` per state; the consumer decides the pace (a window pauses by not
asking for the next view, a video asks as fast as it can, evaluation only
wants the returns: `run()`). Episode i resets with seed `seed + i`, so the
same seed replays the same episodes. A score is the sum of the env's rewards:
the true return with envs made in "eval" or "play" mode (no reward clipping,
no life-loss ends).

No TensorFlow and no pygame here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from classic.demos import DemoRecorder


class Policy(Protocol):
    """Chooses the action for one observation: `(action, Q-values or None, whether it was random)`.

    Optional: `q_values(obs)` (shown on an episode's last state), `reset()` (called at each episode's start: a
    recurrent policy zeroes its state), and `chooses_when_stepping = True` for a person, who decides after seeing the state.
    """

    def __call__(self, obs: np.ndarray) -> tuple[int, np.ndarray | None, bool]: ...


@dataclass
class StepView:
    """One state as a person sees it: the frame, the score so far, and what the agent does next."""

    episode: int  # 1-based
    episodes: int  # how many will be played
    step: int  # env steps taken so far in this episode
    score: float  # undiscounted return so far (real rewards, not clipped)
    obs: np.ndarray  # the observation as the network sees it
    frame: np.ndarray | None  # env.render(): full-resolution RGB uint8 (H, W, 3); None when not rendering
    q_values: np.ndarray | None  # Q(obs, .) of the network, None for random/human play
    action: int | None  # the action about to be taken; None once the episode is over
    explored: bool  # the action was random (epsilon) rather than greedy
    done: bool  # the episode has ended; this is its last frame
    terminated: bool = False  # on the last view: the env reached a terminal state
    truncated: bool = False  # on the last view: the env cut the episode (time limit); both False for a max_steps cut


class EpisodeRunner:
    """Plays episodes and yields a `StepView` per state.

    Each episode gives `length + 1` views: the first state, the state after
    each step, the last one with `done=True`. An agent's choice is made before
    its state is handed out (the view shows it); a person's
    (`policy.chooses_when_stepping`) when the next view is asked for.

    Args:
        env: the env to play; with `render`, made with `render_mode="rgb_array"`.
        policy: see `Policy`.
        episodes: how many episodes to play.
        seed: episode i resets with seed `seed + i`; None: unseeded resets.
        max_steps: cut episodes after this many env steps (None: play them out).
        demos: records every transition played (`play.py --save-demos`).
        render: put `env.render()` into each view; evaluation does without.
    """

    def __init__(
        self,
        env: gym.Env,
        policy: Policy,
        *,
        episodes: int = 1,
        seed: int | None = 0,
        max_steps: int | None = None,
        demos: DemoRecorder | None = None,
        render: bool = True,
    ):
        self.env, self.policy = env, policy
        self.episodes, self.seed, self.max_steps, self.demos, self.render = episodes, seed, max_steps, demos, render
        self.scores: list[float] = []  # returns of the finished episodes
        self.lengths: list[int] = []  # env steps of the finished episodes
        self.current: StepView | None = None  # the last view handed out

    def __iter__(self) -> Iterator[StepView]:
        env, policy = self.env, self.policy
        frame = (lambda: env.render()) if self.render else (lambda: None)
        for i in range(self.episodes):
            obs, _ = env.reset(seed=None if self.seed is None else self.seed + i)
            if hasattr(policy, "reset"):  # a recurrent policy starts each episode from its zero state
                policy.reset()
            score, step, terminated, truncated = 0.0, 0, False, False
            while True:
                capped = self.max_steps is not None and step >= self.max_steps
                if terminated or truncated or capped:
                    q = policy.q_values(obs) if hasattr(policy, "q_values") else None
                    self.current = StepView(i + 1, self.episodes, step, score, obs, frame(), q, None, False, True, terminated, truncated)
                    if self.demos is not None:
                        self.demos.cut()
                    self.scores.append(score)
                    self.lengths.append(step)
                    yield self.current
                    break
                if getattr(policy, "chooses_when_stepping", False):
                    # A person decides after seeing the state: read the keys when the step is taken.
                    self.current = StepView(i + 1, self.episodes, step, score, obs, frame(), None, None, False, False)
                    yield self.current
                    action, q, explored = policy(obs)
                else:
                    # An agent's choice is shown with the state it was made in.
                    action, q, explored = policy(obs)
                    self.current = StepView(i + 1, self.episodes, step, score, obs, frame(), q, action, explored, False)
                    yield self.current
                next_obs, reward, terminated, truncated, info = env.step(action)
                if self.demos is not None:
                    self.demos.add(obs, action, float(reward), terminated, truncated, info.get("lives"))
                obs, score, step = next_obs, score + float(reward), step + 1

    def run(self) -> list[float]:
        """Play all the episodes without looking at them; returns their scores (lengths in `self.lengths`)."""
        for _ in self:
            pass
        return self.scores

    def stop(self) -> None:
        """The player quit mid-episode: the demonstrations end truncated there."""
        if self.demos is not None:
            self.demos.cut()
