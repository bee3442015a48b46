#!/usr/bin/env python
"""Memory and sampling speed of the Atari frame replay (replay.FrameReplayBuffer).

Bytes come from the class's own layout function (`expected_nbytes`, which the
constructor also checks against free memory), so a 1M capacity can be
reported on a machine without 7 GB free. When it fits, the buffer is also
built and its `nbytes` compared (numpy's zeroed pages stay untouched, so this
costs no real memory). Sampling is timed on a smaller real buffer filled
with random frames in Breakout-like episodes.

With `--prioritized` the same is measured for the memory with priorities
(Schaul et al. 2016) beside the plain one: its bytes (the sum tree), `add`,
`sample_prioritized` and `update_priorities` on the filled buffer, and the
sum tree's own draw and update at `--capacity` leaves (the tree's depth, and
so its cost, grows with the capacity, not with the fill).

    python bench/replay_memory.py --capacity 1000000 [--fill 50000] [--calls 2000] [--prioritized] [--json]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click  # noqa: E402
import numpy as np  # noqa: E402

from replay import FrameReplayBuffer, ReplayBuffer, ReplayMemoryError  # noqa: E402
from replay.base import Priorities  # noqa: E402

FRAME = (84, 84)
STACK = 4
EPISODE_STEPS = 200  # about one Breakout life early in training


def fill(buf: FrameReplayBuffer, steps: int, seed: int = 0) -> None:
    """Add `steps` transitions made of random frames, as a training loop would."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (512, *FRAME, 1), dtype=np.uint8)  # distinct enough, cheap to make
    obs = np.repeat(pool[0], STACK, axis=-1)
    for t in range(steps):
        next_obs = np.concatenate([obs[..., 1:], pool[(t + 1) % len(pool)]], axis=-1)
        done = t % EPISODE_STEPS == EPISODE_STEPS - 1
        buf.add(obs, int(rng.integers(4)), float(rng.integers(2)), next_obs, done)
        obs = np.repeat(pool[(t * 7) % len(pool)], STACK, axis=-1) if done else next_obs


