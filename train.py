#!/usr/bin/env python
"""Train a DQN agent: `python train.py --env CartPole-v1`.

A preset from configs/ is picked by env id (or `--preset`, or `--config FILE`),
`--set key=value` overrides any field, and everything lands in a run
directory that `play.py RUN_DIR` can replay. `--resume RUN_DIR` continues a
run exactly where its last complete checkpoint left it; Ctrl-C and SIGTERM
save one and say how to resume.
"""

from __future__ import annotations

import sys

import click

from common.errors import UserError, cli_errors, command


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
@click.option("--demos", type=click.Path(dir_okay=False), default=None, help="Put recorded play (play.py --save-demos) into the replay before learning (DQfD-style).")
@click.option("--pixels", is_flag=True, help="Learn from rendered frames (CartPole-v1 -> the cartpole-pixels preset).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this directory from its last complete checkpoint (only --steps, --minutes and --checkpoint-every may change).")
@click.option("--minutes", type=float, default=None,
              help="Stop once training time (evaluations excluded) reaches this many minutes, then evaluate as at the end (train_minutes).")
@click.option("--checkpoint-every", type=int, default=None, help="Env steps between checkpoints (checkpoint_every).")
@click.option("--keep", type=int, default=3, show_default=True, help="Complete checkpoints kept on disk (the newest is never deleted).")
@click.option("--no-save-replay", is_flag=True, help="Leave the replay memory out of checkpoints (a resume then learns from an empty buffer).")
@cli_errors(interrupt_hint=lambda kw: (f"; continue from the last complete checkpoint with: {command('train')} --resume {where}"
                                        if (where := kw["resume_dir"] or kw["run_dir"]) else ""))
def main(**given) -> None:
    """Train a Deep Q-Network and save the run directory."""
    from common import tfquiet

    tfquiet.set_environment()  # TensorFlow itself loads in train(), once the options and the run directory are checked
    from agent.core.options import TrainOptions

    no_progress, no_save_replay = given.pop("no_progress"), given.pop("no_save_replay")
    options = TrainOptions(**given, progress=not no_progress, save_replay=not no_save_replay)
    options.check()
    sys.exit(0 if run(options) else 1)


def run(options) -> bool:
    """Resolve the config, prepare the run directory, train, report. False: training stopped on its own (a non-finite loss)."""
    cfg = resolve(options)
    directory = prepare(cfg, options)
    result = train(cfg, directory, options)
    if result is None:
        return False
    report(cfg, result, directory)
    return True


def resolve(options):
    """The run's config, checked against its env (and its demos and torso files) before anything is written.

    Raises:
        UserError: a bad option, preset, field, env, demos file or torso file, or a run that another process holds.
    """
    from pathlib import Path

    from agent.core import config as config_lib
    from agent.core.presets import resolve_config
    from envs import EnvError, make_env

    if options.resuming:
        from agent.run.run_dir import RunDirectory

        directory = RunDirectory(options.resume_dir)
        cfg = directory.load_config()  # validated field by field
        directory.check_not_in_use()  # refused in a second, before TensorFlow loads (the lock is taken later)
        cfg = config_lib.from_dict(options.config_values(), base=cfg, source="--resume")
    else:
        env_id, preset = options.preset_to_use()
        cfg = resolve_config(env_id=env_id, preset=preset, config_file=options.config_file, overrides=options.config_values())
    try:  # fail on a bad env before creating anything on disk
        probe = make_env(cfg.env_id, seed=cfg.seed, mode="train", **config_lib.env_options(cfg))
    except EnvError as e:
        raise UserError(str(e)) from None
    try:
        if cfg.demos and not options.resuming:  # and on a demos file that does not fit this env
            from agent.run.demos import load_for_run
            from envs import obs_signature

            obs_shape, obs_dtype, _ = obs_signature(probe)
            load_for_run(cfg, obs_shape, obs_dtype)
    finally:
        probe.close()
    if cfg.init_from and not options.resuming and not Path(cfg.init_from).is_file():
        raise UserError(f"--init-from {cfg.init_from!r}: no such file; make one with `python -m classic pretrain DEMOS.npz --out torso.keras` (--layer-norm: cartpole preset)")
    return cfg


