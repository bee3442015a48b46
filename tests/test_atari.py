"""Atari preprocessing on the real ROMs (ale-py ships them): shapes, modes, true scores, vector path."""

from __future__ import annotations

import numpy as np
import pytest

from envs import EnvError, is_atari, make_env
from envs.atari import make_atari_env, make_atari_vector_env, resolve_atari_id

FIRE = 1  # Breakout and SpaceInvaders: ['NOOP', 'FIRE', ...]


def test_observation_is_uint8_84x84x4_and_reset_stack_repeats_the_first_frame():
    env = make_atari_env("ALE/Breakout-v5", seed=0, mode="train")
    assert env.observation_space.shape == (84, 84, 4) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    for k in range(4):
        np.testing.assert_array_equal(obs[..., k], obs[..., 0])
    assert obs.any()  # a real screen, not zeros
    next_obs, *_ = env.step(FIRE)
    # The stack shifts by one: the old newest frame is now second newest.
    np.testing.assert_array_equal(next_obs[..., :3], obs[..., 1:])
    np.testing.assert_array_equal(next_obs[..., -1], env.get_wrapper_attr("newest_frame")())
    env.close()


def test_same_seed_same_observations():
    def trajectory(seed):
        env = make_atari_env("Breakout", seed=seed, mode="eval")
        obs, _ = env.reset(seed=seed)
        frames = [obs]
        for a in [FIRE, 2, 2, 3, 0, 3, 2] * 4:
            frames.append(env.step(a)[0])
        env.close()
        return np.stack(frames)

    np.testing.assert_array_equal(trajectory(5), trajectory(5))


def test_life_loss_is_terminal_in_training_only():
    def run(mode):
        env = make_atari_env("Breakout", seed=1, mode=mode)
        env.reset(seed=1)
        for t in range(1, 400):
            _, _, terminated, truncated, info = env.step(0)  # never move: the ball is lost soon
            if info["lives"] < 5:
                env.close()
                return t, terminated, info
        raise AssertionError("no life was lost")

    t_train, terminated_train, info_train = run("train")
    t_eval, terminated_eval, info_eval = run("eval")
    assert t_train == t_eval
    assert terminated_train and info_train["lives"] == 4 and "episode" not in info_train
    assert not terminated_eval and info_eval["lives"] == 4


def test_rewards_clipped_in_training_only_and_episode_reports_the_true_game():
    """SpaceInvaders pays 5-30 points per invader. After a lost life the
    training env's reset presses NOOP, FIRE (a pseudo-reset) and the eval env
    presses the same two inside the step that lost the life, so both stay on
    the same trajectory and every step can be compared."""
    train = make_atari_env("SpaceInvaders", seed=2, mode="train")
    evalenv = make_atari_env("SpaceInvaders", seed=2, mode="eval")
    train.reset(seed=2)
    evalenv.reset(seed=2)
    rng = np.random.default_rng(0)
    pairs, lives_lost = [], 0  # (training, eval) reward of the steps that did not lose a life
    for _ in range(5000):
        a = int(rng.integers(train.action_space.n))
        obs_train, r_train, term_train, trunc_train, info_train = train.step(a)
        obs_eval, r_eval, term_eval, trunc_eval, info_eval = evalenv.step(a)
        if term_eval or trunc_eval:
            assert term_train or trunc_train
            break
        assert "episode" not in info_train and "episode" not in info_eval
        if term_train:  # a life lost: the training env's reset does NOOP, FIRE; the eval env has done them
            lives_lost += 1
            obs_train, _ = train.reset()
        else:
            pairs.append((r_train, r_eval))
        assert np.array_equal(obs_train[..., -1], obs_eval[..., -1])  # the same screen (a reset restarts the stack)
    else:
        raise AssertionError("the game did not end")
    assert lives_lost == 2  # SpaceInvaders has 3 lives
    assert max(r for _, r in pairs) > 1, "expected a reward above 1 to clip"
    assert all(r_train == np.sign(r_eval) for r_train, r_eval in pairs)
    assert info_train["episode"]["r"] == info_eval["episode"]["r"] > 0
    assert info_train["episode"]["l"] == info_eval["episode"]["l"]
    train.close()
    evalenv.close()


def test_evaluation_relaunches_the_ball_after_a_lost_life():
    """Breakout waits for FIRE after each lost life; an eval agent that never
    presses it (greedy at epsilon 0, say) must not stand still to the frame cap."""
    env = make_atari_env("Breakout", seed=3, mode="eval")
    env.reset(seed=3)
    for t in range(1, 2_000):
        _, _, terminated, truncated, info = env.step(0)  # NOOP, always
        if terminated or truncated:
            break
    assert terminated and not truncated and info["lives"] == 0, (t, info)
    env.close()


