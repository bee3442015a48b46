#!/usr/bin/env python
"""Stable-Baselines3's DQN on Breakout with rl-baselines3-zoo's Atari settings: env steps/s while learning.

The peer side of `bench/peers/vs_sb3.py` (run it there, side by side with
ours). The settings are the zoo's `hyperparams/dqn.yml` `atari` entry:
`CnnPolicy` (the Nature CNN), `AtariWrapper` + a 4-frame stack on
`BreakoutNoFrameskip-v4`, Adam 1e-4, batch 32, one update per 4 env steps
(`train_freq=4`, `gradient_steps=1`), target sync every 10,000 env steps.
Three things differ from the zoo, all so that the timed part matches ours:

- `buffer_size` 100,000 (the zoo's 1,000,000 stores obs and next_obs: ~56 GB),
- `learning_starts` = `--fill` (ours fills the preset's 20,000 before timing),
- epsilon fixed at 0.01 (ours acts at its final epsilon, so both run the
  network on ~every step).

Random play up to `--fill` is not timed; then `--steps` env steps of
`model.learn` are: acting, the env, storing, one update of batch 32 every 4.

    python bench/peers/sb3_dqn.py --steps 5000 [--fill 20000] [--json]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time

import click


@click.command()
@click.option("--steps", type=int, default=5_000, show_default=True, help="Env steps timed while learning.")
@click.option("--fill", type=int, default=20_000, show_default=True, help="Env steps of random play first (SB3's learning_starts), not timed.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
def main(steps: int, fill: int, seed: int, as_json: bool) -> None:
    if steps < 4 or fill < 32:
        raise click.UsageError(f"--steps must be >= 4 and --fill >= 32 (one batch), got {steps} and {fill}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # SB3's logger may import TensorBoard, which imports TensorFlow
    try:
        import ale_py
        import gymnasium as gym
        import torch
        from stable_baselines3 import DQN
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack
    except ImportError as e:
        click.echo(f"error: the peer bench needs Stable-Baselines3 and torch ({e.name} is missing); install them with: "
                   "pip install -e '.[peers]' (torch's CPU build: see the README's peer bench section)", err=True)
        sys.exit(2)

    gym.register_envs(ale_py)

    class LearningClock(BaseCallback):
        """Wall-clock time from the first env step after the random fill to the last."""

        def __init__(self) -> None:
            super().__init__()
            self.start = self.end = None

        def _on_step(self) -> bool:
            if self.num_timesteps == fill:
                self.start = time.perf_counter()
            elif self.num_timesteps == fill + steps:
                self.end = time.perf_counter()
            return True

    env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=1, seed=seed), n_stack=4)
    model = DQN("CnnPolicy", env, buffer_size=100_000, learning_rate=1e-4, batch_size=32, learning_starts=fill,
                target_update_interval=10_000, train_freq=4, gradient_steps=1, exploration_initial_eps=0.01,
                exploration_final_eps=0.01, seed=seed, device="cpu", verbose=0)
    clock = LearningClock()
    model.learn(total_timesteps=fill + steps, callback=clock)
    seconds = clock.end - clock.start
    updates = model._n_updates  # SB3 counts its gradient steps here
    result = {
        "peer": "stable-baselines3", "sb3_version": __import__("stable_baselines3").__version__, "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(), "env_id": "BreakoutNoFrameskip-v4", "steps": steps, "fill": fill,
        "train_freq": 4, "gradient_steps": 1, "batch_size": 32, "updates": int(updates),
        "env_steps_per_s": round(steps / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
    }
    click.echo(f"SB3 {result['sb3_version']} DQN (torch {result['torch_version']}, {result['torch_threads']} threads) on {result['env_id']}: "
               f"{steps:,} env steps while learning after {fill:,} of random fill")
    click.echo(f"  env steps/s  {result['env_steps_per_s']:8.1f}   ({updates:,} updates of batch 32 in all)")
    if as_json:
        click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
