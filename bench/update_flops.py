#!/usr/bin/env python
"""How close the DQN update comes to what this CPU's TensorFlow can compute: achieved GFLOP/s beside the matmul rate.

For float32 and bfloat16 (Keras's mixed_bfloat16: the torso in bfloat16, the
head and the loss in float32), on the preset's Q-network:

- the TF matmul rate: `tf.matmul` of two 2048x2048 matrices in one
  `tf.function` (2 n^3 FLOPs each), the ceiling a dense kernel reaches here;
- the agent's own compiled update (`DQNAgent.update` on a (K, B) batch, the
  call the learner makes), its milliseconds per update and GFLOP/s, counted
  from the network's layers: the online forward pass on s, its backward pass
  (weight gradients, and input gradients for every layer but the first), the
  target's forward pass on s' (and the online one on s' with Double DQN);
- the update split into its parts, each timed alone in its own
  `tf.function` on the same shapes: the convolutions forward and backward, the
  dense layers forward and backward, the target's forward pass, Adam's step
  (the fused one the agent takes, `agent.dqn.agent.fused_adam_step`).

The share `update GFLOP/s / matmul GFLOP/s` is the figure to move
(docs/throughput.md). Timings are medians over `--repeats` after a warm-up.

    python bench/update_flops.py [--env Breakout] [--batch 32] [--steps 4] [--repeats 20] [--json]
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

MATMUL_N = 2048
PRECISIONS = ("float32", "bfloat16")


def median_seconds(fn, repeats: int) -> float:
    """The median wall time of `fn()` over `repeats` calls, after two untimed calls (tracing, caches)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(dtype: str, repeats: int) -> float:
    import tensorflow as tf

    a = tf.random.normal((MATMUL_N, MATMUL_N), dtype=tf.float32)
    a = tf.cast(a, dtype)
    b = tf.cast(tf.random.normal((MATMUL_N, MATMUL_N), dtype=tf.float32), dtype)
    product = tf.function(lambda: tf.matmul(a, b))
    seconds = median_seconds(lambda: product().numpy(), repeats)
    return 2 * MATMUL_N**3 / seconds / 1e9


def layer_macs(model) -> list[tuple[str, int]]:
    """(layer name, multiply-adds per sample) of every Conv2D and Dense of the model, first to last (dueling heads included)."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            found.append((layer.name, h * w * c_out * kh * kw * layer.input.shape[-1]))
        elif isinstance(layer, keras.layers.Dense):
            found.append((layer.name, layer.input.shape[-1] * layer.units))
        elif hasattr(layer, "value") and hasattr(layer, "advantage"):  # DuelingHead: V and A from one feature vector
            found.append((layer.name, layer.input.shape[-1] * (1 + layer.num_actions)))
    return found


def update_flops(model, batch: int, double_dqn: bool) -> int:
    """FLOPs of one update of `batch` samples: forward on s, backward (weights; inputs but for the first layer), target on s'."""
    macs = [m for _, m in layer_macs(model)]
    forward = 2 * sum(macs)
    backward = 2 * sum(macs) + 2 * sum(macs[1:])
    next_state = forward * (2 if double_dqn else 1)
    return batch * (forward + backward + next_state)


def random_batch(obs_shape, obs_dtype, num_actions: int, steps: int, batch: int, seed: int = 0):
    import numpy as np

    from replay import Batch

    rng = np.random.default_rng(seed)

    def obs():
        if np.dtype(obs_dtype) == np.uint8:
            return rng.integers(0, 256, (steps, batch, *obs_shape), dtype=np.uint8)
        return rng.standard_normal((steps, batch, *obs_shape)).astype(obs_dtype)

    return Batch(obs=obs(), actions=rng.integers(0, num_actions, (steps, batch)), rewards=rng.standard_normal((steps, batch)).astype(np.float32),
                 next_obs=obs(), terminated=np.zeros((steps, batch), bool), discounts=np.full((steps, batch), 0.99, np.float32))