def first_life_loss(max_frames):
    """A Breakout training env (seed 4) that pressed NOOP until its first lost life: (env, env steps, info, emulator frame)."""
    env = make_atari_env("Breakout", seed=4, mode="train", max_frames=max_frames)
    env.reset(seed=4)
    for t in range(1, 400):
        _, _, terminated, truncated, info = env.step(0)
        if terminated or truncated:
            return env, t, info, env.unwrapped.ale.getEpisodeFrameNumber()
    raise AssertionError("no life was lost")


def test_a_game_that_ends_inside_a_pseudo_reset_keeps_its_record():
    """The frame cap falls inside the no-op of the pseudo-reset after a lost
    life: the game's record comes back from `reset` (and training counts it)."""
    env, steps, info, frame = first_life_loss(max_frames=10_000)
    assert info["lives"] == 4 and "episode" not in info
    env.close()
    env, same_steps, info, same_frame = first_life_loss(max_frames=frame + 2)  # the cap: 2 frames into the pseudo-reset's no-op
    assert (same_steps, same_frame) == (steps, frame) and info["lives"] == 4 and "episode" not in info
    _, reset_info = env.reset()
    assert reset_info["episode"]["r"] == 0 and reset_info["episode"]["l"] == 1 + steps + 1  # FIRE, the NOOPs, the cut no-op
    env.close()


def test_a_game_cut_during_the_fire_after_a_lost_life_keeps_its_record_and_the_next_game_gets_fire():
    """The frame cap falls inside the FIRE of `after_life_lost` in training's pseudo-reset: the record comes back from
    `reset` and the new game is launched with FIRE, as every new game is (and as evaluation does)."""
    env, steps, _, frame = first_life_loss(max_frames=10_000)
    env.close()
    env, _, _, _ = first_life_loss(max_frames=frame + 4 + 2)  # the NOOP's 4 frames, then 2 frames into FIRE
    base = env.unwrapped
    sent, step = [], base.step
    base.step = lambda action: (sent.append(int(action)), step(action))[1]
    _, reset_info = env.reset()
    assert reset_info["episode"]["l"] == 1 + steps + 2  # FIRE, the NOOPs, NOOP, the cut FIRE
    assert sent[:6] == [0, 0, 0, 0, FIRE, FIRE] and sent[-4:] == [FIRE] * 4 and sent[6:-4] == [0] * (len(sent) - 10)
    assert base.ale.lives() == 5
    env.close()


def test_truncation_at_the_frame_cap_reports_the_episode():
    env = make_atari_env("Breakout", seed=0, mode="eval", max_frames=200)
    env.reset(seed=0)
    for t in range(1, 100):
        _, _, terminated, truncated, info = env.step(0)
        if truncated:
            break
    assert truncated and not terminated and info["lives"] == 4
    assert info["episode"]["l"] == 1 + t + 2  # FIRE at reset, the agent's steps, NOOP + FIRE after the lost life
    env.close()


def test_vector_env_matches_single_envs_for_the_same_seed_and_actions():
    seed, n = 3, 2
    vec = make_atari_vector_env("Breakout", n, seed=seed, mode="train")
    singles = [make_atari_env("Breakout", seed=seed + i, mode="train") for i in range(n)]
    vobs, _ = vec.reset(seed=seed)
    sobs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_array_equal(vobs, np.stack(sobs))
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(150):
        actions = rng.integers(4, size=n)
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(actions)
        for i, env in enumerate(singles):
            obs, reward, terminated, truncated, _ = env.step(int(actions[i]))
            assert (vrew[i], vterm[i], vtrunc[i]) == (reward, terminated, truncated)
            if terminated or truncated:
                ends += 1
                np.testing.assert_array_equal(vinfo["final_obs"][i], obs)  # SAME_STEP autoreset
                obs, _ = env.reset()
            np.testing.assert_array_equal(vobs[i], obs)
    assert ends >= 2, "the comparison should cross life-loss resets"
    vec.close()
    for env in singles:
        env.close()


def test_ids_aliases_and_dispatch():
    assert resolve_atari_id("Breakout") == "ALE/Breakout-v5"
    assert resolve_atari_id("pong") == "ALE/Pong-v5"
    assert resolve_atari_id("BreakoutNoFrameskip-v4") == "BreakoutNoFrameskip-v4"
    assert is_atari("ALE/Pong-v5") and is_atari("PongNoFrameskip-v4") and is_atari("Breakout")
    assert not is_atari("CartPole-v1")
    env = make_env("BreakoutNoFrameskip-v4", seed=0, mode="eval")
    assert env.observation_space.shape == (84, 84, 4)
    env.close()


@pytest.mark.parametrize("bad", ["ALE/Breakoutt-v5", "BreakoutNoFrameskip-v9"])
def test_unknown_ale_id_is_one_clear_line(bad):
    with pytest.raises(EnvError) as err:
        make_env(bad, seed=0)
    message = str(err.value)
    assert "\n" not in message and bad in message and "Breakout" in message.split("did you mean")[1]
