"""Prioritized experience replay (Schaul et al. 2016): the sum tree, the draws, the weights, both memories, the learner, resume."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from agent.core.config import DQNConfig
from classic.demos import DemoRecorder
from common.errors import UserError
from agent.core.presets import resolve_config
from agent.run.run_state import StateDictPart
from agent.run.loop import make_replay, seed_replay_with_demos
from agent.run.trainer import train
from replay import FrameReplayBuffer, ReplayBuffer, ReplayMemoryError
from replay.base import Priorities, SumTree, importance_weights

# ---------------------------------------------------------------- the sum tree


def test_sum_tree_sums_and_searches_prefix_sums_exactly():
    tree = SumTree(5)  # padded to 8 leaves: depth 3
    assert (tree.leaf_count, tree.depth, tree.nodes.nbytes) == (8, 3, 16 * 8)
    tree.set([0, 1, 2, 3, 4], [1.0, 0.0, 2.0, 3.0, 0.5])
    assert tree.total == 6.5
    np.testing.assert_array_equal(tree.nodes[1:8], [6.5, 6.0, 0.5, 1.0, 5.0, 0.5, 0.0])  # root, level 1, level 2
    np.testing.assert_array_equal(tree.leaves, [1.0, 0.0, 2.0, 3.0, 0.5])
    # slot i covers [sum of the leaves before it, that + leaf i); slot 1 (0) covers nothing
    mass = [0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 6.499]
    np.testing.assert_array_equal(tree.find(mass), [0, 0, 2, 2, 3, 3, 4, 4])
    np.testing.assert_array_equal(tree.find([6.5, 7.0, 100.0]), [4, 4, 4])  # at or past the total: the last positive leaf
    tree.set(4, 0.0)
    np.testing.assert_array_equal(tree.find([5.999, 6.0, 6.5]), [3, 3, 3])  # never a zero leaf, never the padding


def test_sum_tree_updates_keep_every_sum_and_rebuild_gives_the_same_bits():
    rng = np.random.default_rng(0)
    tree = SumTree(37)
    for _ in range(300):
        slots = rng.integers(0, 37, size=int(rng.integers(1, 9)))
        values = rng.random(slots.size) * (rng.random(slots.size) < 0.8)  # some zeros
        if slots.size == 1:
            tree.set_one(int(slots[0]), np.float64(values[0]))  # one path in Python floats
        else:
            tree.set(slots, values)
    expected = np.zeros(tree.leaf_count)
    expected[:37] = tree.leaves
    for level in range(tree.depth):  # each inner node is the sum of its children, bit for bit
        n = tree.leaf_count >> (level + 1)
        np.testing.assert_array_equal(tree.nodes[n:2 * n], tree.nodes[2 * n:4 * n:2] + tree.nodes[2 * n + 1:4 * n:2])
    np.testing.assert_allclose(tree.total, expected.sum(), rtol=1e-12)
    copy = SumTree(37)
    copy.nodes[copy.leaf_count:copy.leaf_count + 37] = tree.leaves
    copy.rebuild()
    np.testing.assert_array_equal(copy.nodes, tree.nodes)


def test_prefix_search_agrees_with_a_cumulative_sum_on_random_sparse_trees():
    rng = np.random.default_rng(7)
    for capacity in (1, 2, 3, 100, 1000):
        tree = SumTree(capacity)
        values = rng.exponential(size=capacity) * (rng.random(capacity) < 0.3)
        values[rng.integers(capacity)] = 1.0  # not empty
        tree.set(np.arange(capacity), values)
        mass = np.concatenate([rng.random(500) * tree.total, [0.0, tree.total]])
        slots = tree.find(mass)
        ends = np.cumsum(values)
        assert (values[slots] > 0).all()
        inside = mass < ends[-1] * (1 - 1e-9)  # away from the top, where rounding decides
        np.testing.assert_array_equal(slots[inside], np.searchsorted(ends, mass[inside], side="right"))


def test_a_slot_given_twice_keeps_its_last_value():
    tree = SumTree(4)
    tree.set([2, 1, 2, 2], [5.0, 1.0, 7.0, 3.0])
    np.testing.assert_array_equal(tree.leaves, [0.0, 1.0, 3.0, 0.0])
    assert tree.total == 4.0


# ---------------------------------------------------------------- draws and weights


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


def test_draws_follow_the_priorities():
    """P(i) = p_i^alpha / sum p^alpha: 400,000 draws against it (chi-square, 5 degrees of freedom: 20.5 is the 0.1% tail)."""
    priorities = Priorities(8, alpha=0.6, eps=1e-6)
    priorities.add(np.arange(7))  # slot 7 is never stored: it must never be drawn
    td = np.array([0.2, 1.0, 3.0, 0.0, 7.0, 0.5, 1.5])
    priorities.update(np.arange(7), td)
    p = (td + 1e-6) ** 0.6
    np.testing.assert_allclose(priorities.tree.leaves[:7], p, rtol=1e-12)
    assert priorities.tree.leaves[7] == 0.0
    slots, _ = priorities.sample(np.random.default_rng(1), 2_000, 200, beta=0.4, population=7)
    counts = np.bincount(slots.reshape(-1), minlength=8)
    assert counts[7] == 0
    assert chi_square(counts[:7], p / p.sum()) < 20.5
    # a batch is stratified: its j-th draw comes from the j-th 1/200 of the total priority, so slots never go down
    assert (np.diff(slots, axis=1) >= 0).all()


def test_importance_weights_by_hand():
    # (N P)^-beta / max: N = 10, beta = 0.5
    np.testing.assert_allclose(importance_weights(np.array([[0.1, 0.2, 0.4], [0.05, 0.1, 0.1]]), 10, 0.5),
                               [[1.0, 2 ** -0.5, 0.5], [1.0, 2 ** -0.5, 2 ** -0.5]], rtol=1e-6)
    assert importance_weights(np.array([0.3, 0.1]), 4, 0.0).tolist() == [1.0, 1.0]  # beta = 0: no correction
    # the weights sample() returns, for leaves 1, 2, 4 (alpha = 1): P = 1/7, 2/7, 4/7, N = 3, beta = 1
    priorities = Priorities(3, alpha=1.0)
    priorities.tree.set([0, 1, 2], [1.0, 2.0, 4.0])
    slots, weights = priorities.sample(np.random.default_rng(0), 50, 3, beta=1.0, population=3)
    assert weights.dtype == np.float32 and weights.shape == slots.shape == (50, 3)
    by_hand = (3 * np.array([1.0, 2.0, 4.0]) / 7) ** -1.0
    np.testing.assert_allclose(weights, by_hand[slots] / by_hand[slots].max(axis=1, keepdims=True), rtol=1e-6)


def test_new_transitions_get_the_largest_priority_seen_so_far():
    buf = ReplayBuffer(8, (2,), np.float32, seed=0, prioritized=True, priority_alpha=0.5, priority_eps=0.01)
    for t in range(3):
        buf.add(np.full(2, t, np.float32), 0, 1.0, np.full(2, t + 1, np.float32), False)
    np.testing.assert_array_equal(buf.priorities.tree.leaves[:4], [1.0, 1.0, 1.0, 0.0])  # 1 before any update
    buf.update_priorities(np.array([0, 1, 2]), np.array([0.5, -3.0, 0.1]))
    np.testing.assert_allclose(buf.priorities.tree.leaves[:3], np.sqrt([0.51, 3.01, 0.11]))
    assert buf.priorities.max_priority == pytest.approx(3.01)
    buf.add(np.full(2, 3, np.float32), 1, 0.0, np.full(2, 4, np.float32), False, truncated=True)  # a cut episode's row is sampleable
    assert buf.priorities.tree.leaves[3] == pytest.approx(np.sqrt(3.01))
    buf.update_priorities(np.array([1]), np.array([0.0]))
    assert buf.priorities.max_priority == pytest.approx(3.01)  # the largest ever seen, not the largest now
    with pytest.raises(ReplayMemoryError, match="NaN or infinite"):
        buf.update_priorities(np.array([0]), np.array([np.nan]))


def test_demonstrations_enter_at_the_largest_priority(tmp_path):
    env = gym.make("CartPole-v1")
    rec = DemoRecorder("CartPole-v1")
    rng = np.random.default_rng(0)
    for episode in range(2):
        obs, _ = env.reset(seed=episode)
        for _ in range(30):
            action = int(rng.integers(2))
            next_obs, reward, terminated, truncated, _ = env.step(action)
            rec.add(obs, action, reward, terminated, truncated)
            obs = next_obs
            if terminated or truncated:
                break
        rec.cut()
    path = rec.save(tmp_path / "demos.npz", env.observation_space.shape, env.observation_space.dtype)
    env.close()
    cfg = resolve_config(env_id="CartPole-v1").replace(demos=str(path), prioritized=True, replay_capacity=500)
    replay = make_replay(cfg, (4,), np.float32)
    stored = seed_replay_with_demos(replay, cfg, (4,), np.float32)
    assert stored > 0
    np.testing.assert_array_equal(replay.priorities.tree.leaves[:stored], 1.0)
    assert not replay.priorities.tree.leaves[stored:].any()


# ---------------------------------------------------------------- the frame memory: unsampleable slots get 0


def fill_frames(buf: FrameReplayBuffer, steps: int, rng: np.random.Generator, every_add=None) -> None:
    """Random frames in episodes of varied length, ending by termination or truncation, some joined midway."""
    h, w = buf.frame_shape
    obs = np.repeat(rng.integers(0, 256, (h, w, 1), dtype=np.uint8), buf.stack, axis=-1)
    for t in range(steps):
        nxt = np.concatenate([obs[..., 1:], rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], axis=-1)
        end = rng.random() < 0.08
        buf.add(obs, int(rng.integers(4)), float(rng.normal()), nxt, end and t % 2 == 0, truncated=end and t % 2 == 1)
        if end:
            obs = (np.repeat(rng.integers(0, 256, (h, w, 1), dtype=np.uint8), buf.stack, axis=-1) if t % 3
                   else rng.integers(0, 256, (h, w, buf.stack), dtype=np.uint8))  # a reset, or an episode joined midway
        else:
            obs = nxt
        if every_add is not None:
            every_add(t)


@pytest.mark.parametrize("n_steps", [1, 3])
def test_frame_memory_gives_zero_probability_exactly_to_unsampleable_slots(n_steps):
    """After every add (wrapping the ring 6 times, priorities updated in between), the positive leaves are
    exactly the slots uniform sampling accepts (`_valid`): the newest slot, episode ends and the ring's seam get 0."""
    rng = np.random.default_rng(3)
    buf = FrameReplayBuffer(40, (6, 6), stack=4, seed=1, n_steps=n_steps, prioritized=True)

    def check(t):
        positive = buf.priorities.tree.leaves > 0
        np.testing.assert_array_equal(positive, buf._valid(np.arange(buf.capacity)), err_msg=f"after add {t}")
        assert np.count_nonzero(positive) == len(buf)
        if t % 7 == 0 and len(buf):
            drawn = buf.sample_prioritized(2, 8, beta=0.5)
            assert buf._valid(drawn.indices).all()
            buf.update_priorities(drawn.indices, rng.normal(size=drawn.indices.shape) * 3)

    fill_frames(buf, 240, rng, every_add=check)
    drawn = buf.sample_prioritized(50, 32, beta=0.4)
    assert buf._valid(drawn.indices).all()
    reference = buf._gather(drawn.indices)  # the n-step returns and stacks are those of the same slots drawn uniformly
    for name, got, want in zip(drawn.batch._fields, drawn.batch, reference):
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert drawn.batch.obs.shape == (50, 32, 6, 6, 4) and drawn.weights.shape == (50, 32) and drawn.weights.max() == 1.0


