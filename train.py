#!/usr/bin/env python
"""Train a DQN agent: `python train.py --env CartPole-v1`.

A preset from configs/ is picked by env id (or `--preset`, or `--config FILE`),
`--set key=value` overrides any field, and everything lands in a run
directory that `play.py RUN_DIR` can replay.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click  # noqa: E402

from agent.errors import UserError  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--env", "env_id", default=None, help="gymnasium/ALE env id, or a preset alias (Breakout).  [default: CartPole-v1]")
@click.option("--preset", default=None, help="Preset name from configs/ (e.g. handbook); default: the env's own.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="Load this TOML config instead of a preset.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option("--steps", type=int, default=None, help="Env steps of training (total_steps).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Where to save the run [runs/ENV-seedN-TIME].")
@click.option("--force", is_flag=True, help="Replace a run already in --run-dir.")
@click.option("--eval-every", type=int, default=None, help="Env steps between evaluations.")
@click.option("--eval-episodes", type=int, default=None, help="Episodes per evaluation.")
@click.option("--record-every", type=int, default=None, help="Env steps between evaluation videos.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None, help="Start the Q-network's torso from a pretrained .keras file (python -m classic pretrain).")
@click.option("--pixels", is_flag=True, help="Learn from rendered frames (CartPole-v1 -> the cartpole-pixels preset).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def main(env_id, preset, config_file, overrides, seed, steps, run_dir, force, eval_every, eval_episodes, record_every, init_from, pixels, no_progress):
    """Train a Deep Q-Network and save the run directory."""
    try:
        result = run(env_id, preset, config_file, overrides, seed, steps, run_dir, force, eval_every, eval_episodes, record_every, init_from, pixels, no_progress)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        sys.exit(130)
    sys.exit(0 if result else 1)


def run(env_id, preset, config_file, overrides, seed, steps, run_dir, force, eval_every, eval_episodes, record_every, init_from, pixels, no_progress):
    import time
    from pathlib import Path

    from agent import config as config_lib
    from agent.presets import preset_name_for_env, resolve_config
    from envs import EnvError, make_env

    values = config_lib.parse_overrides(overrides)
    for key, value in (("seed", seed), ("total_steps", steps), ("eval_every", eval_every), ("eval_episodes", eval_episodes), ("record_every", record_every), ("init_from", init_from)):
        if value is not None:
            values[key] = value
    if env_id is None and preset is None and config_file is None:
        env_id = "CartPole-v1"
    if pixels:
        values["pixels"] = True
        if preset is None and config_file is None and env_id == "CartPole-v1":
            preset = "cartpole-pixels"
    cfg = resolve_config(env_id=env_id, preset=preset, config_file=config_file, overrides=values)
    try:  # fail on a bad env before creating anything on disk
        make_env(cfg.env_id, seed=cfg.seed, mode="train", pixels=cfg.pixels).close()
    except EnvError as e:
        raise UserError(str(e)) from None

    if cfg.init_from and not Path(cfg.init_from).is_file():
        raise UserError(f"--init-from {cfg.init_from!r}: no such file; make one with `python -m classic pretrain DEMOS.npz --out torso.keras`")

    from agent import run_dir as run_files

    if run_dir is None:
        run_dir = Path("runs") / f"{preset_name_for_env(cfg.env_id)}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = run_files.prepare_run_dir(run_dir, force=force)

    from agent.training import TrainingInterrupted, TrainingStopped, train

    click.echo(f"training {cfg.env_id} for {cfg.total_steps:,} env steps (seed {cfg.seed}) -> {path}")
    from replay import ReplayMemoryError

    try:
        result = train(cfg, path, progress=not no_progress)
    except TrainingStopped as e:
        click.echo(f"error: {e}", err=True)
        return False
    except TrainingInterrupted as e:
        click.echo(f"\n{e}", err=True)
        sys.exit(130)
    except (UserError, ReplayMemoryError) as e:
        if not any(path.iterdir()):  # failed before writing anything: leave no empty run behind
            path.rmdir()
        raise UserError(str(e)) from None
    ev = result.final_eval
    steps_per_s = result.env_steps / max(result.train_seconds, 1e-9)
    click.echo("")
    click.echo(f"  env            {cfg.env_id}")
    click.echo(f"  env steps      {result.env_steps:,}  ({result.episodes:,} episodes, {result.updates:,} updates)")
    click.echo(f"  time           {result.train_seconds:.1f} s training ({steps_per_s:,.0f} env steps/s), {result.eval_seconds:.1f} s evaluating")
    click.echo(f"  final eval     mean {ev['mean']:.1f} +/- {ev['std']:.1f} over {len(ev['returns'])} episodes (epsilon {cfg.eval_epsilon})")
    if result.solved_at is not None:
        click.echo(f"  first solved   at env step {result.solved_at:,}")
    click.echo(f"  run saved to   {path}")
    click.echo(f"  watch it       python play.py {path}")
    return True


if __name__ == "__main__":
    main()
