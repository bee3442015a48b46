#!/usr/bin/env python
"""Saving and restoring the Atari frame replay with a checkpoint (its part in agent/run/run_state.py).

A Breakout-sized `FrameReplayBuffer` (84x84 frames) is filled with random
frames, then timed through the same functions a checkpoint uses:

    save      the replay part's save_state: one .npy per array, streamed from the ring, fsynced
    hash      sha256 of every file, as the manifest records (and a resume checks)
    restore   load_state into a fresh buffer (memory-mapped, checked, copied into the ring)

Memory: the peak resident set (VmHWM, reset through /proc/self/clear_refs)
above the resident set before each phase, split into anonymous memory (what
a copy of the arrays would cost) and file-backed pages (the memory-mapped
files while restoring: page cache the kernel can drop). tracemalloc counts
the Python/numpy allocations made while saving.

    python bench/replay_persist.py [--capacity 100000] [--dir /tmp] [--json]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click  # noqa: E402
import numpy as np  # noqa: E402

from agent.run.checkpoints import sha256_file  # noqa: E402
from agent.run.run_state import StateDictPart  # noqa: E402
from replay import FrameReplayBuffer  # noqa: E402

FRAME = (84, 84)
STACK = 4
EPISODE_STEPS = 200


def status_kib(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status in KiB (VmRSS, VmHWM, RssAnon, RssFile)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in keys:
                out[name] = int(rest.split()[0])
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measured(fn):
    """(seconds, peak extra MiB total, extra anonymous MiB after, result) of fn()."""
    reset_peak()
    before = status_kib("VmRSS", "RssAnon")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    after = status_kib("VmHWM", "RssAnon")
    return seconds, (after["VmHWM"] - before["VmRSS"]) / 1024, (after["RssAnon"] - before["RssAnon"]) / 1024, result


def filled(capacity: int, seed: int = 0) -> FrameReplayBuffer:
    """A full ring of random frames in 200-step episodes (written directly: filling via add() is not what is timed)."""
    buf = FrameReplayBuffer(capacity, FRAME, STACK, seed=seed)
    rng = np.random.default_rng(seed)
    for start in range(0, capacity, 10_000):
        end = min(start + 10_000, capacity)
        buf.frames[start:end] = rng.integers(0, 256, (end - start, *FRAME), dtype=np.uint8)
    idx = np.arange(capacity)
    buf.actions[:] = rng.integers(0, 4, capacity)
    buf.rewards[:] = rng.integers(0, 2, capacity)
    ends = idx % EPISODE_STEPS == EPISODE_STEPS - 1
    buf.terminated[:] = ends
    buf.back[:] = np.minimum(idx % EPISODE_STEPS, STACK - 1)
    buf.has_next[:] = ~ends
    buf.pos, buf.size, buf.num_links, buf.open = 0, capacity, int((~ends).sum()), True
    return buf


@click.command()
@click.option("--capacity", type=int, default=100_000, show_default=True, help="Frames (transitions) in the memory.")
@click.option("--dir", "base", type=click.Path(file_okay=False), default=None, help="Where to write (default: the system temp dir).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
def main(capacity: int, base: str | None, as_json: bool) -> None:
    buf = filled(capacity)
    work = Path(tempfile.mkdtemp(prefix="replay-persist-", dir=base))
    try:
        target = work / "replay"
        tracemalloc.start()
        save_s, save_peak, save_anon, _ = measured(lambda: StateDictPart(buf, "replay memory").save_state(target))
        traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        files = sorted(target.glob("*.npy"))
        nbytes = sum(f.stat().st_size for f in files)
        hash_s, _, _, _ = measured(lambda: [sha256_file(f) for f in files])
        fresh = FrameReplayBuffer(capacity, FRAME, STACK, seed=1)
        fresh.frames[:] = 0  # touch the fresh ring's pages first: only the restore itself is measured
        restore_s, restore_peak, restore_anon, _ = measured(lambda: StateDictPart(fresh, "replay memory").load_state(target, "bench"))
        same = all(np.array_equal(getattr(buf, k), getattr(fresh, k)) for k in ("frames", "actions", "rewards", "terminated", "back", "has_next"))
        same = same and (buf.pos, buf.size, buf.num_links, buf.open) == (fresh.pos, fresh.size, fresh.num_links, fresh.open)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = nbytes / 2**20
    print(f"frame replay         {capacity:,} transitions, {buf.nbytes / 2**20:,.1f} MiB in memory, {len(files)} files, {mib:,.1f} MiB on disk")
    print(f"save                 {save_s:.2f} s ({mib / save_s:,.0f} MiB/s, fsync included)")
    print(f"sha256 for manifest  {hash_s:.2f} s ({mib / hash_s:,.0f} MiB/s)")
    print(f"restore              {restore_s:.2f} s ({mib / restore_s:,.0f} MiB/s)")
    print(f"peak extra RSS       save {save_peak:,.1f} MiB (anonymous +{save_anon:,.1f} MiB, tracemalloc peak {traced_peak:,.1f} MiB)")
    print(f"                     restore {restore_peak:,.1f} MiB (anonymous +{restore_anon:,.1f} MiB; the rest is mapped file pages)")
    print(f"identical after load {same}")
    if as_json:
        print(json.dumps({
            "capacity": capacity, "replay_mib": round(buf.nbytes / 2**20, 1), "disk_mib": round(mib, 1),
            "save_s": round(save_s, 3), "sha256_s": round(hash_s, 3), "restore_s": round(restore_s, 3),
            "save_peak_extra_mib": round(save_peak, 1), "save_anon_extra_mib": round(save_anon, 1), "save_tracemalloc_peak_mib": round(traced_peak, 1),
            "restore_peak_extra_mib": round(restore_peak, 1), "restore_anon_extra_mib": round(restore_anon, 1), "identical": bool(same),
        }))


if __name__ == "__main__":
    main()