def test_the_plain_memory_draws_only_stored_rows():
    buf = ReplayBuffer(16, (1,), np.float32, seed=0, prioritized=True)
    for t in range(5):
        buf.add([t], 0, 0.0, [t + 1], t == 4)
    drawn = buf.sample_prioritized(20, 10, beta=1.0)
    assert set(np.unique(drawn.indices)) == set(range(5))
    np.testing.assert_array_equal(drawn.weights, 1.0)  # equal priorities: uniform, no correction


def test_memories_built_without_priorities_refuse_prioritized_calls():
    buf = ReplayBuffer(8, (1,), np.float32)
    buf.add([0], 0, 0.0, [1], False)
    assert buf.priorities is None
    with pytest.raises(ReplayMemoryError, match="without priorities"):
        buf.sample_prioritized(1, 2, beta=0.4)
    with pytest.raises(ReplayMemoryError, match="without priorities"):
        buf.update_priorities(np.array([0]), np.array([1.0]))


def test_the_tree_costs_16_bytes_per_slot_rounded_up_to_a_power_of_two():
    plain = FrameReplayBuffer.expected_nbytes(1_000_000)
    with_tree = FrameReplayBuffer.expected_nbytes(1_000_000, prioritized=True)
    assert with_tree - plain == 2 * 2**20 * 8 and with_tree / 1_000_000 <= 7_300
    buf = FrameReplayBuffer(100, (8, 8), stack=4, prioritized=True)
    assert buf.nbytes == FrameReplayBuffer.expected_nbytes(100, (8, 8), 4, prioritized=True)
    buf = ReplayBuffer(100, (4,), np.float32, prioritized=True)
    assert buf.nbytes == ReplayBuffer.expected_nbytes(100, (4,), np.float32, prioritized=True)


