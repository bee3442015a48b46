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
def main(env_id, preset, config_file, overrides, seed, steps, run_dir, force, eval_every, eval_episodes, record_every, init_from, demos, pixels, no_progress,
         resume_dir, minutes, checkpoint_every, keep, no_save_replay):
    """Train a Deep Q-Network and save the run directory."""
    import tfquiet

    tfquiet.set_environment()  # TensorFlow itself loads in run(), once the options and the run directory are checked
    if resume_dir is not None:
        given = {"--env": env_id, "--preset": preset, "--config": config_file, "--set": overrides, "--seed": seed, "--run-dir": run_dir,
                 "--force": force, "--eval-every": eval_every, "--eval-episodes": eval_episodes, "--record-every": record_every,
                 "--init-from": init_from, "--demos": demos, "--pixels": pixels}
        clash = [name for name, value in given.items() if value is not None and value is not False and value != ()]
        if clash:
            raise UserError(f"--resume continues the saved config; {', '.join(clash)} cannot be combined with it (only --steps, --minutes and --checkpoint-every can change)")
    result = run(env_id, preset, config_file, overrides, seed, steps, run_dir, force, eval_every, eval_episodes, record_every, init_from, pixels, no_progress,
                 resume_dir=resume_dir, minutes=minutes, checkpoint_every=checkpoint_every, keep=keep, save_replay=not no_save_replay, demos=demos)
    sys.exit(0 if result else 1)


def run(env_id, preset, config_file, overrides, seed, steps, run_dir, force, eval_every, eval_episodes, record_every, init_from, pixels, no_progress,
        *, resume_dir=None, minutes=None, checkpoint_every=None, keep=3, save_replay=True, demos=None):
    import shutil
    import time
    from pathlib import Path

    from agent.core import config as config_lib
    from agent.core.presets import preset_name_for_env, resolve_config
    from envs import EnvError, make_env

    if keep < 1:
        raise UserError(f"--keep must be >= 1 (the newest checkpoint is always kept), got {keep}")
    resuming = resume_dir is not None
    if resuming:
        from agent.run import run_dir as run_files

        cfg = run_files.load_config(resume_dir)  # validated field by field
        run_files.check_not_in_use(resume_dir)  # refused in a second, before TensorFlow loads (the lock is taken later)
        changes = {k: v for k, v in (("total_steps", steps), ("train_minutes", minutes), ("checkpoint_every", checkpoint_every)) if v is not None}
        cfg = config_lib.from_dict(changes, base=cfg, source="--resume")
    else:
        values = config_lib.parse_overrides(overrides)
        for key, value in (("seed", seed), ("total_steps", steps), ("eval_every", eval_every), ("eval_episodes", eval_episodes), ("record_every", record_every),
                           ("init_from", init_from), ("demos", demos), ("train_minutes", minutes), ("checkpoint_every", checkpoint_every)):
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
        probe = make_env(cfg.env_id, seed=cfg.seed, mode="train", **config_lib.env_options(cfg))
    except EnvError as e:
        raise UserError(str(e)) from None
    try:
        if cfg.demos and not resuming:  # and on a demos file that does not fit this env
            from agent.run.demos import load_for_run
            from envs import obs_signature

            obs_shape, obs_dtype, _ = obs_signature(probe)
            load_for_run(cfg, obs_shape, obs_dtype)
    finally:
        probe.close()

    if cfg.init_from and not resuming and not Path(cfg.init_from).is_file():
        raise UserError(f"--init-from {cfg.init_from!r}: no such file; make one with `python -m classic pretrain DEMOS.npz --out torso.keras` (--layer-norm: cartpole preset)")

    from agent.run import run_dir as run_files

    replaced = None  # with --force: the old run, kept aside until the new one has a complete checkpoint
    if resuming:
        path = Path(resume_dir)
    else:
        if run_dir is None:
            run_dir = Path("runs") / f"{preset_name_for_env(cfg.env_id)}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, replaced = run_files.prepare_run_dir(run_dir, force=force)

    import tfquiet

    tfquiet.setup()  # TensorFlow, quietly (about 6 s here)
    from agent.api import DQN
    from agent.run.training import TrainingInterrupted, TrainingStopped

    verb = "resuming" if resuming else "training"
    budget = f" or {cfg.train_minutes:g} minutes of training" if cfg.train_minutes is not None else ""
    step_unit = "env step" if cfg.action_repeat == 1 else "agent step"  # what total_steps and the counts below count
    repeat = "" if cfg.action_repeat == 1 else f" ({cfg.action_repeat} env steps each)"
    click.echo(f"{verb} {cfg.env_id} for {cfg.total_steps:,} {step_unit}s{repeat}{budget} (seed {cfg.seed}) -> {path}")
    from agent.core.device import describe_device, describe_precision, resolve_precision, visible_gpus

    click.echo(f"device: {describe_device()}")
    if cfg.precision != "float32":
        gpu = bool(visible_gpus())
        click.echo(f"precision: {describe_precision(cfg.precision, resolve_precision(cfg.precision, gpu=gpu), gpu)}")
    from replay import ReplayMemoryError

    try:
        with DQN.from_config(cfg, path, resume=resuming, keep=keep, save_replay=save_replay) as model:
            result = model.learn(max(cfg.total_steps - model.num_env_steps, 0), progress=not no_progress).last_result
    except TrainingStopped as e:
        click.echo(f"error: {e}", err=True)
        return False
    except TrainingInterrupted as e:
        import signal

        click.echo(f"\n{e}", err=True)
        sys.exit(128 + e.signum if e.signum in (signal.SIGINT, signal.SIGTERM) else 130)
    except (UserError, ReplayMemoryError) as e:
        if not resuming and replaced is None and all(p.name == run_files.LOCK_FILE for p in path.iterdir()):
            shutil.rmtree(path)  # failed before writing anything: leave no empty run behind
        raise UserError(str(e)) from None
    finally:
        run_files.settle_replaced(path, replaced)
    ev = result.final_eval
    steps_per_s = result.env_steps / max(result.train_seconds, 1e-9)
    click.echo("")
    click.echo(f"  env            {cfg.env_id}")
    click.echo(f"  {step_unit + 's':<15}{result.env_steps:,}  ({result.episodes:,} episodes, {result.updates:,} updates)")
    click.echo(f"  time           {result.train_seconds:.1f} s training ({steps_per_s:,.0f} {step_unit}s/s), {result.eval_seconds:.1f} s evaluating")
    click.echo(f"  final eval     mean {ev['mean']:.1f} +/- {ev['std']:.1f} over {len(ev['returns'])} episodes (epsilon {cfg.eval_epsilon})")
    if result.solved_at is not None:
        click.echo(f"  first solved   at {step_unit} {result.solved_at:,}")
    click.echo(f"  run saved to   {path}")
    click.echo(f"  watch it       {command('play')} {path}")
    return True


if __name__ == "__main__":
    main()
