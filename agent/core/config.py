"""The run configuration: one frozen dataclass, presets in TOML, overrides on top.

Units matter in RL code, so every field says what it counts: *env steps*
(one call of `env.step`, after frame skipping for Atari), *updates* (one
gradient step on one batch) or *episodes*.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError

def _config_dir() -> Path:
    """configs/ beside the packages in a checkout; agent/configs/ (package data) in an installed wheel."""
    package = Path(__file__).resolve().parent.parent  # agent/
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


CONFIG_DIR = _config_dir()


PRECISIONS = ("float32", "bfloat16", "auto")
NETWORKS = ("auto", "mlp", "nature_cnn", "data_efficient_cnn", "recurrent")  # the Q-network kinds (agent/dqn/networks.py, agent/dqn/recurrent.py)


@dataclass(frozen=True)
class DQNConfig:
    """Everything that defines a DQN run. Saved as `config.toml` in the run directory."""

    # --- environment ---
    env_id: str = "CartPole-v1"  # gymnasium id (ALE ids such as ALE/Breakout-v5 included)
    seed: int = 0  # seeds the env, the replay sampler, exploration and network init
    total_steps: int = 50_000  # env steps of training
    train_minutes: float | None = None  # also stop once training time (evaluations excluded, all sessions) reaches this; then the final evaluation
    pixels: bool = False  # observe rendered frames (gray 84x84, 4 stacked) instead of the state vector
    action_repeat: int = 1  # non-Atari envs: env steps per agent step, rewards summed (envs.ActionRepeat); step counts below count agent steps
    observe: str = "full"  # vector envs: the "full" state, or "position" (velocities hidden, envs/observe.py): a POMDP
    frame_stack: int | None = None  # observations per agent state: none = 4 frames for pixels/Atari, 1 vector otherwise (envs.make_env)
    pixel_view: str = "full"  # with pixels: one of envs.base.PIXEL_VIEWS ("full" frame; CartPole: "cart" window that follows the cart, "cart_track" that window over the track)

    # --- Q-network ---
    network: str = "auto"  # "mlp", "nature_cnn", "data_efficient_cnn" (DER's, cheaper), "auto" (MLP for vectors, Nature CNN for images) or "recurrent" (+ LSTM)
    lstm_units: int = 64  # recurrent: units of the LSTM's state (h and c each)
    sequence_length: int = 20  # recurrent: agent steps per replayed sequence, burn-in included (R2D2: 80)
    burn_in: int = 10  # recurrent: first steps of a sequence that only rebuild the state, no loss (R2D2: 40)
    priority_eta: float = 0.9  # recurrent + prioritized: a sequence's priority is eta * max |TD| + (1 - eta) * mean |TD| (R2D2)
    hidden_sizes: tuple[int, ...] = (64, 64)  # MLP torso widths (units)
    dueling: bool = False  # dueling value/advantage head (Wang et al. 2016)
    layer_norm: bool = False  # LayerNorm before each hidden ReLU of the MLP torso, or the CNN's 512-unit one (Ba et al. 2016; Gallici et al. 2024)
    init_from: str | None = None  # a torso pretrained by `python -m classic pretrain` (.keras) to start from
    demos: str | None = None  # a `play.py --save-demos` file put into the replay before the first env step

    # --- learning ---
    optimizer: str = "adam"  # "adam" or "rmsprop"
    learning_rate: float = 1e-3  # optimizer step size
    learning_rate_end: float | None = None  # if set, the step size moves linearly to this by total_steps (env steps)
    adam_epsilon: float = 1e-7  # Adam's epsilon (Keras default; Dopamine uses 1.5e-4 on Atari)
    fused_adam: bool = False  # Adam's step as TF's fused kernel: the same update up to float32 rounding, 2.2 instead of 6.6 ms for the Nature CNN (docs/throughput.md)
    batch_size: int = 64  # transitions per update
    gamma: float = 0.99  # discount per env step
    n_steps: int = 1  # env steps summed into each target before bootstrapping (Sutton 1988; Rainbow uses 3)
    n_steps_end: int | None = None  # if set, n moves linearly (rounded) from n_steps to this over n_steps_decay env steps (BBF, Schwarzer et al. 2023: 10 -> 3)
    n_steps_decay: int = 0  # env steps over which n_steps anneals to n_steps_end
    loss: str = "huber"  # "huber" (Mnih et al. 2015) or "mse" (the chapter)
    max_grad_norm: float = 10.0  # global-norm gradient clipping; 0 disables it
    double_dqn: bool = True  # Double DQN targets (van Hasselt et al. 2016)
    target_update_period: int = 500  # env steps between target syncs; 0 = no target network
    target_tau: float = 1.0  # at each sync: target <- tau * online + (1 - tau) * target (1 = a hard copy)
    jit_compile: bool = True  # compile the update with XLA
    precision: str = "auto"  # "float32", "bfloat16" (mixed: bf16 compute, float32 weights, head, loss and targets) or "auto" (bfloat16 for a CNN on a CPU with AVX512_BF16/AMX)

    # --- replay ---
    replay_capacity: int = 50_000  # transitions kept
    learning_starts: int = 1_000  # env steps of pure exploration before the first update
    train_freq: int = 1  # env steps between learner calls
    gradient_steps: int = 1  # updates per learner call (replay ratio = gradient_steps / train_freq)
    overlap_learning: bool = False  # run each learner call in a worker thread while acting goes on (agent/run/learner.py): acting lags one call
    prioritized: bool = False  # prioritized replay (Schaul et al. 2016): draw transitions in proportion to their |TD error|
    priority_alpha: float = 0.6  # priority exponent, P(i) ~ p_i^alpha (dimensionless; 0 = uniform, the paper's 0.6)
    priority_beta_start: float = 0.4  # importance-sampling exponent at env step 0, linear to 1 at total_steps (env steps)
    priority_eps: float = 1e-6  # added to |TD error| (in reward units) so no transition's priority is 0

    # --- exploration ---
    epsilon_schedule: str = "linear_steps"  # "linear_steps" or "linear_episodes" (the chapter's)
    epsilon_start: float = 1.0  # probability of a random action at the start
    epsilon_end: float = 0.05  # probability of a random action after the decay
    epsilon_decay: int = 10_000  # env steps (linear_steps) or episodes (linear_episodes) of decay

    # --- reward and episode ends ---
    terminal_reward: float | None = None  # replaces the reward of an episode's last step (the chapter: -10)
    truncation_as_terminal: bool = False  # treat a time limit as terminal (the chapter's `done`; wrong in general)

    # --- evaluation, logging, checkpoints ---
    eval_every: int = 5_000  # env steps between greedy evaluations; 0 = only at the end
    eval_episodes: int = 10  # episodes per evaluation
    eval_epsilon: float = 0.0  # exploration during evaluation
    final_eval_episodes: int = 0  # episodes of the evaluation at the end of training; 0 = eval_episodes
    log_every: int = 1_000  # env steps between progress.csv / TensorBoard rows
    checkpoint_every: int = 10_000  # env steps between checkpoints; 0 = only at the end
    stop_on_solve: bool = False  # end training at the first evaluation >= solve_return
    solve_return: float | None = None  # evaluation mean that counts as solved (None: the env's threshold)
    record_every: int = 0  # env steps between evaluation videos in the run dir; 0 = none

    def __post_init__(self) -> None:
        """Checked wherever it is built: TOML, `--set`, `DQNConfig(...)` or `.replace(...)` from Python.

        Values are converted to the field's type where that is lossless (a
        list of widths to a tuple, an int learning rate to a float); anything
        else raises `UserError` naming the field.
        """
        for name in FIELD_NAMES:
            value = getattr(self, name)
            converted = _coerce(name, value)
            if converted is not value:
                object.__setattr__(self, name, converted)
        validate(self)

    def replace(self, **changes: Any) -> DQNConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(DQNConfig)
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(DQNConfig))


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML or command-line value to the field's type, or say why not."""
    expected = FIELD_TYPES[name]
    optional = type(None) in typing.get_args(expected)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        expected = next(a for a in typing.get_args(expected) if a is not type(None))
    if isinstance(value, str) and expected is not str:
        value = _parse_text(name, value, expected)
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif expected is float:
        if isinstance(value, float) or isinstance(value, int) and not isinstance(value, bool) and abs(value) <= sys.float_info.max:
            return float(value)  # (an int beyond float's range would raise OverflowError here)
    elif expected is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(expected) is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
    raise UserError(f"config field {name!r} expects {_type_name(FIELD_TYPES[name])}, got {value!r}")