# ---------------------------------------------------------------- deferred updates (an overlapped learner call)


class _RecordAdds:
    """Stands in for a frame memory in `fill_frames` and keeps its `add` calls, to replay them into several memories."""

    def __init__(self, frame_shape, stack):
        self.frame_shape, self.stack, self.calls = frame_shape, stack, []

    def add(self, *args, **kwargs):
        self.calls.append((args, kwargs))


def plain_adds(steps: int, rng: np.random.Generator) -> list:
    calls, obs = [], rng.normal(size=3).astype(np.float32)
    for t in range(steps):
        nxt = rng.normal(size=3).astype(np.float32)
        end = t % 17 == 16
        calls.append(((obs, t % 2, float(t), nxt, end and t % 2 == 0), {"truncated": end and t % 2 == 1}))
        obs = rng.normal(size=3).astype(np.float32) if end else nxt
    return calls


@pytest.mark.parametrize("kind", ["uniform", "frames"])
def test_a_deferred_priority_update_lands_as_if_it_had_come_right_after_its_draw(kind):
    """Two memories see the same adds. One takes each draw's |TD errors| at once (the in-line learner); the other
    only 10 adds later, just before its next draw (an overlapped call). In a small ring the adds in between
    overwrite drawn slots, and the errors grow, so the largest priority that new slots get moves: the
    priorities, and so every draw, must still be the same bit for bit."""
    if kind == "uniform":
        def make():
            return ReplayBuffer(40, (3,), np.float32, seed=5, n_steps=3, prioritized=True)
        calls = plain_adds(300, np.random.default_rng(0))
    else:
        def make():
            return FrameReplayBuffer(40, (6, 6), stack=4, seed=5, n_steps=3, prioritized=True)
        recorder = _RecordAdds((6, 6), 4)
        fill_frames(recorder, 300, np.random.default_rng(0))
        calls = recorder.calls
    in_line, deferred = make(), make()
    errors = np.random.default_rng(1)
    waiting = None  # (indices, td_errors) of the deferred memory's draw
    overwritten_while_waiting = 0
    for t, (args, kwargs) in enumerate(calls):
        in_line.add(*args, **kwargs)
        deferred.add(*args, **kwargs)
        if t % 10 != 9 or len(in_line) == 0:
            continue
        if waiting is not None:
            indices, td_errors = waiting
            written = np.concatenate(deferred.priorities._written)  # the slots added or removed while the draw waited
            overwritten_while_waiting += int(np.isin(indices, written).any())
            deferred.update_priorities(indices, td_errors)
        np.testing.assert_array_equal(deferred.priorities.tree.leaves, in_line.priorities.tree.leaves, err_msg=f"at add {t}")
        assert deferred.priorities.max_priority == in_line.priorities.max_priority
        a = in_line.sample_prioritized(2, 8, beta=0.5)
        b = deferred.sample_prioritized(2, 8, beta=0.5, deferred=True)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.weights, b.weights)
        td_errors = errors.normal(size=(2, 8)) * (1 + t / 20)
        in_line.update_priorities(a.indices, td_errors)
        waiting = (b.indices, td_errors)
    assert overwritten_while_waiting >= 3  # the ring wrapped under waiting draws: the case that matters happened
    with pytest.raises(ReplayMemoryError, match="waiting"):
        deferred.state_dict()  # a draw still waits for its update: not a state to save
    with pytest.raises(ReplayMemoryError, match="already waiting"):
        deferred.sample_prioritized(1, 4, beta=0.5, deferred=True)


