"""The shipped CartPole agent (agent/pretrained/cartpole): it plays 500, `play.py --pretrained` plays it, bad input gets one line.

The ten episodes are the first ten of the training run's own final evaluation
(reset seeds `seed + 20_000 + i`, greedy), not a chosen few: the agent's
README.md reports all hundred.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import play
from agent.export.pretrained import HERE, available, pretrained_dir


def test_cartpole_ships_as_a_small_run_directory():
    assert "cartpole" in available()
    path = pretrained_dir("cartpole")
    assert path == HERE / "cartpole"
    assert {p.name for p in path.iterdir()} >= {"config.toml", "meta.json", "model.keras", "README.md"}
    assert (path / "model.keras").stat().st_size < 100_000, "small enough to live in the repository"


def test_pretrained_cartpole_plays_500_on_ten_greedy_episodes():
    import numpy as np

    from agent.rollout.episodes import EpisodeRunner
    from agent.dqn.networks import NumpyPolicy
    from agent.dqn.policies import QPolicy
    from agent.run.run_dir import RunDirectory
    from envs import make_env

    path = pretrained_dir("cartpole")
    cfg = RunDirectory(path).load_config()
    model = RunDirectory(path).load_model()  # Keras safe mode, as play.py loads it
    env = make_env(cfg.env_id, seed=cfg.seed + 10_000, mode="eval")
    assert NumpyPolicy.supports(model)  # the numpy forward pass DQNAgent acts with (a TF call per step costs ~2 ms here)
    numpy_policy = NumpyPolicy(model)
    runner = EpisodeRunner(env, QPolicy(numpy_policy.q_values, 2, epsilon=0.0), episodes=10, seed=cfg.seed + 20_000, render=False)
    seen = [view.obs for view in runner]
    env.close()
    assert runner.scores == [500.0] * 10
    # the numpy pass is the Keras model: same Q-values on every state played
    obs = np.stack(seen)
    expected = model(obs, training=False).numpy()
    np.testing.assert_allclose(numpy_policy.q_values(obs), expected, rtol=1e-4, atol=1e-3)
    assert (numpy_policy.q_values(obs).argmax(1) == expected.argmax(1)).all()


def test_play_pretrained_cartpole_headless(monkeypatch):
    """`play.py --pretrained cartpole --headless --episodes 1`, through its click command in this process."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # --headless sets it too; this puts it back afterwards
    result = CliRunner().invoke(play.main, ["--pretrained", "cartpole", "--headless", "--episodes", "1"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "episode 1: 500" in result.stdout, result.stdout


def one_error_line(*args: str) -> str:
    result = CliRunner().invoke(play.main, list(args))
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_unknown_name_lists_the_shipped_agents():
    line = one_error_line("--pretrained", "pong", "--headless")
    assert "'pong'" in line and "available: " in line and "cartpole" in line.split("available: ")[1]


@pytest.mark.parametrize("args, words", [
    (("runs/some-run", "--pretrained", "cartpole"), "either RUN_DIR or --pretrained"),
    (("--pretrained", "cartpole", "--env", "CartPole-v1"), "drop --env"),
    (("--pretrained", "cartpole", "--best"), "final network only"),
])
def test_pretrained_with_what_it_excludes(args, words):
    assert words in one_error_line(*args)
