#!/usr/bin/env python
"""Why does a CartPole agent that solved the task lose it again? One seed, looked at every `--every` env steps.

Trains one seed in slices (`train(pause_at=...)`, then an exact resume), and
after each slice reports about the network at that moment:

- greedy return over 10 episodes, and how those episodes ended: the pole fell
  (|angle| > 12 degrees), the cart left the track (|x| > 2.4) or the 500-step
  time limit;
- the mean greedy Q-value and the mean action gap |Q(s, left) - Q(s, right)|
  on the states those episodes visited;
- the replay memory: the share of its transitions that are terminal, and of
  those, how many ended with the cart off the track.

    python bench/cartpole_collapse.py --seed 2 [--set key=value ...] [--json]

`--run DIR` looks at a finished run instead (its `model.keras`, state or
pixels): the greedy return of `--episodes` episodes and how they ended.

    python bench/cartpole_collapse.py --run runs/pix/ln-s0 [--json]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click  # noqa: E402
import numpy as np  # noqa: E402

from common.errors import cli_errors  # noqa: E402

X_LIMIT = 2.4  # CartPole-v1: the cart leaves the track beyond this (m)
ANGLE_LIMIT = 12 * 2 * np.pi / 360  # the pole has fallen beyond this (rad)


def greedy_episodes(q_fn, env, episodes: int, seed: int) -> dict:
    """Greedy episodes (the episode runner, episode i from seed `seed + i`): returns, how each ended, and the Q-values met on the way."""
    from agent.rollout.episodes import EpisodeRunner
    from agent.dqn.policies import QPolicy

    ends, q_max, gaps, end_x = {"pole": 0, "cart": 0, "time": 0}, [], [], []
    runner = EpisodeRunner(env, QPolicy(q_fn, int(env.action_space.n)), episodes=episodes, seed=seed, render=False)
    for view in runner:
        if not view.done:  # the states an action was chosen in
            q_max.append(float(view.q_values.max()))
            gaps.append(float(abs(view.q_values[0] - view.q_values[1])))
            continue
        x = float(env.unwrapped.state[0])  # where the cart was at the end (m): the last state, before the next reset (pixels hold no x)
        end_x.append(round(x, 3))
        if view.truncated and not view.terminated:
            ends["time"] += 1
        elif abs(x) > X_LIMIT:
            ends["cart"] += 1
        else:
            ends["pole"] += 1
    return {"mean": float(np.mean(runner.scores)), "ends": ends, "q_max": float(np.mean(q_max)), "gap": float(np.mean(gaps)),
            "gap_median": float(np.median(gaps)), "end_x": end_x}


def replay_terminals(run_dir: Path, size: int, recent: int) -> dict:
    """The replay memory of the newest checkpoint (one row per env step; CartPole's never wraps in 50,000).

    Returns the terminal share over all rows and over the `recent` newest,
    and the share of terminals that were the cart leaving the track.
    """
    from agent.run.run_dir import RunDirectory

    folder = RunDirectory(run_dir).newest_checkpoint_dir() / "replay"  # the replay part's own files (replay/base.py)
    terminated = np.load(folder / "terminated.npy").astype(bool)[:size]
    next_x = np.load(folder / "next_obs.npy")[:size, 0]
    cart = float((np.abs(next_x[terminated]) > X_LIMIT).mean()) if terminated.any() else None
    return {"terminal_share": float(terminated.mean()), "recent_terminal_share": float(terminated[-recent:].mean()),
            "cart_share_of_terminals": cart}


@click.command()
@click.option("--seed", type=int, default=2, show_default=True)
@click.option("--preset", default="cartpole", show_default=True)
@click.option("--every", type=int, default=2_500, show_default=True, help="Env steps between looks.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), help="Look at this finished run's model.keras instead of training.")
@click.option("--episodes", type=click.IntRange(min=1), default=10, show_default=True, help="Greedy episodes per look.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
@cli_errors()
def main(seed, preset, every, overrides, run_dir, episodes, as_json):
    from common import tfquiet

    tfquiet.setup()
    from agent.core import config as config_lib
    from agent.core.presets import resolve_config
    from agent.dqn.policies import keras_q_fn
    from agent.rollout.evaluation import EVAL_ENV_SEED_OFFSET, evaluation_seed
    from agent.run.run_dir import RunDirectory
    from agent.run.trainer import train
    from envs import make_env

    if run_dir is not None:
        run_cfg = RunDirectory(run_dir).load_config()
        if run_cfg.env_id != "CartPole-v1":
            raise click.UsageError(f"--run {run_dir} trained {run_cfg.env_id}; this bench looks at CartPole-v1 runs")
        env = make_env(run_cfg.env_id, seed=seed + EVAL_ENV_SEED_OFFSET, mode="eval", **config_lib.env_options(run_cfg))
        look = greedy_episodes(keras_q_fn(RunDirectory(run_dir).load_model()), env, episodes, evaluation_seed(seed))
        e = look["ends"]
        click.echo(f"{run_dir}: greedy {look['mean']:.1f} over {episodes} episodes; ended by the pole {e['pole']}, the cart leaving "
                   f"the track {e['cart']}, the time limit {e['time']}; max Q {look['q_max']:.1f}, |gap| {look['gap']:.2f}")
        click.echo(f"  the cart's x at each end (m; the track ends at +-{X_LIMIT}): {', '.join(f'{x:.2f}' for x in look['end_x'])}")
        if as_json:
            click.echo(json.dumps({"run": str(run_dir), "episodes": episodes, **look}))
        return

    cfg = resolve_config(preset=preset, overrides=config_lib.parse_overrides(overrides)).replace(
        seed=seed, eval_every=0, eval_episodes=1, checkpoint_every=0, record_every=0)
    if cfg.pixels:  # the slices read x from the replay's state vectors
        raise click.UsageError("training in slices looks at state CartPole only; for a pixel run use --run DIR on the finished run")
    env = make_env(cfg.env_id, seed=seed + EVAL_ENV_SEED_OFFSET, mode="eval")
    rows = []
    click.echo(f"preset {preset} {' '.join(overrides)} seed {seed}: a look every {every:,} env steps")
    click.echo(f"{'env step':>8}  {'greedy':>6}  {'pole/cart/time ends':>19}  {'max Q':>6}  {'|gap|':>6}  {'replay terminal: all':>20}  {'newest':>6}  {'cart ends':>9}")
    with tempfile.TemporaryDirectory(prefix="cartpole-collapse-") as tmp:
        run = Path(tmp)
        for stop in range(every, cfg.total_steps + 1, every):
            train(cfg.replace(total_steps=cfg.total_steps + 1), run, progress=False, resume=stop > every, keep=1, pause_at=stop)
            look = greedy_episodes(keras_q_fn(RunDirectory(run).load_model()), env, episodes, evaluation_seed(seed))
            mem = replay_terminals(run, stop, every)
            row = {"env_step": stop, **look, **mem}
            rows.append(row)
            e = look["ends"]
            cart = "-" if mem["cart_share_of_terminals"] is None else f"{mem['cart_share_of_terminals']:.0%}"
            click.echo(f"{stop:>8,}  {look['mean']:>6.1f}  {e['pole']:>7}/{e['cart']}/{e['time']:<9}  {look['q_max']:>6.1f}  {look['gap']:>6.2f}  "
                       f"{mem['terminal_share']:>20.2%}  {mem['recent_terminal_share']:>6.2%}  {cart:>9}")
    if as_json:
        click.echo(json.dumps({"preset": preset, "overrides": list(overrides), "seed": seed, "rows": rows}))


if __name__ == "__main__":
    main()