# ---------------------------------------------------------------- checkpoints of the priorities


def filled_plain(seed: int) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(50, (3,), np.float32, seed=seed, n_steps=3, prioritized=True)
    obs = rng.normal(size=3).astype(np.float32)
    for t in range(130):
        nxt = rng.normal(size=3).astype(np.float32)
        end = t % 17 == 16
        buf.add(obs, t % 2, float(t), nxt, end and t % 2 == 0, truncated=end and t % 2 == 1)
        obs = rng.normal(size=3).astype(np.float32) if end else nxt
        if t % 10 == 9:
            drawn = buf.sample_prioritized(2, 8, beta=0.4)
            buf.update_priorities(drawn.indices, rng.normal(size=(2, 8)))
    return buf


def filled_frames(seed: int) -> FrameReplayBuffer:
    buf = FrameReplayBuffer(60, (6, 6), stack=4, seed=seed, n_steps=3, prioritized=True)
    rng = np.random.default_rng(0)

    def learn(t):
        if t % 10 == 9 and len(buf):
            drawn = buf.sample_prioritized(2, 8, beta=0.4)
            buf.update_priorities(drawn.indices, rng.normal(size=(2, 8)))

    fill_frames(buf, 200, rng, every_add=learn)
    return buf


@pytest.mark.parametrize("make", [filled_plain, filled_frames], ids=["uniform", "frames"])
def test_priorities_round_trip_through_a_checkpoint_exactly(make, tmp_path):
    buf = make(seed=5)
    StateDictPart(buf, "replay memory").save_state(tmp_path / "replay")
    assert (tmp_path / "replay" / "priorities.npy").is_file()
    assert json.loads((tmp_path / "replay" / "state.json").read_text())["values"]["max_priority"] == buf.priorities.max_priority
    back = make(seed=99)  # other draws, other priorities
    StateDictPart(back, "replay memory").load_state(tmp_path / "replay", "test")
    np.testing.assert_array_equal(back.priorities.tree.nodes, buf.priorities.tree.nodes)  # the whole tree, bit for bit
    assert back.priorities.max_priority == buf.priorities.max_priority
    x, y = buf.sample_prioritized(3, 16, 0.7), back.sample_prioritized(3, 16, 0.7)  # the same draws go on
    for a, b in zip([*x.batch, x.weights, x.indices], [*y.batch, y.weights, y.indices]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [filled_plain, filled_frames], ids=["uniform", "frames"])