def time_parts(agent, batch, repeats: int) -> dict[str, float]:
    """Milliseconds of the update's parts, each alone: convolutions and dense layers (forward + backward), target, Adam."""
    import keras
    import tensorflow as tf

    online = agent.online
    convs = [layer for layer in online.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Rescaling))]
    flatten_at = next((i for i, layer in enumerate(online.layers) if isinstance(layer, keras.layers.Flatten)), None)
    dense = online.layers[flatten_at:] if flatten_at is not None else online.layers[1:]
    obs, next_obs = tf.convert_to_tensor(batch.obs[0]), tf.convert_to_tensor(batch.next_obs[0])

    def run(layers, x):
        for layer in layers:
            x = layer(x, training=True)
        return x

    features = run(convs, obs) if convs else obs
    conv_vars = [v for layer in convs for v in layer.trainable_variables]
    dense_vars = [v for layer in dense for v in layer.trainable_variables]

    def forward_backward(layers, x, variables):
        """One compiled forward and backward pass of `layers` on `x`: the gradients of a mean output."""

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.cast(run(layers, x), tf.float32))
            return tape.gradient(loss, variables)

        return step

    conv_step, dense_step = forward_backward(convs, obs, conv_vars), forward_backward(dense, features, dense_vars)

    target_forward = tf.function(lambda: agent.target(next_obs, training=False))
    variables = online.trainable_variables
    grads = [tf.zeros_like(v) for v in variables]
    from agent.dqn.agent import fused_adam_step

    adam = keras.optimizers.Adam(learning_rate=0.0)  # its own slots: the agent's optimizer state stays as it was
    adam.build(variables)
    # the step the agent takes: fused where it can be (`DQNAgent._fused_adam`), Keras's own otherwise
    adam_step = tf.function(lambda: fused_adam_step(adam, grads, variables) if agent._fused_adam else adam.apply(grads, variables))
    parts = {"dense": lambda: [g.numpy() for g in dense_step()], "target_forward": lambda: target_forward().numpy(),
             "adam": lambda: adam_step()}
    if convs and conv_vars:
        parts = {"convolutions": lambda: [g.numpy() for g in conv_step()], **parts}
    return {name: round(1e3 * median_seconds(fn, repeats), 3) for name, fn in parts.items()}


def measure(cfg, precision: str, steps: int, batch_size: int, repeats: int) -> dict:
    """The update's and its parts' timings in one precision, beside the matmul rate in that dtype."""
    from agent.dqn.agent import DQNAgent
    from envs import make_env, obs_signature

    cfg = cfg.replace(precision=precision, batch_size=batch_size, gradient_steps=steps)  # --set fused_adam=true: the fused step
    env = make_env(cfg.env_id, seed=cfg.seed, mode="train", **_env_options(cfg))
    obs_shape, obs_dtype, num_actions = obs_signature(env)
    env.close()
    agent = DQNAgent(obs_shape, obs_dtype, num_actions, cfg, seed=cfg.seed)
    batch = random_batch(obs_shape, obs_dtype, num_actions, steps, batch_size)
    seconds = median_seconds(lambda: agent.update(batch), repeats) / steps
    flops = update_flops(agent.online, batch_size, cfg.double_dqn)
    matmul = matmul_gflops(precision, repeats)
    update_gflops = flops / seconds / 1e9
    return {
        "precision": agent.precision, "matmul_gflops": round(matmul, 1), "ms_per_update": round(1e3 * seconds, 3),
        "update_gflops": round(update_gflops, 1), "share_of_matmul": round(update_gflops / matmul, 3),
        "gflop_per_update": round(flops / 1e9, 3), "parts_ms": time_parts(agent, batch, repeats),
    }


def _env_options(cfg) -> dict:
    from agent.core.config import env_options

    return env_options(cfg)


@click.command()
@click.option("--env", "env_id", default="Breakout", show_default=True, help="The env whose preset and network are measured.")
@click.option("--batch", "batch_size", type=int, default=32, show_default=True, help="Samples per update.")
@click.option("--steps", type=int, default=4, show_default=True, help="Updates per compiled call (the preset's gradient_steps: 4).")
@click.option("--repeats", type=int, default=20, show_default=True, help="Timed calls per figure (the median is reported).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a preset field (e.g. dueling=false).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
@cli_errors(also=(EnvError,))
def main(env_id, batch_size, steps, repeats, overrides, as_json):
    from common.errors import UserError

    if batch_size < 1 or steps < 1 or repeats < 1:
        raise UserError(f"--batch, --steps and --repeats must be >= 1, got {batch_size}, {steps}, {repeats}")
    tfquiet.setup()
    from agent.core import config as config_lib
    from agent.core.device import describe_cpu
    from agent.core.presets import resolve_config

    cfg = resolve_config(env_id=env_id, overrides=config_lib.parse_overrides(overrides))
    rows = [measure(cfg, precision, steps, batch_size, repeats) for precision in PRECISIONS]
    result = {"env_id": cfg.env_id, "batch_size": batch_size, "gradient_steps": steps, "network": cfg.network, "dueling": cfg.dueling,
              "double_dqn": cfg.double_dqn, "results": rows, **describe_cpu()}
    click.echo(f"{cfg.env_id}: the {cfg.network} update, batch {batch_size}, {steps} per call; CPU: {result['cpu']} "
               f"({', '.join(result['cpu_flags']) or 'no AVX2'})")
    for r in rows:
        click.echo(f"  {r['precision']:<9} matmul {r['matmul_gflops']:7.1f} GFLOP/s | update {r['ms_per_update']:7.2f} ms = "
                   f"{r['update_gflops']:6.1f} GFLOP/s ({100 * r['share_of_matmul']:.0f}% of matmul; {r['gflop_per_update']:.2f} GFLOP each)")
        click.echo("            parts alone (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in r["parts_ms"].items()))
    if as_json:
        click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
