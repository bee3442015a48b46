"""Atari games through ale-py, preprocessed as in Mnih et al. (2015).

Protocol. We build `ALE/<Game>-v5` with v5's own frame skipping and sticky
actions switched off (`frameskip=1`, `repeat_action_probability=0.0`,
`full_action_space=False`), which is exactly the emulator of the
`<Game>NoFrameskip-v4` ids, and do the preprocessing of Mnih et al. (2015) /
Dopamine / Stable-Baselines3 in our own wrappers, innermost first:

    NoopReset         1..30 random no-op frames at the start of a game (seeded)
    MaxAndSkip        repeat each action 4 frames, max-pool the last two
    RecordEpisodeStatistics   true game score and length (unclipped, all lives)
    EpisodicLife      train only: a lost life ends the episode, not the game;
                      the next reset goes on with `after_life_lost` (NOOP, then FIRE)
    FireReset         press FIRE after a reset in games that need it
                      (eval/play: `after_life_lost` inside the step that lost a life)
    ResizeFrame       84x84 with cv2.INTER_AREA (ALE gives the grayscale screen)
    ClipReward        train only: reward -> sign(reward)
    FrameStack        the last 4 frames, uint8 (84, 84, 4), newest last

Episodes are capped at 108,000 emulator frames (30 minutes, 27,000 agent
steps), reported as `truncated`. Sticky actions (Machado et al. 2018) are off
by default so scores compare with Mnih et al. (2015); pass
`repeat_action_probability=0.25` for the v5 / Machado protocol.

`info["episode"] = {"r", "l", "t"}` appears only when the real game ends
(game over or the frame cap), also in training mode, where a lost life ends
the *episode* with `terminated=True` but carries no `"episode"` key: the
stock `RecordEpisodeStatistics` reports when the env below it ends, and
below `EpisodicLife` that is the real game, whose pseudo-resets after a lost
life never reach its `reset`. "r" is the true score over all lives, "l" the
agent steps (the wrappers' own NOOP/FIRE steps included). A game that ends
inside a wrapper's reset (the no-op of a pseudo-reset meeting the frame cap,
say) reports its record in the info that `reset` returns; callers count both.

Frames are ALE's grayscale screen (measured equal to cv2 RGB2GRAY on
Breakout), max-pooled in gray as Dopamine does. The newest 84x84 frame of
an observation is `obs[..., -1]` (the frame replay stores only that one per
step); `FrameStack.newest_frame()` returns it too.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import ale_py
import cv2
import gymnasium as gym
import numpy as np

from envs.base import FRAME_SIZE, FRAME_STACK, MODES, EnvError

gym.register_envs(ale_py)
# ALE greets every new emulator with a banner on stderr; keep warnings and errors only.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)

NOOP = 0  # action 0 of every ALE game (NoopReset checks it)
FRAME_SKIP = 4  # Mnih et al. (2015): act every 4th frame (FRAME_SIZE and FRAME_STACK: envs.base)
NOOP_MAX = 30  # Mnih et al. (2015): up to 30 no-ops at the start of a game
MAX_FRAMES = 108_000  # 30 minutes of play at 60 Hz (Machado et al. 2018)


# ---------------------------------------------------------------- ids


def _ale_ids() -> list[str]:
    """Every registered ALE id (v5 and the legacy v0/v4 ones)."""
    return sorted(k for k, spec in gym.registry.items() if str(spec.entry_point).startswith("ale_py"))


def atari_aliases() -> dict[str, str]:
    """Short names to v5 ids, e.g. {"Breakout": "ALE/Breakout-v5", "Pong": "ALE/Pong-v5", ...}."""
    return {k[len("ALE/") : -len("-v5")]: k for k in _ale_ids() if k.startswith("ALE/") and k.endswith("-v5")}


def resolve_atari_id(name: str) -> str:
    """Map "Breakout" (or "breakout") to "ALE/Breakout-v5"; pass full ALE ids through.

    Raises:
        EnvError: one line naming the id and its closest registered matches.
    """
    ids = _ale_ids()
    if name in ids:
        return name
    aliases = atari_aliases()
    by_lower = {k.lower(): v for k, v in aliases.items()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    # only ids make_env takes as Atari: ALE/...-v5 and ...NoFrameskip-v4 ids and the short names (not ale-py's Breakout-v4,
    # which the plain registry would get and refuse)
    candidates = [i for i in ids if i.startswith("ALE/") or "NoFrameskip" in i] + list(aliases)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; try one of {', '.join(list(aliases)[:5])}, ..."
    raise EnvError(f"unknown Atari env id {name!r}{hint}")


def atari_game(env_id: str) -> str:
    """The ROM behind an id ("ALE/Breakout-v5", "BreakoutNoFrameskip-v4" -> "breakout").

    `make_atari_env` gives every id of one game the same emulator settings and
    wrappers, so data recorded under one id fits the others.
    """
    return str(gym.spec(resolve_atari_id(env_id)).kwargs.get("game", env_id))


# ---------------------------------------------------------------- wrappers


class NoopReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Start each game after 1..noop_max no-ops so starts differ (Mnih et al. 2015)."""

    def __init__(self, env: gym.Env, noop_max: int = NOOP_MAX) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, noop_max=noop_max)
        gym.Wrapper.__init__(self, env)
        self.noop_max = noop_max
        if env.unwrapped.get_action_meanings()[0] != "NOOP":
            raise EnvError(f"{env.spec.id if env.spec else env}: action 0 is not NOOP")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        # The base env's np_random is seeded by reset(seed=...), so the count is reproducible.
        for _ in range(int(self.unwrapped.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0):
            obs, _, terminated, truncated, info = self.env.step(NOOP)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Repeat the action `skip` frames and max-pool the last two, removing sprite flicker (Mnih et al. 2015)."""

    def __init__(self, env: gym.Env, skip: int = FRAME_SKIP) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, skip=skip)
        gym.Wrapper.__init__(self, env)
        self.skip = skip

    def step(self, action):
        total = 0.0
        previous = newest = None
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            previous, newest = newest, obs  # ALE hands out a fresh array per frame
            if terminated or truncated:
                break
        frame = newest if previous is None else np.maximum(previous, newest)
        return frame, total, terminated, truncated, info


def fire_action(env: gym.Env) -> int | None:
    """FIRE's index among the game's actions, or None for a game without FIRE."""
    meanings = env.unwrapped.get_action_meanings()
    return meanings.index("FIRE") if "FIRE" in meanings else None


def after_life_lost(env: gym.Env, fire: int | None):
    """What follows a lost life, in every mode: a NOOP step, then FIRE in games that wait for it (Breakout's ball).

    The one place that says it. Training makes these presses the pseudo-reset that
    starts the next episode (`EpisodicLife.reset`), evaluation and play make them
    inside the agent step that lost the life (`FireReset.step`), so both send the
    emulator the same actions and meet the same states. Each press is one step of
    `env` (4 frames above `MaxAndSkip`); the presses stop when the game ends.

    Returns:
        The last press's (obs, reward, terminated, truncated, info), with the reward summed over the presses.
    """
    reward = 0.0
    for press in (NOOP,) if fire is None else (NOOP, fire):
        obs, more, terminated, truncated, info = env.step(press)
        reward += float(more)
        if terminated or truncated:
            break
    return obs, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Training only: a lost life ends the episode (a terminal for the target), the game goes on (Mnih et al. 2015).

    The reset after a lost life is no real reset: the game goes on from where it
    is with `after_life_lost` (NOOP, then FIRE in games that have it), and
    `continued` tells `FireReset` above that FIRE was pressed already.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.lives = 0
        self.game_over = True
        self.fire = fire_action(env)
        self.continued = False  # the last reset went on with the same game after a lost life

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
            self.continued = False
        else:
            obs, _, terminated, truncated, info = after_life_lost(self.env, self.fire)
            self.continued = not (terminated or truncated)
            if not self.continued:  # the game ended in those presses (the frame cap, say): keep its record
                ended = info.get("episode")
                obs, info = self.env.reset()
                if ended is not None:
                    info = {**info, "episode": ended}
        self.game_over = False
        self.lives = self.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Press FIRE after a reset, and with `after_life_loss` make the presses of `after_life_lost` after each lost life.

    Games like Breakout wait for FIRE to launch the ball. A new game gets it
    here. After a lost life `after_life_lost` presses it: in training the
    pseudo-reset of `EpisodicLife` below does (a lost life ends the episode), in
    evaluation and play (`after_life_loss=True`) this wrapper does inside the
    agent step that lost the life; without it there a greedy agent that never
    chose FIRE would stand still until the frame cap.

    A game that ends inside a reset (during the FIRE step or the presses of a
    pseudo-reset below) is not lost: its `"episode"` record comes back in the
    reset's info.
    """

    def __init__(self, env: gym.Env, after_life_loss: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, after_life_loss=after_life_loss)
        gym.Wrapper.__init__(self, env)
        fire = fire_action(env)
        if fire is None:
            raise EnvError(f"{env.spec.id if env.spec else env}: the game has no FIRE action")
        self.fire = fire
        self.after_life_loss = after_life_loss
        self.lives = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if not (isinstance(self.env, EpisodicLife) and self.env.continued):  # else after_life_lost pressed FIRE already
            ended = info.get("episode")
            obs, _, terminated, truncated, info = self.env.step(self.fire)
            if terminated or truncated:
                ended = info.get("episode", ended)
                obs, info = self.env.reset()
            if ended is not None:
                info = {**info, "episode": ended}
        self.lives = self.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.after_life_loss and not (terminated or truncated):
            if self.unwrapped.ale.lives() < self.lives:  # the same agent step goes on as training's pseudo-reset does
                obs, more, terminated, truncated, info = after_life_lost(self.env, self.fire)
                reward = float(reward) + more
            self.lives = self.unwrapped.ale.lives()
        return obs, reward, terminated, truncated, info


class ResizeFrame(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Shrink the gray 210x160 screen to 84x84 with area averaging, as the Nature network expects (Mnih et al. 2015)."""

    def __init__(self, env: gym.Env, size: int = FRAME_SIZE) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, size=size)
        gym.ObservationWrapper.__init__(self, env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return cv2.resize(observation, (self.size, self.size), interpolation=cv2.INTER_AREA)


def clip_reward(reward):
    """sign(reward), so one learning rate fits every game (Mnih et al. 2015); scalars or arrays (recorded demos)."""
    return np.sign(reward)


class ClipReward(gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """Training only: `clip_reward` on every step."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.RewardWrapper.__init__(self, env)

    def reward(self, reward) -> float:
        return float(clip_reward(reward))


class FrameStack(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """The last `k` frames as one uint8 (H, W, k) observation, newest last, so the state shows motion (Mnih et al. 2015).

    At reset every slot holds the first frame of the episode.
    """

    def __init__(self, env: gym.Env, k: int = FRAME_STACK) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, k=k)
        gym.Wrapper.__init__(self, env)
        h, w = env.observation_space.shape
        self.k = k
        self._stack = np.zeros((h, w, k), dtype=np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, (h, w, k), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        frame, info = self.env.reset(seed=seed, options=options)
        self._stack[...] = frame[..., None]
        return self._stack.copy(), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(action)
        self._stack[..., :-1] = self._stack[..., 1:].copy()
        self._stack[..., -1] = frame
        return self._stack.copy(), reward, terminated, truncated, info

    def newest_frame(self) -> np.ndarray:
        """The newest 84x84 frame (a copy); the same as `obs[..., -1]`."""
        return self._stack[..., -1].copy()


# ---------------------------------------------------------------- builders


def make_atari_env(
    env_id: str,
    *,
    seed: int | None = None,
    mode: str = "train",
    render_mode: str | None = None,
    frame_stack: int = FRAME_STACK,
    repeat_action_probability: float = 0.0,
    noop_max: int = NOOP_MAX,
    frame_skip: int = FRAME_SKIP,
    max_frames: int = MAX_FRAMES,
) -> gym.Env:
    """Build a preprocessed Atari env (see the module docstring for the protocol).

    Args:
        env_id: "ALE/Breakout-v5", "BreakoutNoFrameskip-v4" or a short name ("Breakout").
        seed: seeds the first reset (no-op count, ALE) and the action space.
        mode: "train" (lost life = terminal, clipped rewards) or "eval"/"play"
            (the full game with true rewards).
        render_mode: passed to `gym.make` ("rgb_array" gives the color screen).
        frame_stack: frames per observation.
        repeat_action_probability: sticky actions; 0.25 is Machado et al. (2018).
        noop_max: at most this many no-op frames at a game's start (0: none).
        frame_skip: emulator frames per agent step.
        max_frames: emulator frames after which a game is truncated.

    Returns:
        An env with `uint8 (84, 84, frame_stack)` observations.

    Raises:
        EnvError: for an unknown id or mode.
    """
    if mode not in MODES:
        raise EnvError(f"mode must be one of {MODES}, got {mode!r}")
    ale_id = resolve_atari_id(env_id)
    env = gym.make(
        ale_id,
        frameskip=1,
        repeat_action_probability=repeat_action_probability,
        full_action_space=False,
        obs_type="grayscale",  # ALE's own luminance; measured equal to cv2 RGB2GRAY on Breakout
        max_num_frames_per_episode=max_frames,
        render_mode=render_mode,
    )
    training = mode == "train"
    env = NoopReset(env, noop_max)
    env = MaxAndSkip(env, frame_skip)
    # Inside EpisodicLife and ClipReward: sees only real game ends and true rewards.
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if training:
        env = EpisodicLife(env)
    if fire_action(env) is not None:
        env = FireReset(env, after_life_loss=not training)
    env = ResizeFrame(env)
    if training:
        env = ClipReward(env)
    env = FrameStack(env, frame_stack)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_atari_vector_env(
    env_id: str,
    num_envs: int,
    *,
    seed: int | None = None,
    mode: str = "train",
    **kwargs,
) -> gym.vector.SyncVectorEnv:
    """`num_envs` copies of `make_atari_env` in one SyncVectorEnv, so acting can be batched.

    Sub-env i is seeded with `seed + i` (gymnasium's convention for
    `reset(seed=seed)`), so sub-env 0 matches `make_atari_env(env_id, seed=seed)`.
    Autoreset is SAME_STEP: a finished sub-env is reset inside `step`, its
    real last observation is `info["final_obs"][i]` and its
    `info["final_info"]` holds `"episode"` at a real game end.

    ale-py's native `AtariVectorEnv` is not used: its no-op counts come from
    its own C++ RNG, so its observations differ from the single-env path.
    """
    if num_envs < 1:
        raise EnvError(f"num_envs must be >= 1, got {num_envs}")
    resolve_atari_id(env_id)  # fail with one line before building anything

    def thunk(i: int) -> Callable[[], gym.Env]:
        return lambda: make_atari_env(env_id, seed=None if seed is None else seed + i, mode=mode, **kwargs)

    envs = gym.vector.SyncVectorEnv(
        [thunk(i) for i in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    if seed is not None:
        envs.reset(seed=seed)
        envs.action_space.seed(seed)
    return envs
