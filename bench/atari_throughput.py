#!/usr/bin/env python
"""Atari training throughput: env steps/s while learning, and where the time goes, read from the real loop.

Trains with the preset (and `--set` overrides) through the real `Trainer` and
`run_loop`, acting at the preset's final epsilon from the first step (so the
network runs on ~every step, as it does for most of a run; the replay fills
with that play until `learning_starts`), `WARMUP_STEPS` more env steps so the compiled update and acting
functions are traced, then `--steps` timed env steps. The figures are the
loop's own phase timings over those steps (`Run.phases`: act, env, store,
learn, sync, hooks; `Learner.seconds`: wait, sample, update), so the bench
times what training runs, never a copy of it. Evaluations, checkpoints, logs
and videos are off inside the window.

With prioritized replay (the Breakout preset's; `--prioritized` turns it on
for any preset) the update's time includes writing the new priorities
(Schaul et al. 2016). With `overlap_learning` (the preset's where acting runs
in numpy) each learner call runs in a worker thread while the next
`train_freq` env steps are taken (agent/run/learner.py): `ms_per_update` is
then the loop's time handing a call over, `ms_per_wait` what acting could
not hide, and `ms_per_sample` the sampling the loop still does itself.

    python bench/atari_throughput.py --env Breakout --steps 5000 [--prioritized] [--set key=value ...] [--json]
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import tfquiet  # noqa: E402

tfquiet.set_environment()  # before `envs` loads numpy: one BLAS thread, so that the Nature CNN acts in numpy as in train.py

import click  # noqa: E402

from common.errors import cli_errors  # noqa: E402
from envs import EnvError  # noqa: E402


@click.command()
@click.option("--env", "env_id", default="Breakout", show_default=True)
@click.option("--steps", type=int, default=5_000, show_default=True, help="Env steps timed while learning.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a preset field.")
@click.option("--seed", type=int, default=0)
@click.option("--prioritized", is_flag=True, help="Learn from prioritized replay (Schaul et al. 2016), as prioritized=true trains.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
@cli_errors(also=(EnvError,))
def main(env_id, steps, overrides, seed, prioritized, as_json):
    tfquiet.setup()
    cfg = bench_config(env_id, steps, overrides, seed, prioritized)
    window = time_the_loop(cfg, steps)
    result = figures(cfg, steps, window)
    show(cfg, steps, result)
    if as_json:
        click.echo(json.dumps(result))


WARMUP_STEPS = 16  # env steps after learning_starts, untimed: the first learner calls trace the update


def bench_config(env_id: str, steps: int, overrides, seed: int, prioritized: bool):
    """The preset with the bench's protocol on top: final epsilon throughout, no side jobs inside the timed window."""
    from agent.core import config as config_lib
    from agent.core.presets import resolve_config

    cfg = resolve_config(env_id=env_id, overrides={"seed": seed, **config_lib.parse_overrides(overrides)})
    if prioritized:
        cfg = cfg.replace(prioritized=True)
    # One env step past the window: the final evaluation (at total_steps) comes after the last reading.
    return cfg.replace(total_steps=cfg.learning_starts + WARMUP_STEPS + steps + 1, epsilon_start=cfg.epsilon_end, epsilon_decay=1,
                       eval_every=0, eval_episodes=1, final_eval_episodes=1, log_every=0, checkpoint_every=0, record_every=0,
                       train_minutes=None, stop_on_solve=False)


class Window:
    """A hook that reads the loop's phase timings when the timed window opens and at its last env step."""

    def __init__(self, start_step: int, end_step: int):
        self.start_step, self.end_step = start_step, end_step
        self.readings: dict[str, dict] = {}

    def __call__(self, run) -> None:
        if run.state.step in (self.start_step, self.end_step):
            t0 = time.perf_counter()
            run.settle()  # the pending learner call's compute belongs to the steps before this reading
            waited = time.perf_counter() - t0
            learner = {**run.learner.seconds, "wait": run.learner.seconds["wait"] + waited}
            self.readings["start" if run.state.step == self.start_step else "end"] = {
                "t": time.perf_counter(), "loop": {**run.phases.seconds, "learn": run.phases.seconds["learn"] + waited},
                "learner": learner, "updates": run.agent.num_updates}
            self.run = run
        return None


