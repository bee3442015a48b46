"""Recorded play in the replay (`train.py --demos`): what is stored, and every bad file refused."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from click.testing import CliRunner

import train as train_cli
from classic.demos import DemoRecorder
from agent.core.presets import resolve_config
from agent.run.loop import make_replay, seed_replay_with_demos


def record(env_id: str, path, episodes: int, max_steps: int, seed: int = 0):
    """Play a simple pole-balancing rule on even episodes (it outlasts max_steps) and random
    actions otherwise (the pole falls), then save it as play.py would."""
    env = gym.make(env_id)
    rec = DemoRecorder(env_id)
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        for _ in range(max_steps):
            balance = env_id == "CartPole-v1" and e % 2 == 0
            action = int(obs[3] > 0) if balance else int(rng.integers(env.action_space.n))
            next_obs, r, terminated, truncated, _ = env.step(action)
            rec.add(obs, action, r, terminated, truncated)
            obs = next_obs
            if terminated or truncated:
                break
        rec.cut()  # an episode stopped by max_steps ends as truncated
    rec.save(path, env.observation_space.shape, env.observation_space.dtype)
    env.close()
    return np.load(path)


def cli(*args):
    result = CliRunner().invoke(train_cli.main, [*args, "--no-progress"])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def cartpole_demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "cartpole.npz"
    return path, record("CartPole-v1", path, episodes=4, max_steps=120)


def test_demos_fill_the_replay_step_by_step(cartpole_demos):
    path, d = cartpole_demos
    cut = d["truncated"]
    assert cut.any() and d["terminated"].any()  # both kinds of episode end are exercised
    cfg = resolve_config(env_id="CartPole-v1").replace(demos=str(path), n_steps=3, gamma=0.5)
    replay = make_replay(cfg, (4,), np.float32)
    stored = seed_replay_with_demos(replay, cfg, (4,), np.float32)
    keep = np.flatnonzero(~cut)  # the step after a cut is not in the file
    assert stored == len(replay) == len(keep)
    np.testing.assert_array_equal(replay.obs[:stored], d["obs"][keep])
    np.testing.assert_array_equal(replay.actions[:stored], d["actions"][keep])
    np.testing.assert_array_equal(replay.terminated[:stored], d["terminated"][keep].astype(np.float32))
    for row, t in enumerate(keep):
        if not d["terminated"][t]:
            np.testing.assert_array_equal(replay.next_obs[row], d["obs"][t + 1])
    # Consecutive demo steps are linked, so n-step returns run through them.
    batch = replay._gather(np.array([0]))
    assert batch.rewards[0] == pytest.approx(1 + 0.5 + 0.25) and batch.discounts[0] == pytest.approx(0.125)
    # ... but not across a cut: the step before one ends its episode, bootstrapped from the next observation.
    before_cut = int(np.flatnonzero(np.isin(keep + 1, np.flatnonzero(cut)))[0])
    batch = replay._gather(np.array([before_cut]))
    assert batch.rewards[0] == pytest.approx(1.0) and batch.discounts[0] == pytest.approx(0.5)


def test_demos_fill_a_sequence_replay_with_the_state_the_network_has_at_each_step(cartpole_demos):
    """The recurrent network's replay: each sequence start stores the state the network reaches by stepping through its
    demo episode from the zero state, every episode ends in the replay (cut ones too), and sequences can be drawn."""
    from agent.dqn.recurrent_agent import RecurrentDQNAgent
    from replay.sequences import LAST, STEP

    path, d = cartpole_demos
    cfg = resolve_config(env_id="CartPole-v1").replace(demos=str(path), network="recurrent", lstm_units=8, sequence_length=8,
                                                       burn_in=3, n_steps=2, replay_capacity=2_000)
    agent = RecurrentDQNAgent((4,), np.float32, 2, cfg, seed=0)
    replay = make_replay(cfg, (4,), np.float32)
    stored = seed_replay_with_demos(replay, cfg, (4,), np.float32, agent)
    keep = np.flatnonzero(~d["truncated"])
    assert stored == (replay.kinds[:replay.size] == STEP).sum() == len(keep)
    ends = np.flatnonzero(d["terminated"] | d["truncated"])
    episodes = [t[~d["truncated"][t]] for t in np.split(np.arange(len(d["actions"])), ends[:-1] + 1)]  # a cut's last step left out
    assert (replay.kinds[:replay.size] == LAST).sum() == len(episodes) and not replay.open and not replay.pending
    row = 0
    for steps in episodes:
        carry = agent.initial_carry(1)
        for i, t in enumerate(steps):
            np.testing.assert_array_equal(replay.obs[row], d["obs"][t])
            assert replay.episode_starts[row] == (i == 0)
            if i % replay.stride == 0:
                np.testing.assert_allclose(replay.carries[replay.slot_of_row[row]], carry[0], atol=1e-6)
                assert replay.sampleable[row]
            carry = agent.step(d["obs"][t][None], carry)[1]
            row += 1
        assert replay.kinds[row] == LAST
        row += 1
    batch = replay.sample(4)
    assert batch.obs.shape == (4, 9, 4) and np.isfinite(batch.returns).all()


def test_train_with_demos_and_a_pretrained_torso(cartpole_demos, tmp_path):
    path, _ = cartpole_demos
    torso = tmp_path / "torso.keras"
    from classic.__main__ import cli as classic_cli

    out = CliRunner().invoke(classic_cli, ["pretrain", str(path), "--out", str(torso), "--epochs", "1", "--layer-norm"])
    assert out.exit_code == 0, out.output
    run = tmp_path / "run"
    code, out = cli("--steps", "600", "--set", "learning_starts=200", "--eval-episodes", "1", "--set", "final_eval_episodes=1", "--demos", str(path),
                    "--init-from", str(torso), "--run-dir", str(run))
    assert code == 0, out
    assert f'demos = "{path}"' in (run / "config.toml").read_text()
    code, out = cli("--resume", str(run), "--demos", str(path))
    assert code == 2 and "--demos" in out.strip().splitlines()[-1]


@pytest.mark.slow  # a whole training run; the fast tier checks what the demos put in the sequence replay (above)
def test_a_recurrent_run_trains_from_demos(cartpole_demos, tmp_path):
    path, _ = cartpole_demos
    code, out = cli("--steps", "400", "--set", "learning_starts=100", "--set", "network=recurrent", "--set", "lstm_units=8",
                    "--eval-episodes", "1", "--set", "final_eval_episodes=1", "--demos", str(path), "--run-dir", str(tmp_path / "run"))
    assert code == 0, out
    assert "demonstration transitions" in out and (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.parametrize("problem", ["other env", "wrong shape", "missing", "not npz"])
def test_bad_demos_are_one_line_and_create_nothing(cartpole_demos, tmp_path, problem):
    path, d = cartpole_demos
    bad = tmp_path / "bad.npz"
    if problem == "other env":
        record("Acrobot-v1", bad, episodes=1, max_steps=20)
        env_args, message = [], "was recorded on Acrobot-v1, this run is CartPole-v1"
    elif problem == "wrong shape":
        np.savez(bad, **{**dict(d), "obs": d["obs"][:, :3]})
        env_args, message = [], "obs have shape (3,) but CartPole-v1 observations are (4,)"
    elif problem == "missing":
        bad = tmp_path / "nope.npz"
        env_args, message = [], "no such file"
    else:
        bad.write_bytes(b"not a zip")
        env_args, message = [], "cannot read a demos file"
    run = tmp_path / "run"
    code, out = cli(*env_args, "--demos", str(bad), "--run-dir", str(run))
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --demos") and message in lines[0], out
    assert not run.exists()


def record_breakout(path, steps: int, seed: int = 0) -> dict:
    """Random full-game Breakout play saved as play.py saves it (lives included)."""
    from envs.atari import make_atari_env

    env = make_atari_env("Breakout", seed=seed, mode="eval")
    rec = DemoRecorder("ALE/Breakout-v5")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = int(rng.integers(env.action_space.n))
        next_obs, r, terminated, truncated, info = env.step(action)
        rec.add(obs, action, r, terminated, truncated, info.get("lives"))
        obs = env.reset()[0] if terminated or truncated else next_obs
    rec.cut()
    rec.save(path, (84, 84, 4), np.uint8)
    env.close()
    return dict(np.load(path))


def test_atari_demos_get_the_training_envs_clipping_and_life_ends(tmp_path):
    path = tmp_path / "breakout.npz"
    d = record_breakout(path, 300)
    lost = set(np.flatnonzero(np.diff(d["lives"]) < 0) + 1)  # steps after which a life was gone
    assert len(lost) >= 2
    d["rewards"][::10] = 7.0  # the top rows' score (and a negative one): training sees sign(r) only
    d["rewards"][5::10] = -3.0
    np.savez(path, **d)
    cfg = resolve_config(env_id="Breakout").replace(demos=str(path), replay_capacity=2_000, n_steps=1, n_steps_end=None)
    replay = make_replay(cfg, (84, 84, 4), np.uint8)
    stored = seed_replay_with_demos(replay, cfg, (84, 84, 4), np.uint8)
    assert stored == len(d["actions"]) - 1  # the cut last step has no next observation
    batch = replay._gather(np.flatnonzero(replay.has_next[: replay.size]))
    assert set(np.unique(batch.rewards)) == {-1.0, 0.0, 1.0}
    # A lost life is terminal in training, so each one ends a stored episode (game overs too).
    ends = lost | set(np.flatnonzero(d["terminated"]))
    assert int(batch.terminated.sum()) == len(ends) > int(d["terminated"].sum())
    assert not replay.open


def test_atari_demos_without_lives_are_refused(tmp_path):
    path = tmp_path / "old.npz"
    d = record_breakout(path, 40)
    del d["lives"]
    np.savez(path, **d)
    run = tmp_path / "run"
    code, out = cli("--env", "Breakout", "--demos", str(path), "--run-dir", str(run))
    lines = out.strip().splitlines()
    assert code == 2, out  # the README: bad input ends with one error line and exit status 2
    assert lines[-1].startswith("error: --demos") and "lives" in lines[-1] and "play.py --save-demos" in lines[-1], out
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in out, out
    assert not run.exists()  # refused before anything was written


def test_demos_of_one_atari_game_fit_its_other_ids(tmp_path):
    """ALE/Breakout-v5 and BreakoutNoFrameskip-v4 get the same emulator settings and wrappers here."""
    from agent.run.demos import load_for_run

    path = tmp_path / "breakout.npz"
    record_breakout(path, 20)
    for env_id in ("ALE/Breakout-v5", "BreakoutNoFrameskip-v4"):
        cfg = resolve_config(env_id=env_id).replace(demos=str(path))
        assert load_for_run(cfg, (84, 84, 4), np.uint8).env_id == "ALE/Breakout-v5"
    cfg = resolve_config(env_id="ALE/Pong-v5").replace(demos=str(path))
    with pytest.raises(Exception, match="was recorded on ALE/Breakout-v5, this run is ALE/Pong-v5"):
        load_for_run(cfg, (84, 84, 4), np.uint8)


def record_pixel_cartpole(path, pixel_view: str, action_repeat: int, steps: int = 40) -> None:
    """Random pixel-CartPole play saved as play.py saves it for a run seen that way."""
    from agent.core.config import DQNConfig, env_options
    from envs import make_env

    seen_as = env_options(DQNConfig(env_id="CartPole-v1", pixels=True, pixel_view=pixel_view, action_repeat=action_repeat))
    env = make_env("CartPole-v1", seed=0, mode="play", **seen_as)
    rec = DemoRecorder("CartPole-v1", seen_as)
    obs, _ = env.reset(seed=0)
    for t in range(steps):
        action = t % 2
        next_obs, r, terminated, truncated, _ = env.step(action)
        rec.add(obs, action, r, terminated, truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    rec.cut()
    rec.save(path, env.observation_space.shape, env.observation_space.dtype)
    env.close()


def test_pixel_demos_keep_their_view_and_repeat_and_fill_a_run_seen_the_same_way(tmp_path):
    from agent.run.demos import load_for_run
    from classic.demos import load_demos

    path = tmp_path / "pix.npz"
    record_pixel_cartpole(path, "cart", action_repeat=2)
    demos = load_demos(path)
    assert (demos.pixel_view, demos.action_repeat, demos.obs.shape[1:], demos.obs.dtype) == ("cart", 2, (84, 84, 4), np.uint8)
    cfg = resolve_config(preset="cartpole-pixels").replace(demos=str(path), pixel_view="cart", action_repeat=2)
    assert load_for_run(cfg, (84, 84, 4), np.uint8).pixel_view == "cart"
    replay = make_replay(cfg, (84, 84, 4), np.uint8)
    assert seed_replay_with_demos(replay, cfg, (84, 84, 4), np.uint8) > 0


@pytest.mark.parametrize("run_args, message", [
    (["--set", "pixel_view=cart_track", "--set", "action_repeat=2"], "recorded with pixel_view='cart', this run's is 'cart_track'"),
    (["--set", "pixel_view=cart", "--set", "action_repeat=1"], "recorded with action_repeat=2, this run's is 1; train with --set action_repeat=2"),
])
def test_demos_seen_another_way_are_one_line_and_create_nothing(tmp_path, run_args, message):
    path = tmp_path / "pix.npz"
    record_pixel_cartpole(path, "cart", action_repeat=2)
    run = tmp_path / "run"
    code, out = cli("--env", "CartPole-v1", "--pixels", *run_args, "--demos", str(path), "--run-dir", str(run))
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --demos") and message in lines[0], out
    assert not run.exists()


def test_a_demos_file_with_pickled_objects_is_refused_without_advice_to_unpickle(tmp_path):
    """numpy's own message says how to load such a file unsafely; ours names the file and says why, and stops there."""
    from classic.demos import load_demos
    from classic.errors import ClassicError

    path = tmp_path / "objects.npz"
    np.savez(path, obs=np.array([object()] * 3, dtype=object), actions=np.zeros(3, np.int64), rewards=np.zeros(3, np.float32),
             terminated=np.zeros(3, bool), truncated=np.zeros(3, bool), env_id=np.array("CartPole-v1"))
    with pytest.raises(ClassicError) as caught:
        load_demos(path)
    message = str(caught.value)
    assert str(path) in message and "Python objects" in message
    assert "allow_pickle" not in message and "pickle.load" not in message and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"PK\x03\x04cut short"])
