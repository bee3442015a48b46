"""The picture of one state: the game frame scaled up, and the heads-up panel beside it.

One drawing path serves the pygame window of `play.py`, the videos (agent/rollout/video.py)
and the screenshots: a game frame from `env.render()` (full resolution RGB, not
the 84x84 network input) is scaled up nearest-neighbour, and a panel with the
episode, step, score, action and the Q-value bars is drawn beside it with
pygame onto a Surface. `hud_content` says what the panel shows, as numbers
tests can compare with the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import pygame  # noqa: E402

from agent.rollout.episodes import StepView  # noqa: E402

PANEL_WIDTH = 280  # px; even, so video sizes stay even
MIN_HEIGHT = 320  # px; room for the HUD text under short frames
BACKGROUND = (24, 26, 32)
TEXT = (230, 230, 230)
DIM = (150, 155, 165)
BAR = (90, 110, 150)
CHOSEN = (255, 170, 40)


def default_scale(frame_shape: tuple[int, ...]) -> int:
    """Atari's 160x210 frames are tiny on a screen: 3x; CartPole's 600x400 stays native."""
    return 3 if frame_shape[0] < 300 else 1


@dataclass(frozen=True)
class HudBar:
    name: str
    value: float
    chosen: bool


@dataclass(frozen=True)
class HudContent:
    """Exactly what the heads-up panel shows; tests compare these numbers with the network."""

    lines: list[tuple[str, str]]  # (label, value)
    bars: list[HudBar]  # one per action, empty without Q-values


def hud_content(view: StepView, action_names: list[str], title: str = "") -> HudContent:
    """The text lines and the Q-value bars for one state."""
    if view.action is None:
        action = "episode over"
    else:
        action = action_names[view.action] + (" (random)" if view.explored else "")
    lines = [
        ("", title),
        ("episode", f"{view.episode} / {view.episodes}"),
        ("step", f"{view.step}"),
        ("score", f"{view.score:g}"),
        ("action", action),
    ]
    bars = []
    if view.q_values is not None:
        q = np.asarray(view.q_values, dtype=np.float64)
        chosen = view.action if view.action is not None else int(np.argmax(q))
        bars = [HudBar(action_names[a], float(q[a]), a == chosen) for a in range(len(q))]
    return HudContent(lines, bars)


_fonts: dict[int, pygame.font.Font] = {}
pygame.register_quit(_fonts.clear)  # gymnasium's classic envs call pygame.quit() on close; using a dead Font segfaults


def font(size: int) -> pygame.font.Font:
    """pygame's bundled font at `size` px, made once per size and again after a `pygame.quit()`."""
    if not pygame.font.get_init():
        _fonts.clear()
        pygame.font.init()
    if size not in _fonts:
        _fonts[size] = pygame.font.Font(None, size)  # pygame's bundled font: no system fonts needed
    return _fonts[size]


def draw_hud(surface: pygame.Surface, rect: pygame.Rect, content: HudContent) -> None:
    """Draw the panel: labelled lines, then one bar per action around a zero line."""
    surface.fill(BACKGROUND, rect)
    x, y = rect.x + 14, rect.y + 12
    width = rect.width - 28
    big, small = font(26), font(20)
    for label, value in content.lines:
        if not label:
            surface.blit(big.render(value, True, TEXT), (x, y))
            y += 30
            continue
        surface.blit(small.render(label, True, DIM), (x, y))
        surface.blit(big.render(value, True, TEXT), (x + 70, y - 3))
        y += 26
    if not content.bars:
        return
    # Q-values of one state are often close (45.75 vs 45.70): bars from zero would all look equal, so the
    # bars show each value minus their mean around a centre line, and the numbers give the values themselves.
    y += 8
    surface.blit(small.render("Q-values  (bars: Q - mean Q)", True, DIM), (x, y))
    y += 22
    values = np.array([b.value for b in content.bars])
    centred = values - values.mean()
    half = float(np.abs(centred).max()) or 1.0
    row = max(10, min(34, (rect.bottom - 34 - y) // len(content.bars)))  # the window's status line sits below
    bar_x, bar_w = x + 78, width - 78 - 64
    mid_x = bar_x + bar_w // 2
    top = y
    for bar, offset in zip(content.bars, centred):
        color = CHOSEN if bar.chosen else BAR
        bar_font = font(min(20, row + 4))
        surface.blit(bar_font.render(bar.name[:10], True, CHOSEN if bar.chosen else TEXT), (x, y + 2))
        end_x = mid_x + round(offset / half * (bar_w // 2))
        left, right = sorted((mid_x, end_x))
        pygame.draw.rect(surface, color, pygame.Rect(left, y + 2, max(2, right - left), max(4, row - 8)))
        surface.blit(bar_font.render(f"{bar.value:.2f}", True, color), (bar_x + bar_w + 6, y + 2))
        y += row
    pygame.draw.line(surface, DIM, (mid_x, top), (mid_x, y - 6))


def game_surface(frame: np.ndarray, scale: int) -> pygame.Surface:
    """The RGB frame as a Surface, scaled by an integer factor without smoothing (crisp pixels)."""
    surf = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
    if scale != 1:
        surf = pygame.transform.scale(surf, (surf.get_width() * scale, surf.get_height() * scale))
    return surf


def compose(view: StepView, action_names: list[str], *, scale: int, hud: bool = True, title: str = "") -> pygame.Surface:
    """The picture for one state: the scaled game, and the HUD panel to its right if `hud`."""
    game = game_surface(view.frame, scale)
    if not hud:
        return game
    width = game.get_width() + PANEL_WIDTH
    height = max(game.get_height(), MIN_HEIGHT)
    canvas = pygame.Surface((width, height))
    canvas.fill(BACKGROUND)
    canvas.blit(game, (0, (height - game.get_height()) // 2))
    draw_hud(canvas, pygame.Rect(game.get_width(), 0, PANEL_WIDTH, height), hud_content(view, action_names, title))
    return canvas


def surface_to_rgb(surface: pygame.Surface) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a Surface (pygame arrays are indexed x first)."""
    return np.ascontiguousarray(pygame.surfarray.array3d(surface).transpose(1, 0, 2))

