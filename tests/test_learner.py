"""The learner call in line and overlapped with acting (agent/run/learner.py, `overlap_learning`)."""

import json

import numpy as np
import pytest

from agent.run.run_dir import RunDirectory
from agent.core.presets import resolve_config
from agent.run.run_state import LoopState
from agent.run.loop import TrainingStopped, build_agent, make_replay
from agent.run.trainer import Trainer, train
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
    from agent.run.learner import Learner

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


def test_overlapped_acting_uses_the_weights_of_the_latest_calls_start_however_often_it_is_settled():
    learner, agent, state, obs = fresh_learner(overlap=True)
    assert learner.overlap
    w0 = agent.q_values(obs[None])
    learner.call(beta=0.4)
    assert learner.pending and agent.num_updates == 0  # not taken in yet
    np.testing.assert_array_equal(learner._acting.q_values(obs[None]), w0)  # training acts on the weights the call began with
    learner.settle()
    assert not learner.pending and agent.num_updates == 4 and np.isfinite(state.metrics["loss"])
    w1 = agent.q_values(obs[None])  # evaluation, play, predict: the newest weights
    assert not np.array_equal(w1, w0)
    np.testing.assert_allclose(w1, agent.online(obs[None]).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(learner._acting.q_values(obs[None]), w0)  # a settle does not move acting: only a call does
    assert np.argmax(w0) == learner.act(obs[None], 0.0)[0]
    learner.settle()  # nothing pending: a no-op
    assert agent.num_updates == 4
    learner.call(beta=0.4)
    np.testing.assert_array_equal(learner._acting.q_values(obs[None]), w1)
    learner.call(beta=0.4)  # settles the one before first
    learner.close()
    assert agent.num_updates == 8


def test_a_failed_overlapped_call_leaves_no_prioritized_draw_waiting(monkeypatch):
    from agent.dqn.agent import NonFiniteLossError

    learner, agent, _, _ = fresh_learner(overlap=True, prioritized=True)
    learner.call(beta=0.4)

    def fails(results):
        raise NonFiniteLossError("loss became nan")

    monkeypatch.setattr(agent, "finish_update", fails)
    with pytest.raises(NonFiniteLossError):
        learner.settle()
    assert not learner.pending
    learner.replay.state_dict()  # no deferred update waits: the memory can be saved and drawn from again
    learner.replay.sample_prioritized(1, 4, beta=0.4, deferred=True)
    learner.close()


def test_in_line_calls_take_effect_at_once_and_tensorflow_acting_never_overlaps():
    learner, agent, _, obs = fresh_learner(overlap=False)
    learner.call(beta=0.4)
    assert not learner.pending and agent.num_updates == 4
    learner, agent, _, _ = fresh_learner(overlap=True)
    agent._numpy_policy = None  # an agent that acts through TensorFlow (acting would read the variables mid-update)
    from agent.run.learner import Learner

    learner = Learner(learner.cfg, agent, learner.replay, learner.state, overlap=True)
    assert not learner.overlap
    learner.call(beta=0.4)
    assert not learner.pending and agent.num_updates == 4


@pytest.mark.parametrize("overlap", [False, True], ids=["in-line", "overlapped"])
@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
def test_each_learner_call_is_one_call_of_the_compiled_update_traced_once(overlap, prioritized):
    """The K updates of a learner call, with prioritized replay too, run as one call of the compiled update (Python
    and dispatch overhead once per call, not per update), and its graph is traced once, not once per call."""
    learner, agent, _, _ = fresh_learner(overlap=overlap, prioritized=prioritized)
    compiled = agent._update_fn
    calls = []

    def counting(*tensors):
        calls.append(tensors[1].shape)  # the actions: (K, B)
        return compiled(*tensors)

    agent._update_fn = counting
    for _ in range(3):
        learner.call(beta=0.4)
    learner.settle()
    learner.close()
    cfg = learner.cfg
    assert calls == [(cfg.gradient_steps, cfg.batch_size)] * 3
    assert agent.num_updates == 3 * cfg.gradient_steps
    assert compiled.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
def test_overlap_resume_is_bit_exact_from_any_step(tmp_path, prioritized):
    """Paused at env step 460, while the call of step 448 is pending (no log, evaluation or checkpoint there): the
    checkpoint settles it but keeps the weights acting lags on, so the resumed run is the run that went straight on.
    Greedy acting and 16 updates per call make the 51 env steps to the next call depend on which weights act."""
    cfg = small_cfg(overlap_learning=True, prioritized=prioritized, epsilon_start=0.0, epsilon_end=0.0, train_freq=64, gradient_steps=16)
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    straight = train(cfg, tmp_path / "straight", progress=False)
    paused = train(cfg, tmp_path / "resumed", progress=False, pause_at=460)
    assert not paused.finished
    resumed = train(cfg, tmp_path / "resumed", progress=False, resume=True)
    assert (straight.env_steps, straight.episodes, straight.updates) == (resumed.env_steps, resumed.episodes, resumed.updates)
    assert straight.final_eval["returns"] == resumed.final_eval["returns"]
    a = RunDirectory(tmp_path / "straight").load_model().get_weights()
    b = RunDirectory(tmp_path / "resumed").load_model().get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_a_checkpoint_keeps_the_weights_acting_lags_on(tmp_path):
    """Paused while a call is pending, the run settles it, so the network moves on, but training keeps acting on
    the weights the call began with; a resume must act on those too, not on the network it loads."""
    cfg = small_cfg(overlap_learning=True, train_freq=64, gradient_steps=16)
    with Trainer(cfg, tmp_path) as trainer:
        trainer.train(pause_at=460)  # the call of env step 448 was pending
        run = trainer.run
        held = run.learner._acting.arrays()
        current = run.agent.frozen_acting_copy().arrays()
    assert any(not np.array_equal(a, b) for a, b in zip(held, current))  # acting lags the network by that call
    assert (tmp_path / "checkpoints" / "step-000000460" / "learner").is_dir()
    with Trainer(cfg, tmp_path, resume=True) as trainer:
        for a, b in zip(trainer.run.learner._acting.arrays(), held):
            np.testing.assert_array_equal(a, b)


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
    assert "step-000000200" in str(stopped.value) and "in the learner call begun at env step 300" in str(stopped.value)
    assert all(np.isfinite(w).all() for w in RunDirectory(tmp_path).load_model().get_weights())
    assert json.loads((tmp_path / "meta.json").read_text())["env_step"] == 200
