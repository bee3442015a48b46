#!/usr/bin/env python
"""How fast does DQN solve CartPole-v1? Env steps and seconds to the first solving evaluation.

Trains `--seeds N` seeds one after another. Every 1,000 env steps the greedy
policy plays 10 episodes on a separate env; the first evaluation whose mean
return is >= 475 (CartPole-v1's reward threshold) counts as solved, and the
run stops there (at most 100,000 env steps). Training seconds exclude the
evaluations, which are reported separately.

    python bench/cartpole_solve.py --seeds 5 [--preset handbook] [--set key=value ...] [--json]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click  # noqa: E402

MAX_STEPS = 100_000  # env steps allowed per seed
EVAL_EVERY = 1_000  # env steps between evaluations
EVAL_EPISODES = 10
THRESHOLD = 475.0


@click.command()
@click.option("--seeds", type=int, default=5, show_default=True, help="Number of seeds (0, 1, ..., N-1).")
@click.option("--first-seed", type=int, default=0, show_default=True)
@click.option("--preset", default="cartpole", show_default=True, help="Preset from configs/.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
def main(seeds, first_seed, preset, overrides, as_json):
    from agent import config as config_lib
    from agent.errors import UserError
    from agent.presets import resolve_config
    from agent.training import train

    try:
        base = resolve_config(preset=preset, overrides=config_lib.parse_overrides(overrides))
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    protocol = dict(total_steps=MAX_STEPS, eval_every=EVAL_EVERY, eval_episodes=EVAL_EPISODES, eval_epsilon=0.0,
                    stop_on_solve=True, solve_return=THRESHOLD, checkpoint_every=0, record_every=0)
    click.echo(f"preset {preset}: first greedy evaluation (10 episodes) with mean >= {THRESHOLD:g}, eval every {EVAL_EVERY:,} env steps, at most {MAX_STEPS:,}")
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        cfg = base.replace(seed=seed, **protocol)
        with tempfile.TemporaryDirectory(prefix="cartpole-solve-") as tmp:
            result = train(cfg, Path(tmp), progress=False)
        solved = result.solved_at is not None
        evals = {e["env_step"]: e for e in result.evaluations}
        train_s = evals[result.solved_at]["train_seconds"] if solved else result.train_seconds
        row = {"seed": seed, "solved": solved, "steps": result.solved_at if solved else None,
               "train_seconds": round(train_s, 2), "eval_seconds": round(result.eval_seconds, 2),
               "best_eval": max(e["mean"] for e in result.evaluations)}
        rows.append(row)
        status = f"solved at {row['steps']:>6,} env steps" if solved else f"NOT solved in {MAX_STEPS:,} (best {row['best_eval']:.1f})"
        click.echo(f"seed {seed}: {status}, {train_s:6.2f} s training, {result.eval_seconds:5.2f} s evaluating", err=False)
    solved_rows = [r for r in rows if r["solved"]]
    # Unsolved seeds count as the budget (100,000 steps) for the median, so failures are not hidden.
    median_steps = statistics.median(r["steps"] if r["solved"] else MAX_STEPS for r in rows)
    median_seconds = statistics.median(r["train_seconds"] for r in rows)
    click.echo(f"solved {len(solved_rows)}/{len(rows)} within {MAX_STEPS:,} env steps; median {median_steps:,.0f} env steps, median {median_seconds:.2f} s training")
    if as_json:
        click.echo(json.dumps({"preset": preset, "seeds": rows, "solved": len(solved_rows),
                               "median_steps": median_steps, "median_seconds": round(median_seconds, 2)}))


if __name__ == "__main__":
    main()
