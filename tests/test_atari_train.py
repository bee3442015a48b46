"""train.py on the real Breakout ROM and on pixel CartPole: the same loop, a CNN and the frame memory."""

import numpy as np
import pytest
from click.testing import CliRunner

import train as train_cli
from agent.run.run_dir import RunDirectory

SMOKE = ["--set", "replay_capacity=2000", "--set", "learning_starts=200", "--set", "train_freq=16",
         "--set", "gradient_steps=2", "--set", "eval_epsilon=1.0", "--eval-episodes", "1", "--no-progress"]


def cli(*args):
    result = CliRunner().invoke(train_cli.main, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def breakout_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("breakout") / "run"
    code, out = cli("--env", "Breakout", "--steps", "400", "--run-dir", str(run), *SMOKE)
    assert code == 0, out
    return run


def test_breakout_smoke_run_writes_a_loadable_run(breakout_run):
    cfg = RunDirectory(breakout_run).load_config()
    assert cfg.env_id == "ALE/Breakout-v5" and cfg.network == "nature_cnn"
    model = RunDirectory(breakout_run).load_model()
    assert model.input_shape == (None, 84, 84, 4) and model.output_shape == (None, 4)
    assert model.inputs[0].dtype == "uint8"
    conv = [layer for layer in model.layers if layer.name.startswith("torso_conv")]
    assert [(c.filters, c.kernel_size, c.strides) for c in conv] == [(32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)), (64, (3, 3), (1, 1))]
    meta = RunDirectory(breakout_run).load_meta()
    assert meta["obs_shape"] == [84, 84, 4] and meta["obs_dtype"] == "uint8" and meta["updates"] > 0
    q = model(np.zeros((1, 84, 84, 4), np.uint8)).numpy()
    assert np.isfinite(q).all()


def test_pixel_cartpole_smoke_run(tmp_path):
    run = tmp_path / "run"
    code, out = cli("--env", "CartPole-v1", "--pixels", "--steps", "300", "--run-dir", str(run), *SMOKE)
    assert code == 0, out
    assert "for 300 agent steps (2 env steps each)" in out  # the preset holds each action for 2 env steps
    assert "  agent steps    300  (" in out and " agent steps/s)" in out  # the summary counts in the same unit
    cfg = RunDirectory(run).load_config()
    assert cfg.pixels and cfg.network == "nature_cnn"
    assert RunDirectory(run).load_meta()["obs_shape"] == [84, 84, 4]


def test_pixel_observations_show_motion():
    from envs import make_env

    env = make_env("CartPole-v1", seed=0, pixels=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    assert all(np.array_equal(obs[..., 0], obs[..., k]) for k in range(4))  # reset: 4 copies of the first frame
    for _ in range(5):
        nxt, *_ = env.step(1)
        np.testing.assert_array_equal(nxt[..., :3], obs[..., 1:])  # the stack shifts by one frame per step
        obs = nxt
    assert not np.array_equal(obs[..., 0], obs[..., -1])  # and the frames differ: motion is visible


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "ALE/NoSuchGame-v5"], "NoSuchGame"),
        (["--env", "Breakout", "--set", "replay_capacity=200000000"], "GiB of memory is available"),
    ],
)
def test_atari_bad_input_is_one_line(tmp_path, args, message):
    run = tmp_path / "run"
    code, out = cli(*args, "--run-dir", str(run), "--no-progress")
    assert code == 2, out
    lines = out.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], out
    assert not any(line.startswith("Traceback") for line in lines)
    assert not run.exists()


def test_cartpole_network_refused_for_breakout(tmp_path, breakout_run):
    """A CartPole run's model passed where a Breakout torso is expected: one line, nothing written."""
    cart = tmp_path / "cart"
    code, out = cli("--steps", "300", "--run-dir", str(cart), "--set", "learning_starts=100", "--eval-episodes", "1", "--no-progress")
    assert code == 0, out
    run = tmp_path / "bk"
    code, out = cli("--env", "Breakout", "--steps", "100", "--run-dir", str(run), "--init-from", str(cart / "model.keras"), *SMOKE)
    assert code == 2, out
    assert out.strip().splitlines()[-1].startswith("error: --init-from:"), out
    assert not run.exists()


def test_any_ale_game_by_short_name_gets_the_atari_defaults(tmp_path):
    """Pong has no preset of its own: its short name resolves and it trains with the Atari protocol, not the generic defaults."""
    from agent.core.presets import resolve_config

    breakout, pong = resolve_config(env_id="Breakout"), resolve_config(env_id="Pong")
    assert pong.env_id == "ALE/Pong-v5"
    assert pong == breakout.replace(env_id="ALE/Pong-v5")  # the Atari protocol (eval epsilon 0.05), Nature CNN, no XLA update
    assert pong.eval_epsilon == 0.05 and pong.network == "nature_cnn" and not pong.jit_compile
    assert resolve_config(env_id="SpaceInvaders").env_id == "ALE/SpaceInvaders-v5"
    run = tmp_path / "pong"
    code, out = cli("--env", "Pong", "--steps", "250", "--run-dir", str(run), *SMOKE)
    assert code == 0, out
    assert RunDirectory(run).load_config().env_id == "ALE/Pong-v5"
