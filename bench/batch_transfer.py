#!/usr/bin/env python
"""What the sampled batch costs between numpy and TensorFlow, against the update it feeds.

The issue of throughput asked whether the learner call copies the batch more
than it must. A Breakout learner call samples `gradient_steps` batches of 32
stacked frames from the frame memory (numpy: the stacks are rebuilt from
stored frames, one copy that cannot be avoided) and hands them to the compiled
update, where `tf.convert_to_tensor` turns obs and next_obs into tensors (a
copy into TensorFlow's memory, unless it can share the numpy buffer). This
times the three apart, each the median of `--repeats` calls:

- `ms_sample`: `replay.sample_many` (the gather that builds the stacks);
- `ms_to_tensor`: converting that batch's arrays into tensors as
  `DQNAgent.compute_update` does;
- `ms_update`: the whole compiled call, conversion included (with
  `prioritized=true`, the Breakout preset's, the weighted update the loop runs).

The replay holds random frames (the content does not change the copies).

    python bench/batch_transfer.py --env Breakout [--set key=value ...] [--json]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import tfquiet  # noqa: E402

tfquiet.set_environment()

import click  # noqa: E402

from common.errors import cli_errors  # noqa: E402
from envs import EnvError  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    """The median wall time of `fn()` over `repeats` calls, in ms (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@click.command()
@click.option("--env", "env_id", default="Breakout", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a preset field.")
@click.option("--fill", type=int, default=5_000, show_default=True, help="Transitions of random frames put in the replay first.")
@click.option("--repeats", type=int, default=30, show_default=True, help="Timed calls of each part (the median is reported).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
@cli_errors(also=(EnvError,))
def main(env_id, overrides, fill, repeats, as_json):
    if repeats < 1 or fill < 100:
        raise click.UsageError(f"--repeats must be >= 1 and --fill >= 100 (transitions to sample from), got {repeats} and {fill}")
    tfquiet.setup()
    import numpy as np

    from agent.core import config as config_lib
    from agent.core.device import describe_cpu
    from agent.core.presets import resolve_config
    from agent.run.loop import build_agent, make_replay
    from envs import make_env, obs_signature

    cfg = resolve_config(env_id=env_id, overrides=config_lib.parse_overrides(overrides))
    env = make_env(cfg.env_id, seed=cfg.seed, mode="train")
    obs_shape, obs_dtype, num_actions = obs_signature(env)
    env.close()
    agent = build_agent(cfg, env)
    replay = make_replay(cfg, obs_shape, obs_dtype)
    rng = np.random.default_rng(cfg.seed)
    obs = rng.integers(0, 256, size=obs_shape, dtype=np.uint8)
    for t in range(fill):
        next_obs = np.concatenate([obs[..., 1:], rng.integers(0, 256, size=(*obs_shape[:-1], 1), dtype=np.uint8)], axis=-1)
        replay.add(obs, int(rng.integers(num_actions)), 0.0, next_obs, (t + 1) % 1000 == 0)
        obs = next_obs

    batch = replay.sample_many(cfg.gradient_steps, cfg.batch_size)
    weights = np.ones(np.shape(batch.actions), np.float32)

    def update():
        return agent.update_prioritized(batch, weights) if cfg.prioritized else agent.update(batch)

    def to_tensors():
        return agent.batch_tensors(batch, weights if cfg.prioritized else None)

    batch_bytes = sum(np.asarray(x).nbytes for x in (batch.obs, batch.next_obs, batch.actions, batch.rewards, batch.discounts))
    result = {
        "env_id": cfg.env_id, "gradient_steps": cfg.gradient_steps, "batch_size": cfg.batch_size,
        "batch_mb": round(batch_bytes / 2**20, 3),
        "ms_sample": round(median_ms(lambda: replay.sample_many(cfg.gradient_steps, cfg.batch_size), repeats), 3),
        "ms_to_tensor": round(median_ms(to_tensors, repeats), 3),
        "ms_update": round(median_ms(update, max(3, repeats // 3)), 2),
        **describe_cpu(),
    }
    result["to_tensor_share"] = round(result["ms_to_tensor"] / result["ms_update"], 4)
    click.echo(f"{cfg.env_id}: a learner call of {cfg.gradient_steps} batch(es) of {cfg.batch_size} ({result['batch_mb']} MB), "
               f"medians of {repeats} calls, CPU: {result['cpu']} ({', '.join(result['cpu_flags']) or 'no AVX2'})")
    click.echo(f"  sampling (numpy gather)   {result['ms_sample']:8.3f} ms")
    click.echo(f"  numpy -> tensors          {result['ms_to_tensor']:8.3f} ms   ({100 * result['to_tensor_share']:.2f}% of the call)")
    click.echo(f"  the compiled call         {result['ms_update']:8.2f} ms   (conversion included)")
    if as_json:
        click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
