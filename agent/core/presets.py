"""Finding the preset for an env id, and resolving a run's configuration."""

from __future__ import annotations

import re
from pathlib import Path

from agent.core import config as config_lib
from agent.core.config import DQNConfig
from common.errors import UserError


def preset_name_for_env(env_id: str) -> str:
    """"CartPole-v1" -> "cartpole", "ALE/Breakout-v5" and "Breakout" -> "breakout"."""
    name = env_id.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    name = name.replace("NoFrameskip", "")
    return name.lower()


def available_presets() -> list[str]:
    return sorted(p.stem for p in config_lib.CONFIG_DIR.glob("*.toml"))


ATARI_DEFAULT_PRESET = "breakout"  # the Atari protocol and speed settings, for ALE games without their own preset
VECTOR_DEFAULT_PRESET = "classic-control"  # measured on Acrobot-v1 and MountainCar-v0, for other vector envs


def preset_for_env(env_id: str) -> str:
    """The preset `--env env_id` loads: its own, else the one for its kind of observation.

    ALE games observe frames: the Breakout preset's protocol and Nature CNN.
    Every other env we accept observes a state vector (`make_env` refuses the
    rest with one line): the classic-control preset's MLP.
    """
    from envs import is_atari

    own = preset_name_for_env(env_id)
    if _is_file(config_lib.preset_path(own)):
        return own
    return ATARI_DEFAULT_PRESET if is_atari(env_id) else VECTOR_DEFAULT_PRESET


def resolve_config(
    env_id: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
) -> DQNConfig:
    """Preset (by name, by env, or a file), then `overrides` on top, validated.

    `--env CartPole-v1` loads `configs/cartpole.toml`. A short Atari name
    (`Pong`, `SpaceInvaders`) becomes its full ALE id; an ALE game without its
    own preset gets the Breakout preset's settings (the Atari evaluation
    protocol, the Nature CNN, the replay and speed settings) with its own env
    id; any other env without a preset gets `configs/classic-control.toml`.

    Raises:
        UserError: an unknown preset, config file, env alias or field.
    """
    from envs import EnvError, is_atari

    if env_id is not None and is_atari(env_id):
        from envs.atari import resolve_atari_id

        try:
            env_id = resolve_atari_id(env_id)
        except EnvError as e:
            raise UserError(str(e)) from None
    values: dict = {}
    source = "defaults"
    if config_file is not None:
        values = config_lib.load_toml(config_file)
        source = str(config_file)
    elif preset is not None:
        path = config_lib.preset_path(preset)
        if not _is_file(path):
            raise UserError(f"unknown preset {preset!r}; available: {', '.join(available_presets())}")
        values = config_lib.load_toml(path)
        source = str(path)
    elif env_id is not None:
        path = config_lib.preset_path(preset_for_env(env_id))
        values = config_lib.load_toml(path)
        source = str(path)
    cfg = config_lib.from_dict(values, source=source)
    if env_id is not None:
        if not _is_alias(env_id):
            cfg = cfg.replace(env_id=env_id)
        elif preset_name_for_env(cfg.env_id) != preset_name_for_env(env_id):
            raise UserError(f"unknown env {env_id!r}: not a gymnasium id (like CartPole-v1 or ALE/Pong-v5) and no preset configs/{preset_name_for_env(env_id)}.toml")
    if overrides:
        cfg = config_lib.from_dict(overrides, base=cfg, source="--set")
    return cfg


def _is_file(path: Path) -> bool:
    """Path.is_file, False for a name the OS refuses (a name of thousands of characters: ENAMETOOLONG)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _is_alias(env_id: str) -> bool:
    return "/" not in env_id and not re.search(r"-v\d+$", env_id)
