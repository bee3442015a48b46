"""Finding the preset for an env id, and resolving a run's configuration."""

from __future__ import annotations

import re
from pathlib import Path

from agent import config as config_lib
from agent.config import DQNConfig
from agent.errors import UserError


def preset_name_for_env(env_id: str) -> str:
    """"CartPole-v1" -> "cartpole", "ALE/Breakout-v5" and "Breakout" -> "breakout"."""
    name = env_id.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    name = name.replace("NoFrameskip", "")
    return name.lower()


def available_presets() -> list[str]:
    return sorted(p.stem for p in config_lib.CONFIG_DIR.glob("*.toml"))


def resolve_config(
    env_id: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
) -> DQNConfig:
    """Preset (by name, by env, or a file), then `overrides` on top, validated.

    `--env CartPole-v1` loads `configs/cartpole.toml`; an env with no preset
    gets the generic defaults of `DQNConfig` with its id. A short alias such
    as `Breakout` takes the preset's full env id.
    """
    values: dict = {}
    source = "defaults"
    if config_file is not None:
        values = config_lib.load_toml(config_file)
        source = str(config_file)
    elif preset is not None:
        path = config_lib.preset_path(preset)
        if not path.is_file():
            raise UserError(f"unknown preset {preset!r}; available: {', '.join(available_presets())}")
        values = config_lib.load_toml(path)
        source = str(path)
    elif env_id is not None:
        path = config_lib.preset_path(preset_name_for_env(env_id))
        if path.is_file():
            values = config_lib.load_toml(path)
            source = str(path)
    cfg = config_lib.from_dict(values, source=source)
    if env_id is not None:
        if not _is_alias(env_id):
            cfg = cfg.replace(env_id=env_id)
        elif source == "defaults" or preset_name_for_env(cfg.env_id) != preset_name_for_env(env_id):
            raise UserError(f"unknown env {env_id!r}: not a gymnasium id (like CartPole-v1 or ALE/Pong-v5) and no preset configs/{preset_name_for_env(env_id)}.toml")
    if overrides:
        cfg = config_lib.from_dict(overrides, base=cfg, source="--set")
    return cfg


def _is_alias(env_id: str) -> bool:
    return "/" not in env_id and not re.search(r"-v\d+$", env_id)
