#!/usr/bin/env python
"""Atari training throughput: env steps/s while learning, and where the time goes.

Fills the replay to the preset's `learning_starts` with random play (not
timed), then runs `--steps` env steps of the real loop (act, step, store,
learn every `train_freq` env steps, target sync) and times each part.
Acting uses the preset's final epsilon, so the network runs on ~every step,
as it does for most of a run.

With `prioritized=true` (the Breakout preset's; `--prioritized` turns it on
for any preset) it learns from prioritized replay (Schaul et al. 2016) as the
training loop does: `sample_prioritized`, the weighted update, then
`update_priorities`, whose time is reported on its own
(`ms_per_priority_update`); `--set prioritized=false` measures uniform replay.

With `--set overlap_learning=true` each learner call runs in a worker thread
while the next `train_freq` env steps are taken (agent/learner.py), as the
training loop then does; `ms_per_update` is then the loop's own time per
update in the call (sampling, waiting for the call before, priorities), not
the update's compute, and `ms_per_sample` and `ms_per_priority_update` are
null (they are inside it: `--set overlap_learning=false` times them apart).

    python bench/atari_throughput.py --env Breakout --steps 5000 [--prioritized] [--set key=value ...] [--json]
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tfquiet  # noqa: E402

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
    import numpy as np

    from agent.core import config as config_lib
    from agent.core.presets import resolve_config
    from agent.core.device import describe_cpu
    from agent.run.learner import Learner
    from agent.run.run_state import LoopState
    from agent.run.training import build_agent, make_replay, replay_targets
    from envs import make_env, obs_signature

    cfg = resolve_config(env_id=env_id, overrides={"seed": seed, **config_lib.parse_overrides(overrides)})
    if prioritized:
        cfg = cfg.replace(prioritized=True)
    env = make_env(cfg.env_id, seed=cfg.seed, mode="train")
    obs_shape, obs_dtype, num_actions = obs_signature(env)
    agent = build_agent(cfg, env)
    replay = make_replay(cfg, obs_shape, obs_dtype)
    rng = np.random.default_rng(seed)

    def env_step(obs, action):
        next_obs, reward, terminated, truncated, _ = env.step(action)
        stored_reward, ends = replay_targets(float(reward), terminated, truncated, cfg)
        replay.add(obs, action, stored_reward, next_obs, ends, truncated=truncated)
        if terminated or truncated:
            next_obs, _ = env.reset()
        return next_obs

    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    for _ in range(cfg.learning_starts):
        obs = env_step(obs, int(rng.integers(num_actions)))
    fill_s = time.perf_counter() - t0

    learner = Learner(cfg, agent, replay, LoopState(obs=obs), overlap=True) if cfg.overlap_learning else None
    if learner is not None and not learner.overlap:  # acting in TF (a BLAS other than OpenBLAS): the calls stay in line, timed apart below
        learner.close()
        learner = None

    def learn():
        """The learner call of the training loop; returns the seconds of (sampling, update, priority update)."""
        a = time.perf_counter()
        if learner is not None:  # overlapped: one figure, the loop's time in the call
            learner.call(cfg.priority_beta_start)
            return 0.0, time.perf_counter() - a, 0.0
        if not cfg.prioritized:
            batch = replay.sample_many(cfg.gradient_steps, cfg.batch_size)
            b = time.perf_counter()
            agent.update(batch)
            return b - a, time.perf_counter() - b, 0.0
        drawn = replay.sample_prioritized(cfg.gradient_steps, cfg.batch_size, cfg.priority_beta_start)
        b = time.perf_counter()
        _, td_errors = agent.update_prioritized(drawn.batch, drawn.weights)
        c = time.perf_counter()
        replay.update_priorities(drawn.indices, td_errors)
        return b - a, c - b, time.perf_counter() - c

    # Warm-up: trace the update and the acting function once, outside the timing.
    learn()
    if learner is not None:
        learner.settle()
    agent.act(obs[None], 0.0)

    epsilon = cfg.epsilon_end
    t_act = t_env = t_sample = t_update = t_priorities = 0.0
    updates_before = agent.num_updates
    start = time.perf_counter()
    for step in range(1, steps + 1):
        a = time.perf_counter()
        action = int((learner or agent).act(obs[None], epsilon)[0])
        b = time.perf_counter()
        obs = env_step(obs, action)
        c = time.perf_counter()
        t_act += b - a
        t_env += c - b
        if step % cfg.train_freq == 0:
            sample_s, update_s, priorities_s = learn()
            t_sample += sample_s
            t_update += update_s
            t_priorities += priorities_s
        if cfg.target_update_period and step % cfg.target_update_period == 0:
            if learner is not None:
                learner.settle()
            agent.sync_target()
    if learner is not None:
        learner.settle()  # the last call's compute belongs to the timed steps
    total = time.perf_counter() - start
    updates = agent.num_updates - updates_before  # as the agent counts them: every call's updates were taken in
    if learner is not None:
        learner.close()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    overlapped = learner is not None
    result = {
        "env_id": cfg.env_id, "steps": steps, "train_freq": cfg.train_freq, "gradient_steps": cfg.gradient_steps,
        "batch_size": cfg.batch_size, "jit_compile": cfg.jit_compile, "acting": "numpy" if agent.acts_in_numpy else "tensorflow",
        "precision": agent.precision, "overlap_learning": overlapped,
        "env_steps_per_s": round(steps / total, 1),
        "updates_per_s": round(updates / total, 2),
        "ms_per_update": round(1000 * t_update / max(updates, 1), 2),
        # Overlapped, sampling and priority updates are inside the loop's time per call (ms_per_update): not split out (null).
        "ms_per_sample": None if overlapped else round(1000 * t_sample / max(updates, 1), 3),
        "ms_per_act": round(1000 * t_act / steps, 3),
        "ms_per_env_step": round(1000 * t_env / steps, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "replay_mb": round(replay.nbytes / 2**20, 1),
        "fill_seconds": round(fill_s, 1),
        **describe_cpu(),
    }
    if cfg.prioritized:
        result.update(prioritized=True, ms_per_priority_update=None if overlapped else round(1000 * t_priorities / max(updates, 1), 3))
    how = f"{agent.precision}, overlapped with acting" if overlapped else agent.precision
    click.echo(f"{cfg.env_id}: {steps:,} env steps while learning ({cfg.gradient_steps} update(s) of batch {cfg.batch_size} every "
               f"{cfg.train_freq} env steps, {how}), after {cfg.learning_starts:,} steps of random fill ({fill_s:.1f} s)")
    click.echo(f"  CPU              {result['cpu']} ({', '.join(result['cpu_flags']) or 'no AVX2'})")
    click.echo(f"  env steps/s      {result['env_steps_per_s']:8.1f}")
    click.echo(f"  updates/s        {result['updates_per_s']:8.2f}")
    if overlapped:
        click.echo(f"  ms per update    {result['ms_per_update']:8.2f}   (the loop's own time in the calls: sampling, waiting, priorities;"
                   " --set overlap_learning=false splits them)")
    else:
        click.echo(f"  ms per update    {result['ms_per_update']:8.2f}   (+ {result['ms_per_sample']:.3f} ms sampling the batch"
                   + (f", + {result['ms_per_priority_update']:.3f} ms updating its priorities)" if cfg.prioritized else ")"))
    click.echo(f"  ms per act       {result['ms_per_act']:8.3f}   ({result['acting']})")
    click.echo(f"  ms per env step  {result['ms_per_env_step']:8.3f}   (emulator, preprocessing and replay.add)")
    click.echo(f"  peak RSS         {result['peak_rss_mb']:8.1f} MB   (replay {result['replay_mb']:.1f} MB)")
    if as_json:
        click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
