"""What a `train.py` invocation asks for beyond the config: one object, checked once, next to `DQNConfig`.

`TrainOptions` holds the command line as given (the config's fields it names, and how to run: the run
directory, `--force`, `--resume`, checkpoints kept, the progress bar). `config_values` turns the
config part into `--set`-style values for `resolve_config`; a resume takes only what may change.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from common.errors import UserError

# The options that set a config field, with that field's name (the rest say how to run, not what to run).
CONFIG_FIELDS = {"seed": "seed", "steps": "total_steps", "eval_every": "eval_every", "eval_episodes": "eval_episodes",
                 "record_every": "record_every", "init_from": "init_from", "demos": "demos", "minutes": "train_minutes",
                 "checkpoint_every": "checkpoint_every"}
# What `--resume` lets change: the budget and the checkpoint period; the rest of the saved config stands.
RESUME_MAY_CHANGE = ("steps", "minutes", "checkpoint_every")


@dataclass(frozen=True)
class TrainOptions:
    """train.py's command line, by option (units as in `DQNConfig`: steps are env steps, or agent steps with action_repeat)."""

    env_id: str | None = None  # --env
    preset: str | None = None  # --preset
    config_file: str | None = None  # --config
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE ...
    seed: int | None = None
    steps: int | None = None  # total_steps
    run_dir: str | None = None  # default: runs/PRESET-seedN-TIME
    force: bool = False  # replace a run already in run_dir (kept aside until the new one has a checkpoint)
    eval_every: int | None = None
    eval_episodes: int | None = None
    record_every: int | None = None
    init_from: str | None = None  # a pretrained torso (.keras)
    demos: str | None = None  # recorded play (.npz) put into the replay first
    pixels: bool = False  # learn from rendered frames
    progress: bool = True  # the progress bar on stderr
    resume_dir: str | None = None  # --resume RUN_DIR
    minutes: float | None = None  # train_minutes
    checkpoint_every: int | None = None
    keep: int = 3  # complete checkpoints kept on disk
    save_replay: bool = True  # the replay memory goes into each checkpoint

    @property
    def resuming(self) -> bool:
        return self.resume_dir is not None

    def check(self) -> None:
        """Refuse what cannot go together, in one line, before anything loads.

        Raises:
            UserError: `--keep` below 1, or `--resume` with an option that would change the saved run.
        """
        if self.keep < 1:
            raise UserError(f"--keep must be >= 1 (the newest checkpoint is always kept), got {self.keep}")
        if not self.resuming:
            return
        how_to_run = ("progress", "resume_dir", "keep", "save_replay")
        given = [f.name for f in fields(self) if f.name not in (*RESUME_MAY_CHANGE, *how_to_run)]
        clash = [f"--{_flag(name)}" for name in given if _was_given(getattr(self, name))]
        if clash:
            raise UserError(f"--resume continues the saved config; {', '.join(clash)} cannot be combined with it "
                            "(only --steps, --minutes and --checkpoint-every can change)")

    def config_values(self) -> dict[str, Any]:
        """The config fields these options set (`--set` values, then the named options over them)."""
        from agent.core import config as config_lib

        values = {} if self.resuming else config_lib.parse_overrides(self.overrides)
        for option, field_name in CONFIG_FIELDS.items():
            value = getattr(self, option)
            if value is not None and (not self.resuming or option in RESUME_MAY_CHANGE):
                values[field_name] = value
        if self.pixels:
            values["pixels"] = True
        return values

    def preset_to_use(self) -> tuple[str | None, str | None]:
        """(env id, preset) to resolve: CartPole-v1 when nothing is named; `--pixels` CartPole gets its own preset."""
        env_id, preset = self.env_id, self.preset
        if env_id is None and preset is None and self.config_file is None:
            env_id = "CartPole-v1"
        if self.pixels and preset is None and self.config_file is None and env_id == "CartPole-v1":
            preset = "cartpole-pixels"
        return env_id, preset


def _was_given(value: Any) -> bool:
    """Whether an option was on the command line: None, an unset flag and no `--set` are absent; 0 is a value."""
    return value is not None and value is not False and value != ()


def _flag(name: str) -> str:
    """The command-line flag of an option field."""
    return {"env_id": "env", "config_file": "config", "overrides": "set"}.get(name, name.replace("_", "-"))
