"""Who chooses the actions: epsilon-greedy on Q-values, random, or a person at the keyboard.

A policy is called with one observation and returns `(action, Q-values of
that observation or None, whether the action was a random one)`; the episode
runner (agent/rollout/episodes.py) shows all three. Epsilon-greedy is written once,
in `epsilon_greedy`, for a batch of observations.

No TensorFlow is imported unless `keras_q_fn` is called, and no pygame unless
a `HumanPolicy` is made, so a random agent starts in a second.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

QFn = Callable[[np.ndarray], np.ndarray]  # obs batch (B, *obs_shape) -> Q-values (B, num_actions)


def epsilon_greedy(
    q_fn: QFn, obs_batch: np.ndarray, epsilon: float, rng: np.random.Generator, num_actions: int
) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy actions for a batch of observations.

    Each row explores with probability `epsilon`. The draws are always
    `rng.random(B)` then `rng.integers(0, num_actions, size=B)`, whatever
    `epsilon` is, so a seeded RNG gives the same actions however often it was
    used for greedy rows. `q_fn` is only called when at least one row acts
    greedily.

    Args:
        q_fn: maps the batch to Q-values `(B, num_actions)`.
        obs_batch: `(B, *obs_shape)` observations.
        epsilon: probability of a random action, per row.
        rng: where the exploration is drawn from.
        num_actions: size of the discrete action space.

    Returns:
        `(actions, explored)`: int64 `(B,)` actions and bool `(B,)`, True where the action was random.
    """
    n = len(obs_batch)
    explore = rng.random(n) < epsilon
    random_actions = rng.integers(0, num_actions, size=n)
    if explore.all():
        return random_actions, explore
    greedy = np.asarray(q_fn(obs_batch)).argmax(axis=1)
    return np.where(explore, random_actions, greedy), explore


def default_epsilon(env_id: str) -> float:
    """0 for classic control; 0.05 on Atari, where a greedy agent can stall forever (Mnih et al. 2015)."""
    from envs import is_atari

    return 0.05 if is_atari(env_id) else 0.0


def keras_q_fn(model) -> QFn:
    """A `q_fn` from a Keras Q-network: one traced `tf.function`, never `model.predict` per step.
    A recurrent network's (agent/dqn/recurrent.py) is a `RecurrentQFn`, which carries its state."""
    import tensorflow as tf

    from agent.dqn.recurrent import is_recurrent

    if is_recurrent(model):
        return RecurrentQFn.from_keras(model)
    spec = tf.TensorSpec([None, *model.input_shape[1:]], dtype=model.inputs[0].dtype)
    call = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda obs_batch: call(obs_batch).numpy()