def test_priorities_that_do_not_fit_the_stored_transitions_are_refused(make):
    buf = make(seed=5)
    state = dict(buf.state_dict())
    leaves = np.array(state["priorities"])
    leaves[np.flatnonzero(leaves > 0)[0]] = 0.0  # a sampleable slot without a priority
    with pytest.raises(ReplayMemoryError, match="do not match"):
        make(seed=5).load_state_dict({**state, "priorities": leaves})
    with pytest.raises(ReplayMemoryError, match="finite"):
        make(seed=5).load_state_dict({**state, "priorities": np.full_like(leaves, np.nan)})
    with pytest.raises(ReplayMemoryError, match="max_priority"):
        make(seed=5).load_state_dict({**state, "max_priority": 0.0})


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("field,value", [("priority_alpha", 1.5), ("priority_alpha", -0.1), ("priority_beta_start", 1.2),
                                         ("priority_eps", 0.0), ("priority_eps", float("nan"))])
def test_config_refuses_priority_settings_out_of_range(field, value):
    with pytest.raises(UserError, match=field):
        DQNConfig(**{field: value})


# ---------------------------------------------------------------- the learner


def make_agent(**changes):
    import keras

    from agent.dqn.agent import DQNAgent

    keras.utils.set_random_seed(0)
    return DQNAgent((4,), np.float32, 3, DQNConfig(hidden_sizes=(16, 16), **changes), seed=0)


