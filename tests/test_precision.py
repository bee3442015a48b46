"""bfloat16 training (precision="bfloat16" / "auto"): what computes in bfloat16, what stays float32, what gets saved."""

import keras
import numpy as np
import pytest

from agent.config import DQNConfig
from agent.device import cpu_has_bfloat16, describe_precision, resolve_precision
from agent.dqn import DQNAgent
from agent.errors import UserError
from replay import Batch

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile\n"
COOPER_LAKE = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


def test_auto_picks_bfloat16_only_on_a_cpu_that_has_it():
    assert not cpu_has_bfloat16(AVX2_ONLY) and not cpu_has_bfloat16("")  # no flags line (not Linux): no bfloat16
    assert cpu_has_bfloat16(SAPPHIRE_RAPIDS) and cpu_has_bfloat16(COOPER_LAKE)
    assert resolve_precision("auto", cpuinfo=AVX2_ONLY, gpu=False) == "float32"
    assert resolve_precision("auto", cpuinfo=COOPER_LAKE, gpu=False) == "bfloat16"
    assert resolve_precision("auto", cpuinfo=COOPER_LAKE, gpu=True) == "float32"  # a GPU computes: auto leaves it alone
    assert resolve_precision("bfloat16", cpuinfo=AVX2_ONLY, gpu=False) == "bfloat16"  # asked for: emulated, but done
    assert resolve_precision("float32", cpuinfo=SAPPHIRE_RAPIDS, gpu=False) == "float32"
    assert "no AVX512_BF16/AMX" in describe_precision("auto", "float32", gpu=False)
    assert describe_precision("float32", "float32", gpu=False) == "float32"
    assert "on the GPU" in describe_precision("bfloat16", "bfloat16", gpu=True)


def test_an_unknown_precision_is_refused_naming_the_choices():
    with pytest.raises(UserError, match="precision must be one of float32, bfloat16, auto, got 'float16'"):
        DQNConfig(precision="float16")


def frames_batch(rng, n=8) -> Batch:
    return Batch(
        obs=rng.integers(0, 256, (n, 84, 84, 4), dtype=np.uint8),
        actions=rng.integers(0, 4, n).astype(np.int32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_obs=rng.integers(0, 256, (n, 84, 84, 4), dtype=np.uint8),
        terminated=np.zeros(n, np.float32),
    )


@pytest.mark.parametrize("dueling", [False, True])
def test_bfloat16_computes_the_torso_in_bfloat16_and_keeps_weights_head_and_update_in_float32(dueling):
    cfg = DQNConfig(env_id="ALE/Breakout-v5", network="nature_cnn", dueling=dueling, jit_compile=False, precision="bfloat16", batch_size=8)
    agent = DQNAgent((84, 84, 4), np.uint8, 4, cfg, seed=0)
    assert agent.precision == "bfloat16"
    convs = [layer for layer in agent.online.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 3 and all(layer.compute_dtype == "bfloat16" for layer in convs)
    head = agent.online.get_layer("q")
    assert head.compute_dtype == "float32" and agent.online.output.dtype == "float32"
    assert all(w.dtype == "float32" for w in agent.online.weights + agent.target.weights)
    before = [w.copy() for w in agent.online.get_weights()]
    metrics = agent.update(frames_batch(np.random.default_rng(0)))
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, agent.online.get_weights()))  # it learned, in float32 weights
    q = agent.q_values(np.random.default_rng(1).integers(0, 256, (2, 84, 84, 4), dtype=np.uint8))
    assert q.dtype == np.float32 and q.shape == (2, 4)


def test_the_saved_network_is_float32_with_the_trained_weights(tmp_path):
    """model.keras (portable_model) is a float32 twin: readers never compute in bfloat16, and its Q-values match
    the bfloat16 network's within bfloat16's rounding."""
    from agent import run_dir as run_files

    cfg = DQNConfig(env_id="ALE/Breakout-v5", network="nature_cnn", jit_compile=False, precision="bfloat16", batch_size=8)
    agent = DQNAgent((84, 84, 4), np.uint8, 4, cfg, seed=0)
    agent.update(frames_batch(np.random.default_rng(2)))
    run_files.save_model(tmp_path, agent.portable_model())
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert all(layer.compute_dtype == "float32" for layer in loaded.layers if layer.weights)
    for a, b in zip(loaded.get_weights(), agent.online.get_weights()):
        np.testing.assert_array_equal(a, b)
    frames = np.random.default_rng(3).integers(0, 256, (4, 84, 84, 4), dtype=np.uint8)
    full, mixed = loaded(frames).numpy(), agent.online(frames).numpy()
    np.testing.assert_allclose(mixed, full, rtol=0.05, atol=0.02)  # bfloat16: ~3 significant digits per layer
    assert agent.portable_model() is agent._float32_twin  # one twin, refreshed on each call


def test_float32_saves_the_online_network_itself():
    agent = DQNAgent((4,), np.float32, 2, DQNConfig(hidden_sizes=(8,)), seed=0)
    assert agent.precision == "float32" and agent.portable_model() is agent.online
