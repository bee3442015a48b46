"""Greedy (or near-greedy) evaluation on full episodes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def evaluate(agent, env: gym.Env, episodes: int, epsilon: float = 0.0, seed: int | None = None) -> dict:
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

    Returns:
        `{"mean", "std", "min", "max", "returns", "lengths"}`.
    """
    rng = np.random.default_rng(seed)
    returns, lengths = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + i)
        total, length, done = 0.0, 0, False
        while not done:
            action = int(agent.act(obs[None], epsilon, rng)[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
    r = np.asarray(returns)
    return {
        "mean": float(r.mean()),
        "std": float(r.std()),
        "min": float(r.min()),
        "max": float(r.max()),
        "returns": [float(x) for x in returns],
        "lengths": lengths,
    }