def stacked_batch(rng, k=3, b=16):
    from replay import Batch

    return Batch(obs=rng.normal(size=(k, b, 4)).astype(np.float32), actions=rng.integers(0, 3, (k, b)).astype(np.int32),
                 rewards=rng.normal(size=(k, b)).astype(np.float32), next_obs=rng.normal(size=(k, b, 4)).astype(np.float32),
                 terminated=np.zeros((k, b), np.float32), discounts=np.full((k, b), 0.9, np.float32))


def test_unit_weights_update_like_plain_dqn_and_report_each_samples_td_error():
    batch = stacked_batch(np.random.default_rng(0))
    plain, weighted = make_agent(), make_agent()
    q_before = weighted.online(batch.obs[0]).numpy()
    target = batch.rewards[0] + 0.9 * weighted.target(batch.next_obs[0]).numpy()[
        np.arange(16), weighted.online(batch.next_obs[0]).numpy().argmax(axis=1)]  # Double DQN
    expected_first = np.abs(target - q_before[np.arange(16), batch.actions[0]])
    m_plain = plain.update(batch)
    m_weighted, td = weighted.update_prioritized(batch, np.ones((3, 16), np.float32))
    assert td.shape == (3, 16) and td.dtype == np.float32 and (td > 0).all()
    np.testing.assert_allclose(td[0], expected_first, rtol=1e-4, atol=1e-5)  # the first step's |delta|, before its gradient
    assert m_weighted["loss"] == pytest.approx(m_plain["loss"], rel=1e-6)
    for a, b in zip(plain.online.get_weights(), weighted.online.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert weighted.num_updates == plain.num_updates == 3


def test_the_loss_is_the_weighted_mean_of_the_per_sample_losses():
    """gamma = 0 and the MSE loss: the loss of one step is mean(w (r - Q(s, a))^2), with Q before the step."""
    rng = np.random.default_rng(1)
    batch = stacked_batch(rng, k=1)._replace(discounts=np.zeros((1, 16), np.float32))
    weights = rng.uniform(0.1, 1.0, (1, 16)).astype(np.float32)
    agent = make_agent(gamma=0.0, loss="mse")
    delta = batch.rewards[0] - agent.online(batch.obs[0]).numpy()[np.arange(16), batch.actions[0]]
    metrics, td = agent.update_prioritized(batch, weights)
    assert metrics["loss"] == pytest.approx(float(np.mean(weights[0] * delta**2)), rel=1e-5)
    np.testing.assert_allclose(td[0], np.abs(delta), rtol=1e-5, atol=1e-6)
    single, td_single = make_agent(gamma=0.0, loss="mse").update_prioritized(batch._replace(
        **{f: getattr(batch, f)[0] for f in batch._fields}), weights[0])  # one batch (B, ...) works too
    assert td_single.shape == (16,) and single["loss"] == pytest.approx(metrics["loss"], rel=1e-6)


# ---------------------------------------------------------------- a prioritized run resumes bit for bit

PER_RUN = dict(total_steps=1_200, learning_starts=300, train_freq=50, gradient_steps=25, eval_every=600, eval_episodes=2,
               final_eval_episodes=3, checkpoint_every=600, log_every=300, replay_capacity=5_000, prioritized=True)


def network_tensors(checkpoint):
    import tensorflow as tf

    prefix = str(checkpoint / "agent" / "networks")
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix) if "_CHECKPOINTABLE_OBJECT_GRAPH" not in name}


