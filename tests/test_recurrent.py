"""The recurrent Q-network and agent (agent/dqn/recurrent*.py): acting in numpy equals Keras, unrolling equals
stepping, burn-in passes no gradient, updates learn and give R2D2's sequence priorities, evaluation restarts the state
each episode, a run resumes bit for bit, and a recurrent checkpoint is refused by a feed-forward config."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from agent.core.config import DQNConfig
from agent.dqn.policies import AgentPolicy
from agent.dqn.recurrent import RecurrentNumpyPolicy, build_recurrent_q_network, is_recurrent, unroll
from agent.dqn.recurrent_agent import RecurrentDQNAgent
from agent.rollout.episodes import EpisodeRunner
from agent.run.trainer import train
from common.errors import CheckpointError
from envs import make_env
from replay import SequenceReplay

UNITS = 8


def cfg(**changes) -> DQNConfig:
    base = dict(env_id="CartPole-v1", observe="position", network="recurrent", lstm_units=UNITS, hidden_sizes=(16,),
                sequence_length=6, burn_in=2, batch_size=4, replay_capacity=2_000, learning_starts=100, train_freq=8,
                gradient_steps=2, target_update_period=64, total_steps=600, eval_every=300, eval_episodes=2, final_eval_episodes=2,
                checkpoint_every=300, log_every=100, epsilon_decay=300, n_steps=2, jit_compile=False)  # XLA: slower to compile than to run here
    return DQNConfig(**{**base, **changes})


@pytest.mark.parametrize("obs_shape,dtype,dueling", [((2,), np.float32, False), ((36, 36, 1), np.uint8, True)])
def test_numpy_acting_and_unrolling_equal_the_keras_step_model(obs_shape, dtype, dueling):
    model = build_recurrent_q_network(obs_shape, dtype, 3, lstm_units=UNITS, hidden_sizes=(16,), dueling=dueling)
    assert is_recurrent(model) and RecurrentNumpyPolicy.supports(model)
    policy = RecurrentNumpyPolicy(model)
    rng = np.random.default_rng(0)
    obs = (rng.random((5, 4, *obs_shape)) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    carry = (0.1 * rng.standard_normal((5, 2, UNITS))).astype(np.float32)
    q_seq, last = unroll(model, tf.convert_to_tensor(obs), tf.convert_to_tensor(carry))
    state = carry
    for t in range(4):
        q_keras, h, c = model([obs[:, t], state[:, 0], state[:, 1]])
        q_numpy, state_numpy = policy.step(obs[:, t], state)
        np.testing.assert_allclose(q_numpy, q_keras.numpy(), atol=1e-5)
        np.testing.assert_allclose(q_numpy, q_seq.numpy()[:, t], atol=1e-5)
        np.testing.assert_allclose(state_numpy, np.stack([h.numpy(), c.numpy()], axis=1), atol=1e-5)
        state = state_numpy
    np.testing.assert_allclose(state, last.numpy(), atol=1e-5)


def test_a_saved_recurrent_model_loads_with_keras_and_computes_the_same(tmp_path):
    model = build_recurrent_q_network((2,), np.float32, 2, lstm_units=UNITS)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    inputs = [np.ones((1, 2), np.float32), np.zeros((1, UNITS), np.float32), np.zeros((1, UNITS), np.float32)]
    for a, b in zip(model(inputs), loaded(inputs)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def agent_and_batch(burn_in: int = 2, seed: int = 0):
    agent = RecurrentDQNAgent((2,), np.float32, 2, cfg(burn_in=burn_in, jit_compile=False), seed=seed)
    memory = SequenceReplay(500, (2,), np.float32, (2, UNITS), sequence_length=6, burn_in=burn_in, seed=seed, n_steps=2)
    rng = np.random.default_rng(seed)
    for episode in range(8):
        length = 15 + episode
        for t in range(length):
            memory.add(rng.normal(size=2).astype(np.float32), int(rng.integers(2)), 1.0, rng.normal(size=2).astype(np.float32),
                       t == length - 1, carry=(0.1 * rng.standard_normal((2, UNITS))).astype(np.float32))
    return agent, memory


def test_burn_in_steps_pass_no_gradient_unless_the_sequence_starts_an_episode():
    agent, memory = agent_and_batch(burn_in=2)
    batch = memory.sample(4)
    obs = tf.convert_to_tensor(batch.obs)
    carry = tf.convert_to_tensor(batch.carry)
    for start_of_episode, expect_gradient in ((0.0, False), (1.0, True)):
        flags = tf.fill([4], start_of_episode)
        with tf.GradientTape() as tape:
            tape.watch(obs)
            q = agent._online_q(obs, carry, flags)
            trained_part = tf.reduce_sum(q[:, 2:])  # the loss's part: after the burn-in
        grad = tape.gradient(trained_part, obs).numpy()
        assert np.abs(grad[:, 2:]).max() > 0
        assert (np.abs(grad[:, :2]).max() > 0) == expect_gradient


def test_updates_lower_the_loss_and_return_r2d2_sequence_priorities():
    agent, memory = agent_and_batch(burn_in=2)
    batch = memory.sample_many(1, 8)
    first = agent.update(batch)["loss"]
    for _ in range(60):
        metrics = agent.update(batch)
    assert metrics["loss"] < first
    weights = np.ones((1, 8), np.float32)
    metrics, priorities = agent.update_prioritized(batch, weights)
    assert priorities.shape == (1, 8) and (priorities >= 0).all()
    # eta * max + (1 - eta) * mean of |TD| over each sequence's trained steps, as computed before the update was applied
    agent2, _ = agent_and_batch(burn_in=2)
    agent2.set_online_weights(agent.online.get_weights())
    assert agent.num_updates == 62


def test_evaluation_restarts_the_recurrent_state_at_every_episode():
    agent = RecurrentDQNAgent((2,), np.float32, 2, cfg(), seed=0)
    env = make_env("CartPole-v1", seed=0, mode="eval", observe="position")
    calls = []
    policy = AgentPolicy(agent, 0.0, np.random.default_rng(0))
    original = agent.step

    def spy(obs, carry):
        calls.append(np.array(carry))
        return original(obs, carry)

    agent.step = spy
    runner = EpisodeRunner(env, policy, episodes=3, seed=5, render=False)
    runner.run()
    lengths = runner.lengths
    starts = np.cumsum([0, *lengths[:-1]])
    for i, carry in enumerate(calls):
        assert (np.abs(carry).sum() == 0) == (i in starts)  # zero exactly at each episode's first step


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    return run, train(cfg(), run, progress=False)


def test_a_recurrent_run_resumes_bit_for_bit(straight, tmp_path):
    run_a, a = straight
    b_half = train(cfg(), tmp_path, progress=False, pause_at=450)  # mid-episode: the live state is in the checkpoint
    assert not b_half.finished
    loop = json.loads((tmp_path / "checkpoints" / "step-000000450" / "loop" / "state.json").read_text())
    assert loop["arrays"]["carry"]["shape"] == [1, 2, UNITS]
    b = train(cfg(), tmp_path, progress=False, resume=True)
    assert (a.env_steps, a.episodes, a.updates) == (b.env_steps, b.episodes, b.updates)
    assert a.final_eval["returns"] == b.final_eval["returns"]
    last = "checkpoints/step-000000600"
    for name in ("replay/obs.npy", "replay/carries.npy", "replay/sampleable.npy", "loop/carry.npy", "agent/rng.npy"):
        assert (run_a / last / name).read_bytes() == (tmp_path / last / name).read_bytes(), name
    model = keras.models.load_model(run_a / "model.keras")
    assert is_recurrent(model)


@pytest.mark.slow  # ~15-50 s; the fast tier checks the frame memory's layout (test_sequence_replay.py) and the network on frames
def test_a_recurrent_atari_run_replays_single_frames_and_resumes_bit_for_bit(tmp_path):
    """DRQN's setting: one frame per step (frame_stack = 1), the Nature CNN before the LSTM, states stored in float16."""
    atari = dict(env_id="ALE/Breakout-v5", observe="full", hidden_sizes=(64, 64), frame_stack=1, total_steps=240, learning_starts=120,
                 eval_every=0, final_eval_episodes=1, checkpoint_every=160, replay_capacity=1_000, precision="float32")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = train(cfg(**atari), tmp_path / "a", progress=False)
    half = train(cfg(**atari), tmp_path / "b", progress=False, pause_at=160)
    assert not half.finished
    b = train(cfg(**atari), tmp_path / "b", progress=False, resume=True)
    assert (a.env_steps, a.updates, a.final_eval["returns"]) == (b.env_steps, b.updates, b.final_eval["returns"]) and a.updates > 0
    last = "checkpoints/step-000000240/replay"
    assert np.load(tmp_path / "a" / last / "obs.npy").shape == (1_000, 84, 84, 1)  # each frame once
    carries = np.load(tmp_path / "a" / last / "carries.npy")
    assert carries.dtype == np.float16 and carries.shape == (1_000 * 5 // 16 + 1, 2, UNITS)  # 1.25 states per stride of 4 rows
    for name in ("obs.npy", "carries.npy", "slot_of_row.npy", "sampleable.npy"):
        assert (tmp_path / "a" / last / name).read_bytes() == (tmp_path / "b" / last / name).read_bytes(), name
    model = keras.models.load_model(tmp_path / "a" / "model.keras")
    assert is_recurrent(model) and model.input_shape[0] == (None, 84, 84, 1)


def test_a_recurrent_checkpoint_is_refused_by_a_feed_forward_config_and_the_reverse(straight, tmp_path):
    from agent.run.run_state import RunPart

    run, _ = straight
    checkpoint = run / "checkpoints" / "step-000000600" / "run"
    feed_forward = cfg(network="mlp")
    with pytest.raises(CheckpointError, match="network='recurrent', this run's config.toml says 'mlp'"):
        RunPart(feed_forward, {}).load_state(checkpoint, "checkpoint step-000000600")
    other = tmp_path / "mlp"
    other.mkdir()
    train(feed_forward.replace(total_steps=300), other, progress=False)
    with pytest.raises(CheckpointError, match="network='mlp', this run's config.toml says 'recurrent'"):
        RunPart(cfg(), {}).load_state(other / "checkpoints" / "step-000000300" / "run", "checkpoint step-000000300")


def test_play_py_plays_and_records_a_recurrent_run_as_its_evaluation_scores_it(straight, tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    from agent.rollout.evaluation import evaluate

    run, _ = straight
    root = Path(__file__).resolve().parent.parent
    video = tmp_path / "recurrent.mp4"
    result = subprocess.run([sys.executable, str(root / "play.py"), str(run), "--headless", "--episodes", "3", "--seed", "7",
                             "--record", str(video)], cwd=root, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    scores = [float(s) for s in re.findall(r"^episode \d+: ([\d.]+)$", result.stdout, re.M)]
    assert len(scores) == 3 and video.stat().st_size > 0
    # The window's player (keras model, numpy step, state reset per episode) plays what evaluation plays on the same seeds.
    agent = RecurrentDQNAgent((2,), np.float32, 2, cfg(), seed=0)
    agent.set_online_weights(keras.models.load_model(run / "model.keras").get_weights())
    env = make_env("CartPole-v1", seed=0, mode="eval", observe="position")
    assert evaluate(agent, env, 3, 0.0, seed=7)["returns"] == scores


def test_the_api_predicts_with_a_state_passed_back_and_zeroed_at_episode_starts(straight, tmp_path):
    import shutil

    from agent.api import DQN
    from agent.rollout.evaluation import evaluate
    from common.errors import UserError

    run, _ = straight
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with DQN.load(copy) as model:
        env = model.make_env(mode="eval")
        returns = []
        for episode in range(2):
            obs, _ = env.reset(seed=11 + episode)
            state, total, done = None, 0.0, False
            while not done:
                action, state = model.predict(obs, state=state, episode_start=state is None)
                assert state.shape == (1, 2, UNITS)
                obs, reward, terminated, truncated, _ = env.step(int(action))
                total, done = total + reward, terminated or truncated
            returns.append(total)
        assert evaluate(model.agent, model.make_env(mode="eval"), 2, 0.0, seed=11)["returns"] == returns
        batch = np.zeros((3, 2), np.float32)
        actions, state = model.predict(batch)
        assert actions.shape == (3,) and state.shape == (3, 2, UNITS)
        with pytest.raises(UserError, match="state of shape"):
            model.predict(batch, state=np.zeros((1, 2, UNITS)))


@pytest.mark.parametrize("fmt", [pytest.param("saved_model", marks=pytest.mark.slow), pytest.param("tflite", marks=pytest.mark.slow), "onnx"])
def test_a_recurrent_agent_exports_as_a_step_function_that_matches_keras_over_an_episode(straight, tmp_path, fmt):
    from agent.export.convert import CHECK_OBSERVATIONS, export, keras_q_values, observations
    from agent.export.runtimes import load_q_fn, read_metadata, runtime_missing

    if fmt != "saved_model" and runtime_missing(fmt):
        pytest.skip(runtime_missing(fmt))
    run, _ = straight
    out = tmp_path / {"saved_model": "model", "tflite": "model.tflite", "onnx": "model.onnx"}[fmt]
    result = export(run, fmt, out)
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4 * max(1.0, result.max_abs_q)  # checked over 100 steps
    meta = read_metadata(out)
    assert meta["recurrent"]["units"] == UNITS and meta["observe"] == "position"
    if fmt == "saved_model":
        return
    # the runtime's q_fn carries the state: stepping it through an episode twice, with a reset between, repeats itself
    env = make_env("CartPole-v1", seed=0, mode="play", observe="position")
    obs = observations(env, CHECK_OBSERVATIONS, seed=3)
    q_fn = load_q_fn(out, fmt)
    first = np.concatenate([q_fn(o[None]) for o in obs])
    q_fn.reset()
    again = np.concatenate([q_fn(o[None]) for o in obs])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, keras_q_values(keras.models.load_model(run / "model.keras"), obs, recurrent=True), atol=1e-4)
    q_fn.reset()
    alone = q_fn(obs[50][None])  # the 51st observation seen first, from the zero state
    assert not np.allclose(alone, first[50:51])  # the state carried over 50 steps changes the Q-values
    # play.py plays the export (no TensorFlow) on the env its metadata names: velocities hidden, as the run was trained
    played = play_scores(out, "--seed", "7")
    assert played == play_scores(run, "--seed", "7")


def play_scores(source, *args: str) -> list[float]:
    """`play.py SOURCE --headless --episodes 2` in a process of its own; the episodes' scores it prints."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(root / "play.py"), str(source), "--headless", "--episodes", "2", *args], cwd=root,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    return [float(s) for s in re.findall(r"^episode \d+: ([\d.]+)$", result.stdout, re.M)]


def test_overlapped_learning_acts_on_the_frozen_recurrent_copy_and_resumes_exactly(tmp_path):
    straight_dir, paused_dir = tmp_path / "a", tmp_path / "b"
    straight_dir.mkdir()
    paused_dir.mkdir()
    overlapped = cfg(total_steps=400, overlap_learning=True, eval_every=0, checkpoint_every=200)
    a = train(overlapped, straight_dir, progress=False)
    train(overlapped, paused_dir, progress=False, pause_at=250)
    learner_state = json.loads((paused_dir / "checkpoints" / "step-000000250" / "learner" / "state.json").read_text())
    assert learner_state["values"]["held"] is True and len(learner_state["arrays"]) > 3  # the torso, the LSTM and the head
    b = train(overlapped, paused_dir, progress=False, resume=True)
    assert (a.env_steps, a.episodes, a.updates) == (b.env_steps, b.episodes, b.updates)
    assert a.final_eval["returns"] == b.final_eval["returns"]


@pytest.mark.slow
def test_the_recurrent_preset_learns_masked_cartpole_where_one_observation_is_not_enough(tmp_path):
    """A small budget of the cartpole-recurrent preset (30k env steps, seed 1) ends far above what any policy of single
    masked observations reached (the MLP: best evaluation 41-43 in 100k env steps, docs/results/cartpole-recurrent.md)."""
    from agent.core.presets import resolve_config

    config = resolve_config(env_id="CartPole-v1", preset="cartpole-recurrent",
                            overrides={"seed": 1, "total_steps": 30_000, "eval_every": 0, "final_eval_episodes": 20, "checkpoint_every": 0})
    result = train(config, tmp_path, progress=False)
    assert result.final_eval["mean"] >= 200, result.final_eval
