"""Greedy (or near-greedy) evaluation on full episodes, played by the one episode runner (agent/rollout/episodes.py)."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from agent.rollout.episodes import EpisodeRunner
from agent.dqn.policies import AgentPolicy


# Seeds derived from a run's seed, so that training, evaluation and recorded videos never share a random stream.
EVAL_ENV_SEED_OFFSET = 10_000  # the evaluation env is made with seed + 10,000
EVAL_EPISODES_SEED_OFFSET = 20_000  # evaluation episode i resets with seed + 20,000 + i: every evaluation of a run starts alike
VIDEO_SEED_OFFSET = 30_000  # the episodes recorded during training (`record_every`)
PREDICT_SEED_OFFSET = 40_000  # `DQN.predict`'s exploration (agent/api.py): never the training RNG


def evaluation_seed(run_seed: int) -> int:
    """The seed a run's evaluations start from (`evaluate(seed=...)`): the same for every evaluation of the run."""
    return run_seed + EVAL_EPISODES_SEED_OFFSET


class EvaluationStopped(Exception):
    """`stop()` said yes in the middle of an evaluation (Ctrl-C): its episodes so far are no result."""


def evaluate(agent, env: gym.Env, episodes: int, epsilon: float = 0.0, seed: int | None = None,
             stop: Callable[[], bool] | None = None) -> dict:
    """Play `episodes` full episodes and report their true returns.

    Evaluation draws its exploration from its own RNG (seeded by `seed`), never
    from the agent's: how often a run is evaluated must not change how it
    trains, so a seed's training is the same under `make train`, the benches
    and any `eval_every`.

    Args:
        agent: anything with `act(obs_batch, epsilon, rng)` (`DQNAgent.act`).
        env: an env made with `mode="eval"` (no reward clipping, no life-loss ends).
        episodes: number of episodes.
        epsilon: exploration during evaluation (0 for classic control; 0.05
            is the Atari protocol of Mnih et al. 2015).
        seed: if given, episode i resets with seed `seed + i`, so every
            evaluation of a run starts from the same states.
        stop: asked before every env step; when it says yes the evaluation
            ends at once with `EvaluationStopped` (ten Atari games can take
            minutes, and Ctrl-C should not wait for them).

    Returns:
        `{"mean", "std", "min", "max", "returns", "lengths"}`.
    """
    runner = EpisodeRunner(env, AgentPolicy(agent, epsilon, np.random.default_rng(seed)), episodes=episodes, seed=seed, render=False)
    for _ in runner:
        if stop is not None and stop():
            raise EvaluationStopped(f"stopped after {len(runner.scores)} of {episodes} episodes")
    returns, lengths = runner.scores, runner.lengths
    r = np.asarray(returns)
    return {
        "mean": float(r.mean()),
        "std": float(r.std()),
        "min": float(r.min()),
        "max": float(r.max()),
        "returns": [float(x) for x in returns],
        "lengths": lengths,
    }
