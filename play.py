#!/usr/bin/env python
"""Watch an agent play in a pygame window, record videos, or play yourself.

    python play.py RUN_DIR                       watch the trained agent of a run
    python play.py --pretrained cartpole         watch a shipped trained agent, no training needed
    python play.py RUN_DIR --record out.mp4      ... and record it (HUD burned in)
    python play.py model.tflite                  a model exported by `python -m agent.export` (.tflite or .onnx), without TensorFlow
    python play.py RUN_DIR --headless --record-dir videos/   one mp4 per episode, no window
    python play.py --env ALE/Breakout-v5 --agent random
    python play.py --env CartPole-v1 --human     arrows; --env Breakout --human: arrows + space

Keys: space (p while playing yourself) pause, `.` one step while paused,
`+`/`-` speed, `r` start/stop recording, `s` screenshot, `q`/Esc quit.

This file is the command line only: its options become an
`agent.viewer.ViewOptions`, and `agent.viewer.play` does the rest.
"""

from __future__ import annotations

import click

from common.errors import cli_errors
from agent.export.pretrained import available


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--pretrained", default=None, metavar="NAME", help=f"Watch an agent that ships with tfdqn instead of a RUN_DIR: {', '.join(available())}.")
@click.option("--env", "env_id", default=None, help="Env id (or alias such as Breakout) to play without a run directory.")
@click.option("--agent", type=click.Choice(["dqn", "random"]), default=None, help="Who plays: the run's network (dqn) or random actions.  [default: dqn with RUN_DIR]")
@click.option("--best", is_flag=True, help="Play the run's best evaluated network (best_model.keras) instead of its final one.")
@click.option("--human", is_flag=True, help="Play yourself with the keyboard (arrows; space fires on Atari).")
@click.option("--episodes", type=click.IntRange(min=1), default=3, show_default=True, help="Episodes to play.")
@click.option("--fps", type=click.FloatRange(min=0.1), default=None, help="Frames (env steps) per second.  [default: 50 CartPole, 30 Atari; 20/15 when playing yourself]")
@click.option("--seed", type=int, default=0, show_default=True, help="Episode i starts from seed SEED+i.")
@click.option("--epsilon", type=click.FloatRange(0.0, 1.0), default=None, help="Probability of a random action.  [default: 0; 0.05 on Atari]")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cut each episode after this many env steps.")
@click.option("--scale", type=click.IntRange(1, 8), default=None, help="Integer upscaling of the game frame.  [default: 3 on Atari, 1 otherwise]")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), default=None, help="Record all episodes to this mp4.")
@click.option("--record-dir", type=click.Path(file_okay=False), default=None, help="Record one mp4 per episode into this folder.")
@click.option("--no-hud", is_flag=True, help="Record the game frame only, without the heads-up panel.")
@click.option("--headless", is_flag=True, help="No window (SDL dummy video driver); for recording on servers.")
@click.option("--save-demos", type=click.Path(dir_okay=False), default=None, help="Save the transitions played to this .npz (for pretraining).")
@click.option("--screenshot-dir", type=click.Path(file_okay=False), default=".", show_default=True, help="Where `s` saves PNG screenshots.")
@cli_errors()
def main(**options) -> None:
    """Watch a trained DQN agent (RUN_DIR, or a .tflite/.onnx file from python -m agent.export), a random agent, or play yourself."""
    from common import tfquiet

    tfquiet.set_environment()  # before anything loads numpy
    from agent.export.runtimes import file_format

    run = options["run_dir"]
    options["model"] = run if run is not None and file_format(run) else None
    if options["model"] is not None:
        options["run_dir"] = None  # an exported model: LiteRT or ONNX Runtime plays it, TensorFlow is never imported
    elif not (options["human"] or options["agent"] == "random"):  # no network plays: no TensorFlow, the window opens in a second
        tfquiet.setup()
    from agent.viewer.window import ViewOptions, play

    scores, stopped = play(ViewOptions(**options))
    print_scores(scores, stopped)


def print_scores(scores: list[float], stopped: float | None) -> None:
    for i, score in enumerate(scores, 1):
        click.echo(f"episode {i}: {score:g}")
    if stopped is not None:
        click.echo(f"episode {len(scores) + 1}: {stopped:g} (stopped early, not counted)")
    if scores:
        click.echo(f"mean {sum(scores) / len(scores):.2f} over {len(scores)} episode{'s' * (len(scores) != 1)}")


if __name__ == "__main__":
    main()
