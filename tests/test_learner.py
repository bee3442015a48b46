"""The learner call in line and overlapped with acting (agent/learner.py, `overlap_learning`)."""

import json

import numpy as np
import pytest

from agent import run_dir as run_files
from agent.presets import resolve_config
from agent.run_state import LoopState
from agent.training import Trainer, TrainingStopped, build_agent, make_replay, train
from envs import make_env, obs_signature

SMALL = dict(total_steps=1_200, learning_starts=200, train_freq=16, gradient_steps=4, eval_every=600, eval_episodes=2,
             final_eval_episodes=2, checkpoint_every=600, log_every=200, replay_capacity=2_000)


def small_cfg(**changes):
    return resolve_config(env_id="CartPole-v1").replace(**{**SMALL, **changes})


def trained(tmp_path, name, cfg, **train_args):
    """(online weights, update count, priorities' state or None, result) of a run trained to its end."""
    (tmp_path / name).mkdir()
    with Trainer(cfg, tmp_path / name) as trainer:
        result = trainer.train(**train_args)
        run = trainer.run
        priorities = run.replay.priorities.state_dict() if run.replay.priorities is not None else None
        return run.agent.online.get_weights(), run.agent.num_updates, priorities, result


@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
def test_overlap_learns_bit_for_bit_as_in_line_when_acting_is_random(tmp_path, prioritized):
    """With epsilon 1 the actions do not depend on the weights, so the one difference overlap makes (acting lags
    one learner call) is gone: the updates, batches and priorities must then be exactly the in-line loop's."""
    cfg = small_cfg(epsilon_start=1.0, epsilon_end=1.0, prioritized=prioritized)
    w_line, n_line, p_line, r_line = trained(tmp_path, "in-line", cfg)
    w_over, n_over, p_over, r_over = trained(tmp_path, "overlap", cfg.replace(overlap_learning=True))
    assert n_line == n_over == 63 * 4  # learner calls at env steps 208, 224, ..., 1200
    for a, b in zip(w_line, w_over):
        np.testing.assert_array_equal(a, b)
    if prioritized:
        assert p_line.keys() == p_over.keys()
        for key in p_line:
            np.testing.assert_array_equal(p_line[key], p_over[key])
    assert [e["mean"] for e in r_line.evaluations] == [e["mean"] for e in r_over.evaluations]


def fresh_learner(overlap: bool, **changes):
    from agent.learner import Learner

    cfg = small_cfg(**changes)
    env = make_env(cfg.env_id, seed=0)
    agent = build_agent(cfg, env)
    obs_shape, obs_dtype, _ = obs_signature(env)
    replay = make_replay(cfg, obs_shape, obs_dtype)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(300):
        next_obs, reward, terminated, truncated, _ = env.step(int(rng.integers(2)))
        replay.add(obs, 0, float(reward), next_obs, terminated, truncated=truncated)
        obs = next_obs if not (terminated or truncated) else env.reset()[0]
    env.close()
    state = LoopState(obs=obs)
    return Learner(cfg, agent, replay, state, overlap=overlap), agent, state, obs


def test_overlapped_acting_uses_the_weights_of_the_call_before_until_settled():
    learner, agent, state, obs = fresh_learner(overlap=True)
    assert learner.overlap
    before = agent.q_values(obs[None])
    learner.call(beta=0.4)
    assert learner.pending and agent.num_updates == 0  # not taken in yet
    np.testing.assert_array_equal(agent.q_values(obs[None]), before)  # acting: the copy from before the call
    learner.settle()
    assert not learner.pending and agent.num_updates == 4 and np.isfinite(state.metrics["loss"])
    after = agent.q_values(obs[None])
    assert not np.array_equal(after, before)
    np.testing.assert_allclose(after, agent.online(obs[None]).numpy(), rtol=1e-5, atol=1e-5)  # the acting copy is the network now
    learner.settle()  # nothing pending: a no-op
    assert agent.num_updates == 4
    learner.call(beta=0.4)
    learner.call(beta=0.4)  # settles the one before first
    learner.close()
    assert agent.num_updates == 8


def test_in_line_calls_take_effect_at_once_and_tensorflow_acting_never_overlaps():
    learner, agent, _, obs = fresh_learner(overlap=False)
    learner.call(beta=0.4)
    assert not learner.pending and agent.num_updates == 4
    learner, agent, _, _ = fresh_learner(overlap=True)
    agent._numpy_policy = None  # an agent that acts through TensorFlow (acting would read the variables mid-update)
    from agent.learner import Learner

    learner = Learner(learner.cfg, agent, learner.replay, learner.state, overlap=True)
    assert not learner.overlap
    learner.call(beta=0.4)
    assert not learner.pending and agent.num_updates == 4


def test_overlap_resume_is_bit_exact_from_a_checkpoint(tmp_path):
    """Checkpoints settle the running call; a run paused at a checkpoint step and resumed is the run that went straight on."""
    cfg = small_cfg(overlap_learning=True)
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    straight = train(cfg, tmp_path / "straight", progress=False)
    paused = train(cfg, tmp_path / "resumed", progress=False, pause_at=600)
    assert not paused.finished
    resumed = train(cfg, tmp_path / "resumed", progress=False, resume=True)
    assert (straight.env_steps, straight.episodes, straight.updates) == (resumed.env_steps, resumed.episodes, resumed.updates)
    assert straight.final_eval["returns"] == resumed.final_eval["returns"]
    a = run_files.load_model(tmp_path / "straight").get_weights()
    b = run_files.load_model(tmp_path / "resumed").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_overlap_lags_acting_by_one_call(tmp_path):
    """With exploration off after the start, the lag changes which actions are taken, so the runs part ways:
    the test that the flag does something (the random-acting test shows it changes nothing else)."""
    cfg = small_cfg(epsilon_decay=300, epsilon_end=0.0)
    w_line, *_ = trained(tmp_path, "in-line", cfg)
    w_over, *_ = trained(tmp_path, "overlap", cfg.replace(overlap_learning=True))
    assert any(not np.array_equal(a, b) for a, b in zip(w_line, w_over))


def test_overlapped_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    cfg = small_cfg(overlap_learning=True, loss="mse", terminal_reward=3e38, learning_starts=300, checkpoint_every=100,
                    train_freq=1, gradient_steps=1, eval_every=0)
    with pytest.raises(TrainingStopped, match="loss became inf") as stopped:
        train(cfg, tmp_path, progress=False)
    assert "step-000000200" in str(stopped.value)
    assert all(np.isfinite(w).all() for w in run_files.load_model(tmp_path).get_weights())
    assert json.loads((tmp_path / "meta.json").read_text())["env_step"] == 200