def _parse_text(name: str, text: str, expected: Any) -> Any:
    """Parse a `--set key=value` string as TOML-ish literal of the expected type."""
    text = text.strip()
    if expected is bool:
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        return text
    if typing.get_origin(expected) is tuple:
        parts = [p for p in text.strip("[]()").replace(" ", "").split(",") if p]
        try:
            return [int(p.replace("_", "")) for p in parts]
        except ValueError:
            return text
    try:
        number = float(text.replace("_", ""))
    except ValueError:
        return text
    if expected is int and number.is_integer() and "e" not in text.lower() and "." not in text:
        return int(text.replace("_", ""))
    return number


def _type_name(t: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if typing.get_origin(t) is tuple:
        return "a list of integers like [64, 64]"
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if args:
        return names.get(args[0], str(args[0])) + " or none"
    return names.get(t, str(t))


def from_dict(values: dict[str, Any], base: DQNConfig | None = None, source: str = "config") -> DQNConfig:
    """Build a config from a mapping, checking every key and type.

    Raises:
        UserError: on an unknown key or a value of the wrong type.
    """
    changes = {}
    try:
        for key, value in values.items():
            if key not in FIELD_NAMES:
                close = [n for n in FIELD_NAMES if key.split("_")[0] in n][:3]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise UserError(f"{source}: unknown config field {key!r}{hint}; see agent/core/config.py for the fields")
            changes[key] = _coerce(key, value)
        return dataclasses.replace(base or DQNConfig(), **changes)  # DQNConfig.__post_init__ validates
    except UserError as e:  # every refusal names where the values came from (the file, --set)
        message = str(e)
        raise UserError(message if message.startswith(f"{source}: ") else f"{source}: {message}") from None


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Turn `key=value` strings into a mapping (values still text)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    except (ValueError, RecursionError):  # an integer of thousands of digits; arrays or tables nested thousands deep
        raise UserError(f"config file {str(path)!r} is not valid TOML: a number too long or values nested too deeply") from None
    # A preset may group fields in tables for readability; they are flattened.
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def preset_path(name: str) -> Path:
    return CONFIG_DIR / f"{name}.toml"


def validate(cfg: DQNConfig) -> DQNConfig:
    """Reject hyperparameters that cannot work, with the field named.

    Raises:
        UserError: naming the field, the value and the allowed range.
    """

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UserError(f"invalid config: {message}")

    for name in ("learning_rate", "target_tau", "gamma", "epsilon_start", "epsilon_end", "eval_epsilon", "max_grad_norm", "adam_epsilon",
                 "priority_alpha", "priority_beta_start", "priority_eps"):
        value = getattr(cfg, name)
        need(math.isfinite(value), f"{name} must be a finite number, got {value}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    if cfg.learning_rate_end is not None:
        need(math.isfinite(cfg.learning_rate_end) and 0 < cfg.learning_rate_end <= cfg.learning_rate,
             f"learning_rate_end must be in (0, learning_rate={cfg.learning_rate}], got {cfg.learning_rate_end}")
    need(0.0 < cfg.target_tau <= 1.0, f"target_tau must be in (0, 1], got {cfg.target_tau}")
    need(cfg.adam_epsilon > 0, f"adam_epsilon must be > 0, got {cfg.adam_epsilon}")
    need(0.0 <= cfg.gamma <= 1.0, f"gamma must be in [0, 1], got {cfg.gamma}")
    need(1 <= cfg.n_steps <= 100, f"n_steps must be in 1..100 env steps, got {cfg.n_steps}")
    if cfg.n_steps_end is not None:
        need(1 <= cfg.n_steps_end <= cfg.n_steps, f"n_steps_end must be in 1..n_steps={cfg.n_steps}, got {cfg.n_steps_end}; "
             "set n_steps_end=none for a constant n")
        need(cfg.n_steps_decay >= 1, f"n_steps_decay must be >= 1 env step when n_steps_end is set, got {cfg.n_steps_decay}")
    need(cfg.n_steps_decay >= 0, f"n_steps_decay must be >= 0 env steps, got {cfg.n_steps_decay}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(cfg.replay_capacity >= 1, f"replay_capacity must be >= 1, got {cfg.replay_capacity}")
    need(
        cfg.batch_size <= cfg.replay_capacity,
        f"batch_size ({cfg.batch_size}) is larger than replay_capacity ({cfg.replay_capacity}); "
        "lower batch_size or raise replay_capacity",
    )
    need(0 <= cfg.seed < 2**32, f"seed must be in 0..{2**32 - 1} (Keras seeds with 32 bits), got {cfg.seed}")
    need(cfg.total_steps >= 1, f"total_steps must be >= 1, got {cfg.total_steps}")
    if cfg.train_minutes is not None:
        need(math.isfinite(cfg.train_minutes) and cfg.train_minutes > 0, f"train_minutes must be > 0 minutes (or unset), got {cfg.train_minutes}")
    need(cfg.learning_starts >= 0, f"learning_starts must be >= 0, got {cfg.learning_starts}")
    need(cfg.train_freq >= 1, f"train_freq must be >= 1 env step, got {cfg.train_freq}")
    need(cfg.gradient_steps >= 1, f"gradient_steps must be >= 1, got {cfg.gradient_steps}")
    need(0.0 <= cfg.priority_alpha <= 1.0, f"priority_alpha must be in [0, 1], got {cfg.priority_alpha}")
    need(0.0 <= cfg.priority_beta_start <= 1.0, f"priority_beta_start must be in [0, 1], got {cfg.priority_beta_start}")
    need(cfg.priority_eps > 0, f"priority_eps must be > 0, got {cfg.priority_eps}")
    need(cfg.target_update_period >= 0, f"target_update_period must be >= 0 env steps, got {cfg.target_update_period}")
    need(cfg.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0 disables clipping), got {cfg.max_grad_norm}")
    for name in ("epsilon_start", "epsilon_end", "eval_epsilon"):
        value = getattr(cfg, name)
        need(0.0 <= value <= 1.0, f"{name} must be a probability in [0, 1], got {value}")
    need(cfg.epsilon_decay >= 0, f"epsilon_decay must be >= 0, got {cfg.epsilon_decay}")
    need(
        cfg.epsilon_schedule in ("linear_steps", "linear_episodes"),
        f"epsilon_schedule must be 'linear_steps' or 'linear_episodes', got {cfg.epsilon_schedule!r}",
    )
    need(cfg.network in NETWORKS, f"network must be one of {', '.join(map(repr, NETWORKS))}, got {cfg.network!r}")
    _validate_recurrent(cfg, need)
    need(len(cfg.hidden_sizes) >= 1 and all(u >= 1 for u in cfg.hidden_sizes), f"hidden_sizes must be positive widths, got {list(cfg.hidden_sizes)}")
    need(cfg.action_repeat >= 1, f"action_repeat must be >= 1 env step per agent step, got {cfg.action_repeat}")
    from envs.base import PIXEL_VIEWS  # lazy: the package envs loads gymnasium, which importing a config does not need

    from envs.base import OBSERVATIONS

    need(cfg.observe in OBSERVATIONS, f"observe must be one of {', '.join(map(repr, OBSERVATIONS))}, got {cfg.observe!r}")
    need(cfg.observe == "full" or not cfg.pixels, f"observe={cfg.observe!r} hides entries of a state vector; with pixels leave observe=\"full\"")
    if cfg.frame_stack is not None:
        need(1 <= cfg.frame_stack <= 64, f"frame_stack must be in 1..64 observations (or none for the env's default), got {cfg.frame_stack}")
    views = ", ".join(map(repr, PIXEL_VIEWS[:-1])) + f" or {PIXEL_VIEWS[-1]!r}"
    need(cfg.pixel_view in PIXEL_VIEWS, f"pixel_view must be {views}, got {cfg.pixel_view!r}")
    need(cfg.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    need(cfg.optimizer in ("adam", "rmsprop"), f"optimizer must be 'adam' or 'rmsprop', got {cfg.optimizer!r}")
    need(not cfg.fused_adam or cfg.optimizer == "adam", f"fused_adam is Adam's fused step; with optimizer = {cfg.optimizer!r} set fused_adam = false")
    need(cfg.loss in ("huber", "mse"), f"loss must be 'huber' or 'mse', got {cfg.loss!r}")
    for name in ("eval_every", "log_every", "checkpoint_every", "record_every"):
        need(getattr(cfg, name) >= 0, f"{name} must be >= 0 env steps, got {getattr(cfg, name)}")
    need(cfg.eval_episodes >= 1, f"eval_episodes must be >= 1, got {cfg.eval_episodes}")
    need(cfg.final_eval_episodes >= 0, f"final_eval_episodes must be >= 0 (0: eval_episodes), got {cfg.final_eval_episodes}")
    if cfg.terminal_reward is not None:
        need(math.isfinite(cfg.terminal_reward), f"terminal_reward must be finite, got {cfg.terminal_reward}")
    return cfg


def env_options(cfg: DQNConfig) -> dict[str, Any]:
    """How a run sees and steps its env: the keyword arguments of `envs.make_env` that come from the config."""
    options = {"pixels": cfg.pixels, "pixel_view": cfg.pixel_view, "action_repeat": cfg.action_repeat}
    if cfg.observe != "full":  # only what differs from make_env's defaults: runs saved before these fields read alike
        options["observe"] = cfg.observe
    if cfg.frame_stack is not None:
        options["frame_stack"] = cfg.frame_stack
    return options


def _validate_recurrent(cfg: DQNConfig, need) -> None:
    """The recurrent network's fields: an LSTM of some units, sequences longer than their burn-in (R2D2)."""
    need(1 <= cfg.lstm_units <= 4096, f"lstm_units must be in 1..4096, got {cfg.lstm_units}")
    need(2 <= cfg.sequence_length <= 1000, f"sequence_length must be in 2..1000 agent steps, got {cfg.sequence_length}")
    need(0 <= cfg.burn_in < cfg.sequence_length,
         f"burn_in must be in 0..sequence_length - 1 = {cfg.sequence_length - 1} agent steps, got {cfg.burn_in}")
    need(math.isfinite(cfg.priority_eta) and 0.0 <= cfg.priority_eta <= 1.0, f"priority_eta must be in [0, 1], got {cfg.priority_eta}")
    if cfg.network != "recurrent":
        return
    need(cfg.n_steps < cfg.sequence_length - cfg.burn_in,
         f"n_steps ({cfg.n_steps}) must be below the trained part of a sequence, sequence_length - burn_in = "
         f"{cfg.sequence_length - cfg.burn_in}; raise sequence_length or lower n_steps")
    need(cfg.n_steps_end is None, "n_steps_end: an annealed n is not supported by the recurrent network; set n_steps_end=none")
    need(cfg.sequence_length + 2 <= cfg.replay_capacity,
         f"replay_capacity ({cfg.replay_capacity}) must hold a sequence and its ends, sequence_length + 2 = {cfg.sequence_length + 2} rows")


def to_toml(cfg: DQNConfig) -> str:
    """Serialise a config as flat TOML, one field per line (None fields are omitted)."""
    lines = ["# Resolved configuration of this run (see agent/core/config.py for units)."]
    for key, value in cfg.to_dict().items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)
