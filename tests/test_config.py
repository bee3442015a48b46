import pytest

from agent.core import config as config_lib
from agent.core.config import DQNConfig
from common.errors import UserError
from agent.core.presets import preset_for_env, preset_name_for_env, resolve_config


def test_every_field_has_a_unit_comment():
    import inspect

    source = inspect.getsource(DQNConfig)
    for name in config_lib.FIELD_NAMES:
        line = next(text for text in source.splitlines() if text.strip().startswith(f"{name}:"))
        assert "#" in line, f"field {name} has no comment"


def test_presets_load_and_validate():
    for name in ("cartpole", "handbook"):
        cfg = resolve_config(preset=name)
        assert cfg.env_id == "CartPole-v1"
    chapter = resolve_config(preset="handbook")
    assert chapter.hidden_sizes == (24, 24) and chapter.gamma == 1.0 and chapter.batch_size == 32
    assert chapter.replay_capacity == 10_000 and chapter.target_update_period == 0 and chapter.loss == "mse"
    assert chapter.epsilon_schedule == "linear_episodes" and chapter.epsilon_decay == 100 and chapter.epsilon_end == 0.01
    assert chapter.terminal_reward == -10.0 and not chapter.double_dqn and chapter.learning_rate == 1e-3


def test_env_picks_its_preset_and_other_vector_envs_get_the_classic_control_one():
    assert preset_name_for_env("CartPole-v1") == "cartpole"
    assert preset_name_for_env("ALE/Breakout-v5") == "breakout"
    assert resolve_config(env_id="CartPole-v1") == resolve_config(preset="cartpole")
    assert preset_for_env("MountainCar-v0") == preset_for_env("LunarLander-v3") == "classic-control"
    assert preset_for_env("ALE/Pong-v5") == "breakout" and preset_for_env("CartPole-v1") == "cartpole"
    for env_id in ("Acrobot-v1", "MountainCar-v0"):
        cfg = resolve_config(env_id=env_id)
        assert cfg == resolve_config(preset="classic-control").replace(env_id=env_id)
        assert cfg.hidden_sizes == (256, 256) and cfg.layer_norm and cfg.n_steps == 3


def test_overrides_are_typed():
    cfg = resolve_config(env_id="CartPole-v1", overrides={"learning_rate": "3e-4", "hidden_sizes": "128,128", "dueling": "true", "batch_size": "32"})
    assert cfg.learning_rate == 3e-4 and cfg.hidden_sizes == (128, 128) and cfg.dueling is True and cfg.batch_size == 32


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"nonsense": "1"}, "unknown config field 'nonsense'"),
        ({"batch_size": "lots"}, "batch_size' expects an integer"),
        ({"batch_size": "3.5"}, "batch_size' expects an integer"),
        ({"double_dqn": "maybe"}, "double_dqn' expects true/false"),
        ({"learning_rate": "-0.1"}, "learning_rate must be > 0"),
        ({"learning_rate": "nan"}, "learning_rate must be a finite number"),
        ({"gamma": "1.5"}, "gamma must be in [0, 1]"),
        ({"batch_size": "100", "replay_capacity": "50"}, "larger than replay_capacity"),
        ({"network": "resnet"}, "network must be"),
    ],
)
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(UserError) as info:
        resolve_config(env_id="CartPole-v1", overrides=overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_toml_round_trip(tmp_path):
    cfg = resolve_config(preset="handbook").replace(seed=7, hidden_sizes=(8, 9))
    path = tmp_path / "c.toml"
    path.write_text(config_lib.to_toml(cfg))
    assert config_lib.from_dict(config_lib.load_toml(path)) == cfg


def test_parse_overrides_needs_equals():
    with pytest.raises(UserError, match="key=value"):
        config_lib.parse_overrides(["learning_rate"])


def test_config_is_checked_wherever_it_is_built():
    """From Python too: DQNConfig(...) and .replace(...) refuse what TOML and --set refuse."""
    cfg = DQNConfig(hidden_sizes=[32, 32], learning_rate=1)
    assert cfg.hidden_sizes == (32, 32) and isinstance(cfg.learning_rate, float)
    with pytest.raises(UserError, match="learning_rate must be > 0"):
        DQNConfig(learning_rate=-1.0)
    with pytest.raises(UserError, match="'batch_size' expects an integer"):
        DQNConfig(batch_size=1.5)
    with pytest.raises(UserError, match="batch_size must be >= 1"):
        cfg.replace(batch_size=0)
    with pytest.raises(UserError, match="batch_size .* is larger than replay_capacity"):
        resolve_config(env_id="CartPole-v1").replace(replay_capacity=10)
    with pytest.raises(UserError, match=r"n_steps_end must be in 1..n_steps=3, got 5"):
        DQNConfig(n_steps=3, n_steps_end=5, n_steps_decay=100)
    with pytest.raises(UserError, match="n_steps_decay must be >= 1 env step when n_steps_end is set"):
        DQNConfig(n_steps=10, n_steps_end=3)