@click.command()
@click.option("--capacity", type=int, default=1_000_000, show_default=True, help="Frames the memory holds.")
@click.option("--fill", "fill_steps", type=int, default=50_000, show_default=True, help="Transitions in the timed buffer.")
@click.option("--calls", type=int, default=2_000, show_default=True, help="sample(32) calls timed.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--prioritized", is_flag=True, help="Also measure the memory with priorities (Schaul et al. 2016).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
def main(capacity: int, fill_steps: int, calls: int, batch_size: int, prioritized: bool, as_json: bool) -> None:
    total = FrameReplayBuffer.expected_nbytes(capacity, FRAME, STACK)
    stacked = ReplayBuffer.expected_nbytes(capacity, (*FRAME, STACK), np.uint8)
    print(f"capacity             {capacity:,} frames")
    print(f"bytes per transition {total / capacity:,.1f}  (one 84x84 frame is {FRAME[0] * FRAME[1]:,})")
    print(f"total                {total:,} bytes = {total / 2**30:.2f} GiB")
    print(f"obs+next_obs ring    {stacked:,} bytes = {stacked / 2**30:.2f} GiB ({stacked / total:.1f}x more)")

    allocated = None
    try:
        big = FrameReplayBuffer(capacity, FRAME, STACK)
        allocated = big.nbytes
        del big
        print(f"allocated            nbytes = {allocated:,} ({'equal' if allocated == total else 'DIFFERENT'})")
    except ReplayMemoryError as e:
        print(f"allocated            skipped: {e}")

    buf = FrameReplayBuffer(fill_steps + fill_steps // EPISODE_STEPS + 1, FRAME, STACK, seed=0)
    t0 = time.perf_counter()
    fill(buf, fill_steps)
    add_us = (time.perf_counter() - t0) / fill_steps * 1e6
    buf.sample(batch_size)  # warm-up
    t0 = time.perf_counter()
    for _ in range(calls):
        buf.sample(batch_size)
    sample_us = (time.perf_counter() - t0) / calls * 1e6
    print(f"add                  {add_us:,.1f} us per transition (incl. making the stacks), {len(buf):,} stored")
    print(f"sample({batch_size})           {sample_us:,.1f} us mean over {calls:,} calls")
    per = measure_prioritized(capacity, fill_steps, calls, batch_size, plain=(total, add_us, sample_us)) if prioritized else None

    if as_json:
        extra = {"prioritized": per} if per is not None else {}
        print(json.dumps({
            "capacity": capacity,
            "bytes_per_transition": total / capacity,
            "total_bytes": total,
            "allocated_nbytes": allocated,
            "stacked_ring_bytes": stacked,
            "sample_us": round(sample_us, 1),
            "batch_size": batch_size,
            "add_us": round(add_us, 1),
            "fill": len(buf),
            **extra,
        }))


def time_us(fn, calls: int) -> float:
    """Mean microseconds of `fn()` over `calls` calls, after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def measure_prioritized(capacity: int, fill_steps: int, calls: int, batch_size: int, plain: tuple[int, float, float]) -> dict:
    """The prioritized memory's bytes and timings, printed beside the plain memory's (`plain`: bytes, add_us, sample_us)."""
    plain_total, plain_add_us, plain_sample_us = plain
    total = FrameReplayBuffer.expected_nbytes(capacity, FRAME, STACK, prioritized=True)
    tree = Priorities.expected_nbytes(capacity)
    print(f"--- prioritized (sum tree of {tree:,} bytes: {tree / capacity:.1f} per transition)")
    print(f"bytes per transition {total / capacity:,.1f}  (plain {plain_total / capacity:,.1f})")
    allocated = None
    try:
        big = FrameReplayBuffer(capacity, FRAME, STACK, prioritized=True)
        allocated = big.nbytes
        del big
        print(f"allocated            nbytes = {allocated:,} ({'equal' if allocated == total else 'DIFFERENT'})")
    except ReplayMemoryError as e:
        print(f"allocated            skipped: {e}")

    buf = FrameReplayBuffer(fill_steps + fill_steps // EPISODE_STEPS + 1, FRAME, STACK, seed=0, prioritized=True)
    t0 = time.perf_counter()
    fill(buf, fill_steps)
    add_us = (time.perf_counter() - t0) / fill_steps * 1e6
    rng = np.random.default_rng(1)
    drawn = buf.sample_prioritized(1, batch_size, beta=0.4)
    sample_us = time_us(lambda: buf.sample_prioritized(1, batch_size, beta=0.4), calls)
    errors = rng.exponential(size=(1, batch_size))
    update_us = time_us(lambda: buf.update_priorities(drawn.indices, errors), calls)
    print(f"add                  {add_us:,.1f} us per transition (plain {plain_add_us:,.1f})")
    print(f"sample_prioritized   {sample_us:,.1f} us per batch of {batch_size} (plain sample {plain_sample_us:,.1f})")
    print(f"update_priorities    {update_us:,.1f} us per batch of {batch_size}")

    # The tree alone at the full capacity: random priorities on every leaf.
    full = Priorities(capacity)
    leaves = full.tree.nodes[full.tree.leaf_count:full.tree.leaf_count + capacity]
    leaves[:] = rng.exponential(size=capacity)
    full.tree.rebuild()
    slots, _ = full.sample(rng, 1, batch_size, 0.4, capacity)
    tree_sample_us = time_us(lambda: full.sample(rng, 1, batch_size, 0.4, capacity), calls)
    tree_update_us = time_us(lambda: full.update(slots, errors), calls)
    print(f"tree at {capacity:,} leaves (depth {full.tree.depth}): draw {tree_sample_us:,.1f} us, update {tree_update_us:,.1f} us "
          f"per batch of {batch_size}")
    return {
        "bytes_per_transition": total / capacity,
        "total_bytes": total,
        "tree_bytes": tree,
        "allocated_nbytes": allocated,
        "add_us": round(add_us, 1),
        "sample_us": round(sample_us, 1),
        "update_priorities_us": round(update_us, 1),
        "tree_depth": full.tree.depth,
        "tree_sample_us": round(tree_sample_us, 1),
        "tree_update_us": round(tree_update_us, 1),
        "fill": len(buf),
    }


if __name__ == "__main__":
    main()
