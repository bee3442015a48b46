#!/usr/bin/env python
"""Learning throughput, ours against Stable-Baselines3's DQN, side by side on this machine (Breakout or CartPole).

Runs `bench/peers/sb3_dqn.py` (SB3, rl-baselines3-zoo's settings) and
`bench/atari_throughput.py` (ours) one after the other, `--repeats` times
each, alternating (SB3, ours, SB3, ours, ...) so that a machine that slows
down or speeds up during the bench weighs on both sides alike. Each run is
its own process; nothing else should run meanwhile. The replay is filled
with `--fill` env steps of random play first (not timed).

- Breakout (the default): ours is the Breakout preset. Both sides: the Nature
  CNN, batch 32, one update per 4 env steps (ours makes its 4 updates in one
  compiled call every 16 env steps), acting at epsilon 0.01.
- `--env CartPole-v1`: ours is given the zoo's CartPole settings (`ZOO_CARTPOLE`
  below), so both sides do the same work: an MLP of 256-256 without
  LayerNorm, batch 64, 128 updates every 256 env steps, plain 1-step DQN
  targets (SB3's DQN has no Double DQN), a target sync every 10 env steps,
  acting at epsilon 0.04.

Prints env steps/s per run, the median and spread of each side, and the
ratio of the medians; `--json` ends with one line
`{"ours": ..., "sb3": ..., "ratio": ..., ...}`.

    python bench/peers/vs_sb3.py --steps 5000 --repeats 3 [--json]
    python bench/peers/vs_sb3.py --env CartPole-v1 --steps 20000 --fill 1000 --repeats 3 [--json]

Needs the `peers` extra (stable-baselines3 and torch; see docs/throughput.md).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import click

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH.parent))

from agent.core.device import describe_cpu  # noqa: E402  (light: no TensorFlow)
# Our config fields set to rl-baselines3-zoo's CartPole-v1 entry (what decides the cost per env step)
ZOO_CARTPOLE = {"hidden_sizes": "[256,256]", "layer_norm": "false", "dueling": "false", "batch_size": "64", "train_freq": "256",
                "gradient_steps": "128", "target_update_period": "10", "double_dqn": "false", "n_steps": "1",
                "learning_rate": "2.3e-3", "learning_rate_end": "2.3e-3", "epsilon_end": "0.04"}
# The zoo's Atari DQN is the Nature DQN: uniform replay and a plain linear head. Our Breakout preset learns with
# prioritized replay and a dueling head; the side by side turns them off, so both sides do the same work.
ZOO_ATARI = {"prioritized": "false", "dueling": "false"}


def summarize(ours: list[float], sb3: list[float]) -> dict:
    """Median, min and max of each side's env steps/s and the ratio of the medians (ours / SB3).

    `pair_ratios` divides each of our runs by the SB3 run just before it, so
    their spread shows how far one side-by-side pair can be trusted.
    """
    if not ours or not sb3:
        raise ValueError("each side needs at least one run")
    med_ours, med_sb3 = statistics.median(ours), statistics.median(sb3)
    return {
        "ours": round(med_ours, 1), "sb3": round(med_sb3, 1), "ratio": round(med_ours / med_sb3, 3),
        "ours_runs": ours, "sb3_runs": sb3,
        "ours_spread": [min(ours), max(ours)], "sb3_spread": [min(sb3), max(sb3)],
        "pair_ratios": [round(o / s, 3) for o, s in zip(ours, sb3)],
    }


def run_json(args: list[str]) -> dict:
    """Run one bench process and return its last line, a JSON object."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise click.ClickException(f"{' '.join(args[:1])} failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1])


def our_bench_args(env: str, steps: int, fill: int, seed: int) -> list[str]:
    """`bench/atari_throughput.py`'s arguments for the same work as the SB3 side."""
    settings = {**(ZOO_CARTPOLE if env == "CartPole-v1" else ZOO_ATARI), "learning_starts": str(fill)}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return [str(BENCH / "atari_throughput.py"), "--env", env, "--steps", str(steps), "--seed", str(seed), *sets, "--json"]


@click.command()
@click.option("--env", type=click.Choice(["Breakout", "CartPole-v1"]), default="Breakout", show_default=True)
@click.option("--steps", type=int, default=5_000, show_default=True, help="Env steps timed while learning, per run.")
@click.option("--fill", type=int, default=20_000, show_default=True, help="Env steps of random play before timing (ours: the preset's learning_starts).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Runs of each side.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
def main(env: str, steps: int, fill: int, repeats: int, as_json: bool) -> None:
    least = int(ZOO_CARTPOLE["train_freq"]) if env == "CartPole-v1" else 16  # one learner call (Breakout preset: every 16 env steps)
    if repeats < 1 or steps < least:
        raise click.UsageError(f"--repeats must be >= 1 and --steps >= {least} for {env}, got {repeats} and {steps}")
    cpu = describe_cpu()
    click.echo(f"CPU: {cpu['cpu']} ({', '.join(cpu['cpu_flags']) or 'no AVX2'}); {env}: {repeats} runs per side of {steps:,} env steps each")
    ours, sb3 = [], []
    for i in range(repeats):
        peer = run_json([str(BENCH / "peers" / "sb3_dqn.py"), "--env", env, "--steps", str(steps), "--fill", str(fill), "--seed", str(i), "--json"])
        sb3.append(peer["env_steps_per_s"])
        mine = run_json(our_bench_args(env, steps, fill, i))
        ours.append(mine["env_steps_per_s"])
        click.echo(f"  run {i + 1}: SB3 {sb3[-1]:7.1f} env steps/s   ours {ours[-1]:7.1f} env steps/s   ratio {ours[-1] / sb3[-1]:.2f}")
    result = {**summarize(ours, sb3), **cpu, "env": env, "steps": steps, "fill": fill, "repeats": repeats,
              "sb3_version": peer["sb3_version"], "torch_version": peer["torch_version"], "torch_threads": peer["torch_threads"]}
    click.echo(f"  SB3   median {result['sb3']:7.1f} env steps/s (runs {result['sb3_spread'][0]}-{result['sb3_spread'][1]})")
    click.echo(f"  ours  median {result['ours']:7.1f} env steps/s (runs {result['ours_spread'][0]}-{result['ours_spread'][1]})")
    click.echo(f"  ratio {result['ratio']:.2f}x (ours / SB3, medians; pairs {', '.join(f'{r:.2f}' for r in result['pair_ratios'])})")
    if as_json:
        click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
