"""The Python API (agent/api.py): build from an id or an instance, learn with callbacks, predict, evaluate, save, load."""

import doctest
import random
import shutil

import gymnasium as gym
import numpy as np
import pytest

import agent.api
from agent.api import DQN, Progress
from common.errors import UserError
from envs import make_env

FAST = dict(eval_every=500, eval_episodes=2, final_eval_episodes=2, learning_starts=200, train_freq=10, gradient_steps=2, log_every=500,
            checkpoint_every=0, replay_capacity=2_000, jit_compile=False)


class Corridor(gym.Env):
    """Walk right along a corridor of 6 cells to get +1; a one-hot position as observation; 30 steps at most."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (6,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = 0
        self.t = 0

    def _obs(self):
        obs = np.zeros(6, np.float32)
        obs[self.pos] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.pos = max(0, min(5, self.pos + (1 if action == 1 else -1)))
        self.t += 1
        done = self.pos == 5
        return self._obs(), float(done), done, self.t >= 30 and not done, {}


class Continuous(Corridor):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


def test_docstring_example_runs():
    failures, tried = doctest.testmod(agent.api, verbose=False)
    assert tried >= 8 and failures == 0


def test_learn_calls_back_with_the_live_state_and_a_callback_can_stop(tmp_path):
    seen: list[Progress] = []
    with DQN("CartPole-v1", seed=3, run_dir=tmp_path / "run", **FAST) as model:
        model.learn(1_000, callback=seen.append, callback_every=250)
        assert [p.step for p in seen] == [250, 500, 750, 1_000]
        assert seen[0].updates == 12 and seen[-1].updates == model.agent.num_updates == 162  # from step 200, 2 updates every 10 steps
        assert seen[1].last_eval["env_step"] == 500 and seen[0].last_eval is None and seen[-1].epsilon < seen[0].epsilon
        assert model.last_result.finished and model.last_result.final_eval is not None

        stops = []
        model.learn(5_000, callback=lambda p: stops.append(p.step) or p.step < 1_600, callback_every=300)
        assert stops == [1_200, 1_500, 1_800] and model.num_env_steps == 1_800 and not model.last_result.finished
        assert (tmp_path / "run" / "checkpoints" / "step-000001800" / "manifest.json").is_file()


def test_predict_save_load_and_evaluate(tmp_path):
    model = DQN("CartPole-v1", seed=1, **FAST)
    model.learn(600)
    env = make_env("CartPole-v1", seed=5, mode="eval")
    observations = [env.reset(seed=5)[0]]
    for _ in range(20):
        obs, _, terminated, truncated, _ = env.step(int(model.predict(observations[-1])))
        observations.append(env.reset()[0] if terminated or truncated else obs)
    batch = np.stack(observations)
    actions = model.predict(batch)
    assert actions.shape == (21,) and set(actions) <= {0, 1}
    assert [int(model.predict(o)) for o in observations] == list(actions)
    assert (model.agent.q_values(batch).argmax(axis=1) == actions).all()
    scores = model.evaluate(episodes=3)
    saved = model.save(tmp_path / "saved")
    assert {"config.toml", "model.keras", "meta.json", "checkpoints", "progress.csv"} <= {p.name for p in saved.iterdir()}
    temporary = model.run_dir
    model.close()
    assert not temporary.exists()  # the scratch run goes; the saved copy stays

    with DQN.load(saved) as same:
        assert same.num_env_steps == 600
        np.testing.assert_array_equal(same.predict(batch), actions)
        assert same.evaluate(episodes=3) == scores  # same network, same evaluation seeds
        same.learn(200)
        assert same.num_env_steps == 800
    with pytest.raises(UserError, match="nothing-here' does not exist"):
        DQN.load(tmp_path / "nothing-here")

    broken = tmp_path / "broken"  # a refused load leaves the caller's global generators as they were
    shutil.copytree(saved, broken)
    (max((broken / "checkpoints").iterdir()) / "loop" / "state.json").write_text("{}")
    random.seed(123)
    np.random.seed(123)
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    with pytest.raises(UserError, match="is damaged: loop/state.json"):
        DQN.load(broken)
    assert random.getstate() == python_state and (np.random.get_state()[1] == numpy_state).all()


def test_a_spent_time_budget_is_refused_in_one_line(tmp_path):
    with DQN("CartPole-v1", seed=0, run_dir=tmp_path / "run", **{**FAST, "train_minutes": 0.001}) as model:  # 0.06 s
        model.learn(5_000)
        ended = model.num_env_steps
        assert 0 < ended < 5_000 and model.last_result.finished
        with pytest.raises(UserError, match=r"spent its training budget, train_minutes=0.001; .* --minutes M"):
            model.learn(1_000)
        assert model.num_env_steps == ended and model.config.total_steps == 5_000  # the refused call changed nothing


def test_a_custom_env_defined_here_trains_saves_and_loads(tmp_path):
    with DQN(Corridor(), seed=0, run_dir=tmp_path / "corridor", **{**FAST, "total_steps": 10_000}) as model:
        assert model.config.env_id == "custom/Corridor" and model.config.network == "mlp"
        model.learn(3_000)
        assert model.last_result.episodes > 50
        assert model.predict(Corridor().reset()[0]).shape == ()
        greedy = model.evaluate(episodes=2, epsilon=0.0)
    with DQN.load(tmp_path / "corridor", env=Corridor()) as same:
        assert same.evaluate(episodes=2, epsilon=0.0) == greedy
    with pytest.raises(UserError, match="custom/Corridor.*pass env="):
        DQN.load(tmp_path / "corridor")  # the id names no registered env


def test_stop_on_solve_ends_like_a_finished_run(tmp_path):
    with DQN("CartPole-v1", run_dir=tmp_path / "run", stop_on_solve=True, solve_return=1.0, **FAST) as model:
        model.learn(5_000)
        result = model.last_result
        assert result.finished and result.env_steps == result.solved_at == 500 and result.final_eval is not None
        assert (tmp_path / "run" / "eval.json").is_file()
        model.learn(300)  # solved long ago: a later learn trains its whole budget
        assert model.num_env_steps == 800


def test_bad_envs_and_arguments_get_one_line():
    with pytest.raises(UserError, match="Box action space; DQN needs discrete actions"):
        DQN(Continuous())
    with pytest.raises(UserError, match="unknown env id 'NoSuchEnv-v0'"):
        DQN("NoSuchEnv-v0")
    with pytest.raises(UserError, match="env must be a gymnasium env id or a gymnasium.Env instance"):
        DQN(42)
    with pytest.raises(UserError, match="unknown config field 'no_such_field'"):
        DQN("CartPole-v1", no_such_field=1)
    with DQN("CartPole-v1", **FAST) as model:
        with pytest.raises(UserError, match="number of env steps >= 0"):
            model.learn(-1)
        with pytest.raises(UserError, match=r"shape \(3,\); this model takes \(4,\)"):
            model.predict(np.zeros(3))


def test_predict_takes_raw_atari_screens_through_the_training_preprocessing():
    """An RGB screen from the user's own ALE env goes gray (as ALE's grayscale mode), 84x84 (INTER_AREA), 4 stacked."""
    from envs.atari import FRAME_SIZE
    from envs.preprocess import AtariFramePreprocessor

    import cv2

    with DQN("Breakout", replay_capacity=1_000, learning_starts=100, batch_size=32, jit_compile=False) as model:
        env = make_env("Breakout", seed=0, mode="play", render_mode="rgb_array")
        env.reset(seed=0)
        ale = env.unwrapped.ale
        rgb, gray = ale.getScreenRGB(), ale.getScreenGrayscale()
        frames = AtariFramePreprocessor()
        np.testing.assert_array_equal(frames.frame(rgb), cv2.resize(gray, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_AREA))
        stacked = frames(rgb)
        assert stacked.shape == (84, 84, 4) and (stacked == stacked[..., :1]).all()  # an episode starts with its first frame 4 times
        model.reset_frames()
        action = model.predict(rgb)
        assert int(action) == int(model.agent.q_values(stacked[None]).argmax())
        assert model.predict(env.step(1)[0]).shape == ()  # the env's own (84, 84, 4) observation passes as is


class Screens(gym.Env):
    """An RGB image env of one's own: each observation is a whole picture, not a stack of frames."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (40, 40, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.integers(0, 256, (40, 40, 3), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        return self.np_random.integers(0, 256, (40, 40, 3), dtype=np.uint8), float(action), False, self.t >= 20, {}