def progress_rows(run):
    """progress.csv without its clock columns."""
    rows = (run / "progress.csv").read_text().splitlines()
    header = rows[0].split(",")
    keep = [i for i, name in enumerate(header) if name not in ("wall_time_s", "train_time_s", "steps_per_s")]
    return [[row.split(",")[i] for i in keep] for row in rows]


def test_a_prioritized_run_resumes_bit_for_bit(tmp_path):
    cfg = resolve_config(env_id="CartPole-v1").replace(**PER_RUN)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir()
    resumed.mkdir()
    a = train(cfg, straight, progress=False)
    half = train(cfg, resumed, progress=False, pause_at=600)
    assert not half.finished
    b = train(cfg, resumed, progress=False, resume=True)
    assert (a.env_steps, a.episodes, a.updates) == (b.env_steps, b.episodes, b.updates) == (1_200, a.episodes, 19 * 25)  # learner calls at env steps 300, 350, ..., 1200
    assert a.final_eval["returns"] == b.final_eval["returns"]
    assert progress_rows(straight) == progress_rows(resumed)
    last_a, last_b = straight / "checkpoints" / "step-000001200", resumed / "checkpoints" / "step-000001200"
    ta, tb = network_tensors(last_a), network_tensors(last_b)
    assert sorted(ta) == sorted(tb) and any("optimizer" in k for k in ta)
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)
    assert (last_a / "replay" / "priorities.npy").is_file()
    for npy in sorted((last_a / "replay").glob("*.npy")):  # the priorities included
        assert npy.read_bytes() == (last_b / "replay" / npy.name).read_bytes(), npy.name
    va, vb = (json.loads((d / "replay" / "state.json").read_text())["values"] for d in (last_a, last_b))
    assert va == vb and va["max_priority"] > 1.0  # learned priorities, beyond the initial 1
    priorities = np.load(last_a / "replay" / "priorities.npy")
    assert len(np.unique(priorities[priorities > 0])) > 100  # the learner's TD errors reached the tree


# ---------------------------------------------------------------- the benches measure it


def run_bench(script: str, *args: str) -> dict:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "bench" / script), *args, "--json"], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_replay_memory_bench_reports_the_prioritized_memory_beside_the_plain_one():
    out = run_bench("replay_memory.py", "--capacity", "1000", "--fill", "300", "--calls", "5", "--prioritized")
    per = out["prioritized"]
    total = FrameReplayBuffer.expected_nbytes(1000, (84, 84), 4, prioritized=True)
    assert (per["total_bytes"], per["allocated_nbytes"], per["tree_bytes"], per["tree_depth"]) == (total, total, 2 * 1024 * 8, 10)
    assert per["bytes_per_transition"] == total / 1000 and out["bytes_per_transition"] < per["bytes_per_transition"]
    for key in ("add_us", "sample_us", "update_priorities_us", "tree_sample_us", "tree_update_us"):
        assert per[key] > 0, key


def test_atari_throughput_bench_times_the_priority_updates():
    out = run_bench("atari_throughput.py", "--env", "Breakout", "--steps", "8", "--prioritized", "--set", "learning_starts=64",
                    "--set", "train_freq=4", "--set", "gradient_steps=2", "--set", "batch_size=8", "--set", "replay_capacity=1000",
                    "--set", "overlap_learning=false")  # in line, each part of the call is timed on its own
    assert out["prioritized"] is True and out["ms_per_priority_update"] > 0 and out["ms_per_sample"] > 0
    assert out["replay_mb"] == round(FrameReplayBuffer.expected_nbytes(1000, prioritized=True) / 2**20, 1)
