"""Slow learning checks (`make test-all`, or `pytest -m slow`): the default preset solves CartPole on several seeds."""

import pytest

from agent.core.presets import resolve_config
from agent.run.trainer import train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_cartpole_preset_solves(tmp_path, seed):
    """bench/solve.py's protocol: first greedy 10-episode mean >= 475 within 100,000 env steps."""
    cfg = resolve_config(preset="cartpole").replace(
        seed=seed, total_steps=100_000, eval_every=1_000, eval_episodes=10, stop_on_solve=True, solve_return=475.0, checkpoint_every=0
    )
    result = train(cfg, tmp_path, progress=False)
    assert result.solved_at is not None, [e["mean"] for e in result.evaluations]