def test_an_rgb_env_of_ones_own_is_stored_whole_and_predict_keeps_the_training_rng(tmp_path):
    """The frame memory rebuilds stacks from single frames, which would scramble RGB pictures: an image env that make_env
    did not build goes to the plain ring. And predict draws from its own RNG, so asking for actions between two learn
    calls does not change the training."""
    with DQN(Screens(), preset="breakout", replay_capacity=500, learning_starts=100, batch_size=8, train_freq=50, **{
            k: v for k, v in FAST.items() if k not in ("replay_capacity", "learning_starts", "train_freq")}) as model:
        assert model.trainer.run.replay.kind == "uniform"
        model.learn(200)
        obs = model.trainer.run.replay.sample(16).obs
        assert obs.shape == (16, 40, 40, 3)
        rng_words = model.agent.state_dict()["rng"].copy()
        for _ in range(5):
            model.predict(Screens().reset(seed=1)[0], deterministic=False)
        np.testing.assert_array_equal(model.agent.state_dict()["rng"], rng_words)
    with pytest.raises(UserError, match="this DQN is closed"):
        model.predict(obs[0])
    small = Screens()
    small.observation_space = gym.spaces.Box(0, 255, (12, 12, 3), np.uint8)
    with pytest.raises(UserError, match="images are 12x12; the nature_cnn network needs at least 36x36"):
        DQN(small)
    with pytest.raises(UserError, match="images are 12x12; the data_efficient_cnn network needs at least 25x25"):
        DQN(small, network="data_efficient_cnn")


def test_idle_time_between_calls_is_not_training_time():
    import time

    def timed_learn(model, steps) -> float:
        """The seconds the call took, from outside: the run's clock may count no more than these."""
        t0 = time.perf_counter()
        model.learn(steps)
        return time.perf_counter() - t0

    with DQN("CartPole-v1", **FAST) as model:
        time.sleep(1.5)  # idle: not training time
        inside = timed_learn(model, 100)
        assert model.last_result.train_seconds <= inside and model.trainer.run.state.wall_seconds <= inside
        time.sleep(1.5)
        before = model.trainer.run.state.wall_seconds
        inside = timed_learn(model, np.int64(100))
        assert model.num_env_steps == 200 and model.trainer.run.state.wall_seconds - before <= inside


def test_a_snapshot_that_does_not_fit_the_env_is_one_error():
    from envs import snapshot

    env = make_env("CartPole-v1", seed=0)
    state = snapshot.capture(env)
    state["layers"][0]["attrs"] = {"unwrapped": 1}  # not an attribute this layer holds
    with pytest.raises(snapshot.SnapshotError, match="cannot be restored"):
        snapshot.restore(make_env("CartPole-v1", seed=0), state)
    state["layers"][0]["attrs"] = []
    with pytest.raises(snapshot.SnapshotError, match="cannot be restored"):
        snapshot.restore(make_env("CartPole-v1", seed=0), state)
