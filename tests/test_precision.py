"""bfloat16 training (precision="bfloat16" / "auto"): what computes in bfloat16, what stays float32, what gets saved."""

import keras
import numpy as np
import pytest

from agent.core.config import DQNConfig
from agent.core.device import cpu_has_bfloat16, describe_precision, resolve_precision
from agent.dqn.agent import DQNAgent
from common.errors import UserError
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
    assert resolve_precision("auto", image_input=False, cpuinfo=SAPPHIRE_RAPIDS, gpu=False) == "float32"  # an MLP: faster in float32
    assert DQNConfig().precision == "auto"  # the default: bfloat16 where it pays, float32 elsewhere
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
    assert agent.online.get_layer("scale").compute_dtype == "float32"  # 1/255 in bfloat16 would be 1/254
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
    from agent.run.run_dir import RunDirectory

    cfg = DQNConfig(env_id="ALE/Breakout-v5", network="nature_cnn", jit_compile=False, precision="bfloat16", batch_size=8)
    agent = DQNAgent((84, 84, 4), np.uint8, 4, cfg, seed=0)
    agent.update(frames_batch(np.random.default_rng(2)))
    RunDirectory(tmp_path).save_model(agent.portable_model())
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert all(layer.compute_dtype == "float32" for layer in loaded.layers if not isinstance(layer, keras.layers.InputLayer))
    assert len(loaded.get_weights()) == len(agent.online.get_weights()) == 10
    for a, b in zip(loaded.get_weights(), agent.online.get_weights()):
        np.testing.assert_array_equal(a, b)
    frames = np.random.default_rng(3).integers(0, 256, (4, 84, 84, 4), dtype=np.uint8)
    full, mixed = loaded(frames).numpy(), agent.online(frames).numpy()
    np.testing.assert_allclose(mixed, full, rtol=0.05, atol=0.02)  # bfloat16: ~3 significant digits per layer
    assert agent.portable_model() is agent._float32_twin  # one twin, refreshed on each call


def test_float32_saves_the_online_network_itself():
    agent = DQNAgent((4,), np.float32, 2, DQNConfig(hidden_sizes=(8,)), seed=0)
    assert agent.precision == "float32" and agent.portable_model() is agent.online


def test_the_mlp_with_layer_norm_trains_in_bfloat16_under_xla_and_acts_in_float32_numpy():
    """The CartPole path: LayerNorm, XLA-compiled update; acting (numpy, float32) agrees with the bfloat16 network."""
    cfg = DQNConfig(hidden_sizes=(32, 32), layer_norm=True, precision="bfloat16", jit_compile=True, batch_size=16)
    agent = DQNAgent((4,), np.float32, 2, cfg, seed=0)
    dense = [layer for layer in agent.online.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.compute_dtype for layer in dense] == ["bfloat16", "bfloat16", "float32"]  # torso, torso, head
    rng = np.random.default_rng(4)
    batch = Batch(obs=rng.normal(size=(16, 4)).astype(np.float32), actions=rng.integers(0, 2, 16).astype(np.int32),
                  rewards=np.ones(16, np.float32), next_obs=rng.normal(size=(16, 4)).astype(np.float32), terminated=np.zeros(16, np.float32))
    for _ in range(3):
        assert np.isfinite(agent.update(batch)["loss"])
    assert agent.acts_in_numpy
    obs = rng.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(agent.q_values(obs), agent.online(obs).numpy(), rtol=0.05, atol=0.02)


def test_building_leaves_the_global_dtype_policy_as_it_was():
    from agent.dqn.networks import build_q_network

    keras.config.set_dtype_policy("float16")
    try:
        model = build_q_network((4,), np.float32, 2, hidden_sizes=(8,), precision="bfloat16")
        assert keras.config.dtype_policy().name == "float16"
        assert model.get_layer("q").compute_dtype == "float32"  # the user's global policy reaches no layer of ours
        with pytest.raises(ValueError, match="nature_cnn needs image observations"):
            build_q_network((4,), np.float32, 2, kind="nature_cnn", precision="bfloat16")
        assert keras.config.dtype_policy().name == "float16"
    finally:
        keras.config.set_dtype_policy("float32")


def test_a_bfloat16_run_saves_float32_networks(tmp_path):
    """train() writes model.keras and best_model.keras through portable_model: float32 layers only."""
    from agent.run.trainer import train

    cfg = DQNConfig(hidden_sizes=(16,), precision="bfloat16", jit_compile=False, total_steps=300, learning_starts=100, batch_size=16,
                    eval_every=150, eval_episodes=1, final_eval_episodes=1, checkpoint_every=0, log_every=150)
    train(cfg, tmp_path, progress=False)
    for name in ("model.keras", "best_model.keras"):
        model = keras.models.load_model(tmp_path / name, compile=False)
        assert {layer.compute_dtype for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)} == {"float32"}, name


def test_resuming_in_another_precision_warns_and_goes_on(tmp_path, capsys):
    """precision=auto resolves per machine: a checkpoint trained in bfloat16, resumed where auto means float32."""
    from agent.run.run_state import RunPart

    cfg = DQNConfig(precision="auto")
    RunPart(cfg, {"obs_shape": [4]}, "bfloat16").save_state(tmp_path)
    RunPart(cfg, {"obs_shape": [4]}, "float32").load_state(tmp_path, "checkpoint step-000000100")
    assert "warning: checkpoint step-000000100 trained in bfloat16, this machine computes in float32 (precision=auto)" in capsys.readouterr().err
    RunPart(cfg, {"obs_shape": [4]}, "bfloat16").load_state(tmp_path, "checkpoint step-000000100")
    assert capsys.readouterr().err == ""