def time_the_loop(cfg, steps: int) -> dict:
    """Train `cfg` in a temporary run directory; the phase seconds, counts and updates inside the timed window."""
    import tempfile

    from agent.run.trainer import Trainer

    start = cfg.learning_starts + WARMUP_STEPS
    window = Window(start, start + steps)
    with tempfile.TemporaryDirectory(prefix="atari-throughput-") as tmp, Trainer(cfg, tmp, save_replay=False) as trainer:
        trainer.train(hooks=[window])
        run = window.run
        first, last = window.readings["start"], window.readings["end"]
        return {
            "seconds": last["t"] - first["t"],
            "loop": {k: last["loop"][k] - first["loop"][k] for k in last["loop"]},
            "learner": {k: last["learner"][k] - first["learner"][k] for k in last["learner"]},
            "updates": last["updates"] - first["updates"], "fill_seconds": first["t"] - run.started,
            "acting": "numpy" if run.agent.acts_in_numpy else "tensorflow", "precision": run.agent.precision,
            "overlap_learning": run.learner.overlap, "replay_mb": run.replay.nbytes / 2**20,
        }


def figures(cfg, steps: int, window: dict) -> dict:
    """The bench's JSON: rates over the window, and milliseconds per env step or per update by phase."""
    from agent.core.device import describe_cpu

    seconds, loop, learner, updates = window["seconds"], window["loop"], window["learner"], max(window["updates"], 1)
    return {
        "env_id": cfg.env_id, "steps": steps, "train_freq": cfg.train_freq, "gradient_steps": cfg.gradient_steps,
        "batch_size": cfg.batch_size, "jit_compile": cfg.jit_compile, "acting": window["acting"], "precision": window["precision"],
        "overlap_learning": window["overlap_learning"], "prioritized": cfg.prioritized,
        "env_steps_per_s": round(steps / seconds, 1),
        "updates_per_s": round(window["updates"] / seconds, 2),
        "ms_per_update": round(1000 * learner["update"] / updates, 2),
        "ms_per_sample": round(1000 * learner["sample"] / updates, 3),
        "ms_per_wait": round(1000 * learner["wait"] / updates, 3),
        "ms_per_priority_update": round(1000 * learner["priorities"] / updates, 3) if cfg.prioritized else None,
        "ms_per_act": round(1000 * loop["act"] / steps, 3),
        "ms_per_env_step": round(1000 * loop["env"] / steps, 3),
        "ms_per_store": round(1000 * loop["store"] / steps, 3),
        "ms_per_hooks": round(1000 * loop["hooks"] / steps, 3),  # the side jobs' checks (all off inside the window)
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "replay_mb": round(window["replay_mb"], 1),
        "fill_seconds": round(window["fill_seconds"], 1),
        **describe_cpu(),
    }


def show(cfg, steps: int, r: dict) -> None:
    how = f"{r['precision']}, overlapped with acting" if r["overlap_learning"] else r["precision"]
    click.echo(f"{cfg.env_id}: {steps:,} env steps of the training loop ({cfg.gradient_steps} update(s) of batch {cfg.batch_size} every "
               f"{cfg.train_freq} env steps, {how}{', prioritized' if cfg.prioritized else ''}), after {cfg.learning_starts + WARMUP_STEPS:,} "
               f"untimed steps ({r['fill_seconds']:.1f} s)")
    click.echo(f"  CPU              {r['cpu']} ({', '.join(r['cpu_flags']) or 'no AVX2'})")
    click.echo(f"  env steps/s      {r['env_steps_per_s']:8.1f}")
    click.echo(f"  updates/s        {r['updates_per_s']:8.2f}")
    click.echo(f"  ms per update    {r['ms_per_update']:8.2f}   (+ {r['ms_per_sample']:.3f} ms sampling, + {r['ms_per_wait']:.3f} ms waiting for the call before"
               + (f", + {r['ms_per_priority_update']:.3f} ms writing priorities)" if cfg.prioritized else ")")
               + ("; overlapped: the update's compute runs in the worker, what acting could not hide is the wait" if r["overlap_learning"] else ""))
    click.echo(f"  ms per act       {r['ms_per_act']:8.3f}   ({r['acting']})")
    click.echo(f"  ms per env step  {r['ms_per_env_step']:8.3f}   (emulator and preprocessing; + {r['ms_per_store']:.3f} ms replay.add)")
    click.echo(f"  peak RSS         {r['peak_rss_mb']:8.1f} MB   (replay {r['replay_mb']:.1f} MB)")


if __name__ == "__main__":
    main()