def test_a_file_that_is_not_an_npz_archive_is_refused_in_one_line_without_pickle_advice(tmp_path, content):
    from classic.demos import load_demos
    from classic.errors import ClassicError

    path = tmp_path / "demos.npz"
    path.write_bytes(content)
    with pytest.raises(ClassicError) as caught:
        load_demos(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "pickle" not in message.split("(")[0].lower()
    assert "allow_pickle" not in message and "Python objects" not in message


def test_demos_of_a_masked_env_record_how_it_was_seen_and_train_a_run_that_sees_it_so(tmp_path):
    """observe="position" and frame_stack travel with the demos: a run seeing the env the same way trains on them, a run
    seeing the full state is refused in one line that says how to train on them."""
    from classic.demos import load_demos
    from envs import make_env

    seen_as = {"pixels": False, "pixel_view": "full", "action_repeat": 1, "observe": "position", "frame_stack": 2}
    env = make_env("CartPole-v1", seed=0, **seen_as)
    recorder = DemoRecorder("CartPole-v1", seen_as)
    obs, _ = env.reset(seed=0)
    for t in range(60):
        action = t % 2
        next_obs, reward, terminated, truncated, _ = env.step(action)
        recorder.add(obs, action, reward, terminated, truncated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    path = recorder.save(tmp_path / "masked.npz", env.observation_space.shape, env.observation_space.dtype)
    demos = load_demos(path)
    assert (demos.observe, demos.frame_stack, demos.obs.shape[1:]) == ("position", 2, (4,))
    base = ["--env", "CartPole-v1", "--steps", "300", "--demos", str(path), "--eval-every", "0", "--set", "final_eval_episodes=1",
            "--set", "learning_starts=100", "--no-progress"]
    refused = CliRunner().invoke(train_cli.main, [*base, "--run-dir", str(tmp_path / "full")])
    assert refused.exit_code == 2 and "observe='position', frame_stack=2" in refused.stderr, refused.stderr
    trained = CliRunner().invoke(train_cli.main, [*base, "--run-dir", str(tmp_path / "masked"), "--set", "observe=position",
                                                  "--set", "frame_stack=2"])
    assert trained.exit_code == 0, trained.stderr
    assert "demonstration transitions" in trained.stderr