class RecurrentQFn:
    """A recurrent Q-network's step function as a `q_fn`: each call is one step of an episode, the state carried from
    call to call (one per row of the batch) and zeroed by `reset()` at an episode's start (`QPolicy.reset`).

    Args:
        step: `(obs (B, ...), carry (B, 2, units)) -> (q (B, num_actions), carry after obs)`.
        units: the LSTM's units.
    """

    def __init__(self, step: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], units: int):
        self._step, self.units = step, int(units)
        self.carry: np.ndarray | None = None

    @classmethod
    def from_keras(cls, model) -> RecurrentQFn:
        """The Keras step model (agent/dqn/recurrent.py) in numpy (`RecurrentNumpyPolicy`) where it can, else one traced
        `tf.function`."""
        from agent.dqn.recurrent import RecurrentNumpyPolicy, keras_step, lstm_units

        step = RecurrentNumpyPolicy(model).step if RecurrentNumpyPolicy.supports(model) else keras_step(model)
        return cls(step, lstm_units(model))

    def steps(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of `obs` (N, ...) taken as one episode's observations in order, from the zero state: one call per
        observation (what an export is checked on, agent/export/convert.py)."""
        self.reset()
        return np.concatenate([self(o[None]) for o in obs])

    def reset(self) -> None:
        self.carry = None

    def __call__(self, obs_batch: np.ndarray) -> np.ndarray:
        if self.carry is None or len(self.carry) != len(obs_batch):
            self.carry = np.zeros((len(obs_batch), 2, self.units), np.float32)
        q, self.carry = self._step(np.asarray(obs_batch), self.carry)
        return np.asarray(q, np.float32)


class QPolicy:
    """Greedy on the Q-values, random with probability `epsilon` (`epsilon_greedy`, drawn from its own RNG).

    With the same `q_fn`, `epsilon` and `seed`, and episodes reset from the same
    seeds, it plays the episodes that `agent.evaluation.evaluate` scores.
    """

    def __init__(self, q_fn: QFn, num_actions: int, epsilon: float = 0.0, seed: int | None = None):
        self.q_fn, self.num_actions, self.epsilon = q_fn, num_actions, epsilon
        self.rng = np.random.default_rng(seed)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.q_fn(obs[None]))[0]

    def reset(self) -> None:
        """An episode starts: a recurrent `q_fn` (`RecurrentQFn`) forgets the last one."""
        if hasattr(self.q_fn, "reset"):
            self.q_fn.reset()

    def __call__(self, obs: np.ndarray) -> tuple[int, np.ndarray, bool]:
        """Returns (action, Q-values of `obs`, whether the action was a random one)."""
        q = self.q_values(obs)  # always: the HUD shows them, also when the action is random
        actions, explored = epsilon_greedy(lambda _: q[None], obs[None], self.epsilon, self.rng, self.num_actions)
        return int(actions[0]), q, bool(explored[0])


class AgentPolicy:
    """An agent's own `act(obs_batch, epsilon, rng)` (`DQNAgent.act`) with an RNG of its own; shows no Q-values.

    A recurrent agent's state (`RecurrentDQNAgent`) is carried from step to step and zeroed by `reset`, which the
    episode runner calls at each episode's start.
    """

    def __init__(self, agent, epsilon: float, rng: np.random.Generator):
        self.agent, self.epsilon, self.rng = agent, epsilon, rng
        self.carry = None

    def reset(self) -> None:
        self.carry = None

    def __call__(self, obs: np.ndarray) -> tuple[int, None, bool]:
        if getattr(self.agent, "recurrent", False):
            carry = self.agent.initial_carry(1) if self.carry is None else self.carry
            actions, self.carry = self.agent.act_recurrent(obs[None], carry, self.epsilon, self.rng)
            return int(actions[0]), None, False
        return int(self.agent.act(obs[None], self.epsilon, self.rng)[0]), None, False


class RandomPolicy:
    """Uniformly random actions; it has no Q-values to show."""

    def __init__(self, num_actions: int, seed: int | None = None):
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def q_values(self, obs: np.ndarray) -> None:
        return None

    def __call__(self, obs: np.ndarray) -> tuple[int, None, bool]:
        return int(self.rng.integers(self.num_actions)), None, False  # "(random)" marks epsilon moves only


# --------------------------------------------------------------------------- playing yourself


def keyboard_mapping(env, env_id: str) -> Callable[[set[str]], int] | None:
    """How held keys ({"left", "fire", ...}) choose an action, or None for an env without one."""
    base = env.unwrapped
    if hasattr(base, "get_action_meanings"):  # every ALE game: compose e.g. "UPRIGHTFIRE"
        index = {name: i for i, name in enumerate(base.get_action_meanings())}

        def ale(held: set[str]) -> int:
            v = "UP" if "up" in held and "down" not in held else "DOWN" if "down" in held and "up" not in held else ""
            h = "LEFT" if "left" in held and "right" not in held else "RIGHT" if "right" in held and "left" not in held else ""
            f = "FIRE" if "fire" in held else ""
            # the full combination, then smaller ones; without a combined action, moving wins over firing
            for name in (v + h + f, h and h + f, v and v + f, v + h, h, v, f):
                if name and name in index:
                    return index[name]
            return index.get("NOOP", 0)

        return ale
    if env_id.startswith("CartPole"):
        # CartPole has no "do nothing": with no arrow held, alternate pushes so the cart roughly holds still.
        tick = [0]

        def cartpole(held: set[str]) -> int:
            if "left" in held and "right" not in held:
                return 0
            if "right" in held and "left" not in held:
                return 1
            tick[0] ^= 1
            return tick[0]

        return cartpole
    if env_id.startswith("MountainCar-"):
        return lambda held: 0 if "left" in held and "right" not in held else 2 if "right" in held and "left" not in held else 1
    return None


class HumanPolicy:
    """Reads the keyboard when an action is due; taps shorter than a frame still count."""

    chooses_when_stepping = True  # the keys held when the step is taken decide it, not those of the frame before

    def __init__(self, mapping: Callable[[set[str]], int]):
        import pygame

        self.mapping = mapping
        self.codes = {
            "left": (pygame.K_LEFT, pygame.K_a),
            "right": (pygame.K_RIGHT, pygame.K_d),
            "up": (pygame.K_UP, pygame.K_w),
            "down": (pygame.K_DOWN,),
            "fire": (pygame.K_SPACE,),
        }
        self.tapped: set[str] = set()

    def key_down(self, key: int) -> None:
        for name, codes in self.codes.items():
            if key in codes:
                self.tapped.add(name)

    def q_values(self, obs):
        return None

    def __call__(self, obs):
        import pygame

        pressed = pygame.key.get_pressed()
        held = {name for name, codes in self.codes.items() if any(pressed[c] for c in codes)} | self.tapped
        self.tapped.clear()
        return self.mapping(held), None, False
