#!/usr/bin/env python
"""Stable-Baselines3's DQN with rl-baselines3-zoo's settings, on Breakout or CartPole: env steps/s while learning.

The peer side of `bench/peers/vs_sb3.py` (run it there, side by side with
ours). On Breakout (the default) the settings are the zoo's `hyperparams/dqn.yml` `atari` entry:
`CnnPolicy` (the Nature CNN), `AtariWrapper` + a 4-frame stack on
`BreakoutNoFrameskip-v4`, Adam 1e-4, batch 32, one update per 4 env steps
(`train_freq=4`, `gradient_steps=1`), target sync every 10,000 env steps.
Three things differ from the zoo, all so that the timed part matches ours:

- `buffer_size` 100,000 (the zoo's 1,000,000 stores obs and next_obs: ~56 GB),
- `learning_starts` = `--fill` (ours fills the preset's 20,000 before timing),
- epsilon fixed at 0.01 (ours acts at its final epsilon, so both run the
  network on ~every step).

With `--env CartPole-v1` they are the zoo's `CartPole-v1` entry: `MlpPolicy`
with two hidden layers of 256, Adam 2.3e-3, batch 64, 128 updates every 256
env steps, target sync every 10 env steps, buffer 100,000; epsilon is fixed
at the zoo's final 0.04 and `learning_starts` is `--fill` (the zoo's 1,000).

Random play up to `--fill` is not timed; then `--steps` env steps of
`model.learn` are: acting, the env, storing, and the updates.

    python bench/peers/sb3_dqn.py --steps 5000 [--fill 20000] [--json]
    python bench/peers/sb3_dqn.py --env CartPole-v1 --steps 20000 --fill 1000 [--json]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time

import click


# rl-baselines3-zoo hyperparams/dqn.yml: the `atari` entry and the `CartPole-v1` entry (see the docstring for what differs)
ZOO = {
    "Breakout": dict(env_id="BreakoutNoFrameskip-v4", policy="CnnPolicy", buffer_size=100_000, learning_rate=1e-4, batch_size=32,
                     target_update_interval=10_000, train_freq=4, gradient_steps=1, epsilon=0.01, policy_kwargs=None),
    "CartPole-v1": dict(env_id="CartPole-v1", policy="MlpPolicy", buffer_size=100_000, learning_rate=2.3e-3, batch_size=64,
                        target_update_interval=10, train_freq=256, gradient_steps=128, epsilon=0.04, policy_kwargs={"net_arch": [256, 256]}),
}


@click.command()
@click.option("--env", "env_name", type=click.Choice(sorted(ZOO)), default="Breakout", show_default=True, help="Which zoo entry to run.")
@click.option("--steps", type=int, default=5_000, show_default=True, help="Env steps timed while learning.")
@click.option("--fill", type=int, default=20_000, show_default=True, help="Env steps of random play first (SB3's learning_starts), not timed.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
def main(env_name: str, steps: int, fill: int, seed: int, as_json: bool) -> None:
    zoo = ZOO[env_name]
    if steps < zoo["train_freq"] or fill < zoo["batch_size"]:
        raise click.UsageError(f"--steps must be >= {zoo['train_freq']} (one learner call) and --fill >= {zoo['batch_size']} (one batch), "
                               f"got {steps} and {fill}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # SB3's logger may import TensorBoard, which imports TensorFlow
    try:
        import ale_py
        import gymnasium as gym
        import torch
        from stable_baselines3 import DQN
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_atari_env, make_vec_env
        from stable_baselines3.common.vec_env import VecFrameStack
    except ImportError as e:
        click.echo(f"error: the peer bench needs Stable-Baselines3 and torch ({e.name} is missing); install them with: "
                   "pip install -e '.[peers]' (torch's CPU build: see docs/throughput.md)", err=True)
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

    if zoo["policy"] == "CnnPolicy":
        env = VecFrameStack(make_atari_env(zoo["env_id"], n_envs=1, seed=seed), n_stack=4)
    else:
        env = make_vec_env(zoo["env_id"], n_envs=1, seed=seed)
    model = DQN(zoo["policy"], env, buffer_size=zoo["buffer_size"], learning_rate=zoo["learning_rate"], batch_size=zoo["batch_size"],
                learning_starts=fill, target_update_interval=zoo["target_update_interval"], train_freq=zoo["train_freq"],
                gradient_steps=zoo["gradient_steps"], exploration_initial_eps=zoo["epsilon"], exploration_final_eps=zoo["epsilon"],
                policy_kwargs=zoo["policy_kwargs"], seed=seed, device="cpu", verbose=0)
    clock = LearningClock()
    model.learn(total_timesteps=fill + steps, callback=clock)
    seconds = clock.end - clock.start
    updates = model._n_updates  # SB3 counts its gradient steps here
    result = {
        "peer": "stable-baselines3", "sb3_version": __import__("stable_baselines3").__version__, "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(), "env_id": zoo["env_id"], "steps": steps, "fill": fill,
        "train_freq": zoo["train_freq"], "gradient_steps": zoo["gradient_steps"], "batch_size": zoo["batch_size"], "updates": int(updates),
        "env_steps_per_s": round(steps / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
    }
    click.echo(f"SB3 {result['sb3_version']} DQN (torch {result['torch_version']}, {result['torch_threads']} threads) on {result['env_id']}: "
               f"{steps:,} env steps while learning after {fill:,} of random fill")
    click.echo(f"  env steps/s  {result['env_steps_per_s']:8.1f}   ({updates:,} updates of batch {zoo['batch_size']} in all)")
    if as_json:
        click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