def prepare(cfg, options):
    """The run directory: the resumed one, or a new one (`--force` keeps the old run aside until the new one has a checkpoint)."""
    import time
    from pathlib import Path

    from agent.core.presets import preset_name_for_env
    from agent.run.run_dir import RunDirectory

    if options.resuming:
        return RunDirectory(options.resume_dir)
    run_dir = options.run_dir or Path("runs") / f"{preset_name_for_env(cfg.env_id)}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    return RunDirectory.create(run_dir, force=options.force)


def train(cfg, directory, options):
    """Load TensorFlow, build the run, announce it and train it; None when training stopped on its own (said on stderr)."""
    from common import tfquiet

    tfquiet.setup()  # TensorFlow, quietly (about 6 s here)
    from agent.api import DQN
    from agent.run.loop import TrainingInterrupted, TrainingStopped
    from replay import ReplayMemoryError

    try:
        # Built first (envs, networks, a pretrained torso, the replay, a checkpoint to resume): what is refused there is
        # refused before the run announces itself.
        with DQN.from_config(cfg, directory.path, resume=options.resuming, keep=options.keep, save_replay=options.save_replay) as model:
            announce(cfg, directory, options, model.agent.precision)
            return model.learn(max(cfg.total_steps - model.num_env_steps, 0), progress=options.progress).last_result
    except TrainingStopped as e:
        click.echo(f"error: {e}", err=True)
        return None
    except TrainingInterrupted as e:
        import signal

        click.echo(f"\n{e}", err=True)
        sys.exit(128 + e.signum if e.signum in (signal.SIGINT, signal.SIGTERM) else 130)
    except (UserError, ReplayMemoryError) as e:
        if not options.resuming and directory.replaced is None:
            directory.remove_if_unused()  # failed before writing anything: leave no empty run behind
        raise UserError(str(e)) from None
    finally:
        directory.settle_replaced()


def announce(cfg, directory, options, precision: str) -> None:
    """What is about to train, where, and on what device and precision (`precision`: the one the agent computes in)."""
    from agent.core.device import describe_device, describe_precision, visible_gpus

    verb = "resuming" if options.resuming else "training"
    budget = f" or {cfg.train_minutes:g} minutes of training" if cfg.train_minutes is not None else ""
    repeat = "" if cfg.action_repeat == 1 else f" ({cfg.action_repeat} env steps each)"
    click.echo(f"{verb} {cfg.env_id} for {cfg.total_steps:,} {_step_unit(cfg)}s{repeat}{budget} (seed {cfg.seed}) -> {directory}")
    click.echo(f"device: {describe_device()}")
    if precision != "float32" or cfg.precision == "bfloat16":  # float32, the plain case, goes without saying
        click.echo(f"precision: {describe_precision(cfg.precision, precision, bool(visible_gpus()))}")


def report(cfg, result, directory) -> None:
    """The summary a user reads at the end: steps, time, the final evaluation, where the run is and how to watch it."""
    ev = result.final_eval
    step_unit = _step_unit(cfg)
    steps_per_s = result.env_steps / max(result.train_seconds, 1e-9)
    click.echo("")
    click.echo(f"  env            {cfg.env_id}")
    click.echo(f"  {step_unit + 's':<15}{result.env_steps:,}  ({result.episodes:,} episodes, {result.updates:,} updates)")
    click.echo(f"  time           {result.train_seconds:.1f} s training ({steps_per_s:,.0f} {step_unit}s/s), {result.eval_seconds:.1f} s evaluating")
    click.echo(f"  final eval     mean {ev['mean']:.1f} +/- {ev['std']:.1f} over {len(ev['returns'])} episodes (epsilon {cfg.eval_epsilon})")
    if result.solved_at is not None:
        click.echo(f"  first solved   at {step_unit} {result.solved_at:,}")
    click.echo(f"  run saved to   {directory}")
    click.echo(f"  watch it       {command('play')} {directory}")


def _step_unit(cfg) -> str:
    """What total_steps and the counts count: agent steps when each action is repeated, env steps otherwise."""
    return "env step" if cfg.action_repeat == 1 else "agent step"


if __name__ == "__main__":
    main()
