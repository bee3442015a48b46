#!/usr/bin/env python
"""Does DQN solve an env, and is the agent the run ends with still good?

Trains `--seeds N` seeds one after another, each for the preset's whole
`total_steps` (no early stop). Every `--eval-every` env steps (1,000) the
greedy policy plays 10 episodes on a separate env; the first evaluation with a
mean >= the threshold (the env's reward threshold: 475 for CartPole-v1, -100
for Acrobot-v1, -110 for MountainCar-v0) is the *first solve*. At the end, the
network the run ended with (the one in `model.keras`) plays 100 greedy
episodes: that is the *final* figure, what a user who watches the run sees.
Training seconds exclude the evaluations, which are reported separately.
Over the seeds, the first solve (an unsolved seed counting as the whole
budget) and the final figure are summed up by their median and by their
IQM with its 95% stratified bootstrap interval (agent.plot.stats).

    python bench/solve.py --seeds 10 [--preset handbook] [--set key=value ...] [--json]
    python bench/solve.py --env Acrobot-v1 --seeds 3 --eval-every 5000
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click  # noqa: E402

from common.errors import cli_errors  # noqa: E402

EVAL_EPISODES = 10
FINAL_EPISODES = 100


@click.command()
@click.option("--seeds", type=int, default=10, show_default=True, help="Number of seeds (first-seed, ..., first-seed+N-1).")
@click.option("--first-seed", type=int, default=0, show_default=True)
@click.option("--env", "env_id", default=None, help="Env id, with its own preset unless --preset [default: the preset's env; CartPole-v1].")
@click.option("--preset", default=None, help="Preset from configs/ (default: the env's own).")
@click.option("--threshold", type=float, default=None, help="Evaluation mean that counts as solved (default: the env's reward threshold).")
@click.option("--eval-every", type=int, default=1_000, show_default=True, help="Env steps between evaluations.")
@click.option("--steps", type=int, default=None, help="Env steps per seed (default: the preset's total_steps).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
@cli_errors()
def main(seeds, first_seed, env_id, preset, threshold, eval_every, steps, overrides, as_json):
    from common import tfquiet

    tfquiet.setup()
    from agent.core import config as config_lib
    from agent.plot import stats
    from agent.core.device import cpu_model
    from common.errors import UserError
    from agent.core.presets import preset_for_env, resolve_config
    from agent.run.trainer import train
    from envs import reward_threshold

    base = resolve_config(env_id=env_id or (None if preset else "CartPole-v1"), preset=preset, overrides=config_lib.parse_overrides(overrides))
    if steps is not None:
        base = base.replace(total_steps=steps)  # validated on construction
    env_id = base.env_id
    threshold = threshold if threshold is not None else reward_threshold(env_id)
    if threshold is None:
        raise UserError(f"{env_id} has no reward threshold; pass --threshold")
    preset = preset or preset_for_env(env_id)
    total = base.total_steps
    protocol = dict(eval_every=eval_every, eval_episodes=EVAL_EPISODES, final_eval_episodes=FINAL_EPISODES, eval_epsilon=0.0,
                    stop_on_solve=False, solve_return=threshold, checkpoint_every=0, record_every=0)
    click.echo(f"{env_id}, preset {preset}{' ' + ' '.join(overrides) if overrides else ''}: {total:,} env steps per seed; "
               f"greedy evaluations of {EVAL_EPISODES} episodes every {eval_every:,} env steps; solved at >= {threshold:g}; "
               f"final network: {FINAL_EPISODES} episodes; CPU: {cpu_model()}")
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        cfg = base.replace(seed=seed, **protocol)
        with tempfile.TemporaryDirectory(prefix="solve-") as tmp:
            result = train(cfg, Path(tmp), progress=False)
        solved = result.solved_at is not None
        evals = {e["env_step"]: e for e in result.evaluations}
        after = [e for e in result.evaluations if solved and e["env_step"] > result.solved_at]
        row = {
            "seed": seed, "solved": solved, "steps": result.solved_at,
            "train_seconds": round(evals[result.solved_at]["train_seconds"], 2) if solved else None,
            "total_train_seconds": round(result.train_seconds, 2), "eval_seconds": round(result.eval_seconds, 2),
            "best_eval": max(e["mean"] for e in result.evaluations),
            "evals_after_solve": len(after), "held_after_solve": sum(e["mean"] >= threshold for e in after),
            "final": round(result.final_eval["mean"], 1), "final_min": result.final_eval["min"],
        }
        rows.append(row)
        first = f"first solve at {row['steps']:>6,} env steps ({row['train_seconds']:5.2f} s)" if solved else f"never solved (best {row['best_eval']:.1f})"
        click.echo(f"seed {seed}: {first}; held >= {threshold:g} in {row['held_after_solve']}/{row['evals_after_solve']} later evaluations; "
                   f"final {row['final']:6.1f} (min {row['final_min']:.0f}) over {FINAL_EPISODES}; {row['total_train_seconds']:.1f} s training")
    # An unsolved seed counts as the whole budget for the median and the IQM, so failures are not hidden.
    first_solve_steps = [r["steps"] if r["solved"] else total for r in rows]
    median_steps = statistics.median(first_solve_steps)
    median_seconds = statistics.median(r["train_seconds"] if r["solved"] else r["total_train_seconds"] for r in rows)
    finals = [r["final"] for r in rows]
    final_solved = sum(f >= threshold for f in finals)
    # IQM (mean of the middle half of the seeds) and its 95% stratified bootstrap interval (agent.plot.stats; Agarwal et al. 2021).
    iqm_steps = stats.summarize(first_solve_steps)
    iqm_final = stats.summarize(finals)
    click.echo(f"first solve: {sum(r['solved'] for r in rows)}/{len(rows)} seeds, median {median_steps:,.0f} env steps, "
               f"IQM {iqm_steps.iqm:,.0f} (95% CI {iqm_steps.iqm_ci[0]:,.0f}-{iqm_steps.iqm_ci[1]:,.0f}), {median_seconds:.2f} s training")
    click.echo(f"final ({FINAL_EPISODES} episodes): {final_solved}/{len(rows)} seeds >= {threshold:g}; "
               f"median {statistics.median(finals):.1f}, IQM {iqm_final.iqm:.1f} (95% CI {iqm_final.iqm_ci[0]:.1f}-{iqm_final.iqm_ci[1]:.1f}), "
               f"min {min(finals):.1f}; per seed {', '.join(f'{f:g}' for f in finals)}")
    if as_json:
        click.echo(json.dumps({
            "env": env_id, "threshold": threshold, "preset": preset, "overrides": list(overrides), "total_steps": total, "cpu": cpu_model(), "seeds": rows,
            "solved": sum(r["solved"] for r in rows), "median_steps": median_steps, "median_seconds": round(median_seconds, 2),
            "final_solved": final_solved, "median_final": statistics.median(finals), "min_final": min(finals),
            "iqm_steps": round(iqm_steps.iqm, 1), "iqm_steps_ci": [round(v, 1) for v in iqm_steps.iqm_ci],
            "iqm_final": round(iqm_final.iqm, 2), "iqm_final_ci": [round(v, 2) for v in iqm_final.iqm_ci],
        }))


if __name__ == "__main__":
    main()
