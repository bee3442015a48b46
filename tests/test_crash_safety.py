"""Crash safety of sealed files (issue 35, item 5): SIGKILL inside atomic writes and checkpoint sealing, then resume.

A child process trains (or resumes) a tiny CartPole run through train.py, wrapped in a small hook (`HOOK`, given
with `python -c`; no sitecustomize) that announces every write point under the run directory on stderr: before
and after each `os.fsync`, `os.rename`/`os.replace` and `os.unlink`/`os.rmdir` there, each point named by its kind
("seal" is the rename of `.tmp-step-*` to `step-*`, "prune" the rename of an old checkpoint to `.tmp-delete-*`,
"atomic-replace" the rename at the end of `common.files.atomic_path`, ...). The parent (this pytest process, one
for every trial) kills the child with SIGKILL in one of three ways, chosen by a seeded generator:

    point   the child stops itself (SIGSTOP) at the N-th point of a chosen kind, the parent then kills it: the kill
            lands exactly there (e.g. after the manifest is written but before the seal, between model.keras and meta.json)
    tmp     the parent polls the run directory and kills as soon as the N-th temporary entry (`.tmp-*`, `.X.tmp*`) shows
    random  a uniform delay (0-3.5 s) after the child has loaded TensorFlow (it then builds, trains and saves)

After each kill, everything sealed on disk must read: every complete checkpoint verifies against its manifest,
model.keras and best_model.keras load (when present: a kill before the first save leaves none), config.toml,
meta.json and eval.json parse. Then `python train.py --resume RUN --steps M` must either succeed (the newest
checkpoint then at M, model.keras loadable, no `.tmp-*` left) or, only when no complete checkpoint exists, refuse
with exactly one `error:` line and exit 2; its advice (start over with --force) is then followed and must work.
In the slow tier a kill is sometimes followed by a second one early in the resume (while it cleans up after the
first), before the check. Seed: CRASH_SEED (default 13); failures name the trial, the kill and what was on disk.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.run.checkpoints import list_checkpoints, verify
from agent.run.run_dir import RunDirectory
from common.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("CRASH_SEED", "13"))
EVERY = 100  # env steps between checkpoints (and evaluations)
TRAIN_ARGS = ["--env", "CartPole-v1", "--checkpoint-every", str(EVERY), "--eval-every", str(EVERY), "--eval-episodes", "1",
              "--set", "learning_starts=100", "--set", "replay_capacity=2000", "--set", "final_eval_episodes=1",
              "--set", "jit_compile=false", "--no-progress"]
FRESH_STEPS, RESUME_STEPS, CHECK_STEPS = 500, 400, 20  # a fresh victim trains 500 steps, a resumed one 400 more; the check 20
# (when, kind, lower bound of its points per checkpoint the victim writes): where a "point" kill may land
POINTS = [("before", "ckpt-fsync", 30), ("before", "manifest", 1), ("after", "manifest", 1), ("before", "seal", 1),
          ("after", "seal", 1), ("after", "ckpt-root-fsync", 1), ("before", "prune", 0), ("after", "prune", 0),
          ("before", "prune-unlink", 0), ("before", "atomic-fsync", 2), ("before", "atomic-replace", 2), ("after", "atomic-replace", 2)]
PRUNES = 2  # a victim session always prunes at least twice (keep 3; 4-5 new checkpoints on top of at least one)
TIMEOUT = 240.0

HOOK = r"""
import os, runpy, shutil, signal, sys  # shutil before the wrappers: it picks its fd-based rmtree by os's own functions
RUN = os.path.realpath(os.environ["CRASH_RUN_DIR"])
STOP = os.environ.get("CRASH_STOP", "")  # "before:seal:2": stop at the 2nd such point; "any:5": at the 5th point of all
seen = {}
def where(path, dir_fd=None):
    if isinstance(path, int):
        path = os.readlink(f"/proc/self/fd/{path}")
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    path = os.path.realpath(path)
    return os.path.relpath(path, RUN) if path.startswith(RUN + os.sep) else None
def kind(func, rel):
    parts = rel.split(os.sep)
    ckpt = parts[0] == "checkpoints" and len(parts) > 1
    if func in ("rename", "replace"):
        if ckpt and len(parts) == 2 and parts[1].startswith((".tmp-step-", "step-")):
            return "seal" if parts[1].startswith(".tmp-step-") else "prune"
        return "atomic-replace"
    if func == "fsync":
        if rel == "checkpoints":
            return "ckpt-root-fsync"
        if ckpt and parts[1].startswith(".tmp-step-"):
            return "manifest" if parts[-1] == "manifest.json" else "ckpt-fsync"
        return "atomic-fsync" if parts[-1].startswith(".") and ".tmp" in parts[-1] else "other-fsync"
    return "prune-unlink" if ckpt and parts[1].startswith(".tmp-delete-") else "other-unlink"
def point(when, k, label):
    n = seen[when, k] = seen.get((when, k), 0) + 1
    total = seen["any"] = seen.get("any", 0) + 1
    sys.stderr.write(f"@crash {when}:{k}:{n} #{total} {label}\n")
    sys.stderr.flush()
    if STOP in (f"{when}:{k}:{n}", f"any:{total}"):
        os.kill(os.getpid(), signal.SIGSTOP)
def wrap(func):
    real = getattr(os, func)
    def hooked(*args, **kwargs):
        try:
            rel = where(args[0], kwargs.get("dir_fd") or kwargs.get("src_dir_fd"))
        except (OSError, TypeError, ValueError):
            rel = None
        if rel is None:
            return real(*args, **kwargs)
        k = kind(func, rel)
        label = f"{func} {rel}" + (f" -> {where(args[1])}" if func in ("rename", "replace") else "")
        point("before", k, label)
        result = real(*args, **kwargs)
        point("after", k, label)
        return result
    setattr(os, func, hooked)
for func in ("fsync", "rename", "replace", "unlink", "rmdir"):
    wrap(func)
runpy.run_path("train.py", run_name="__main__")
"""


def child_env(**extra) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra}


def newest(run: Path) -> int:
    found = list_checkpoints(run / "checkpoints")
    return found[-1][0] if found else 0


def stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return False


def temp_entries(run: Path) -> set[str]:
    """The temporary names under the run directory: checkpoints being written or pruned, atomic_path's files."""
    found = set()
    for directory in (run, run / "checkpoints", run / "tb"):
        try:
            with os.scandir(directory) as entries:
                found.update(f"{directory.name}/{e.name}" for e in entries if e.name.startswith(".") and ".tmp" in e.name)
        except OSError:
            pass
    return found


def on_disk(run: Path) -> str:
    """A one-line picture of the run directory for failure messages."""
    if not run.is_dir():
        return "no run directory"
    items = []
    for path in sorted(run.iterdir()):
        if path.name == "checkpoints" and path.is_dir():
            items += [f"checkpoints/{c.name}{' (sealed)' if (c / 'manifest.json').is_file() else ''}" for c in sorted(path.iterdir())]
        elif path.is_dir():
            items.append(f"{path.name}/ ({sum(1 for _ in path.iterdir())} entries)")
        else:
            items.append(f"{path.name} ({path.stat().st_size} B)")
    try:
        items.append(f"meta.json names {json.loads((run / 'meta.json').read_text()).get('checkpoint')}")
    except (OSError, ValueError):
        pass
    return ", ".join(items)


def sealed_problems(run: Path) -> list[str]:
    """What a crash must never leave: a complete checkpoint or a file written whole that does not read."""
    problems = []
    ckpts = run / "checkpoints"
    for path in sorted(ckpts.glob("step-*")) if ckpts.is_dir() else []:
        if not (path / "manifest.json").is_file():
            problems.append(f"{path.name} has no manifest (a step-* directory must exist only once sealed)")
    for _, path in list_checkpoints(ckpts):
        try:
            verify(path)
        except UserError as e:
            problems.append(f"{path.name} does not verify: {e}")
    directory = RunDirectory(run)
    for which in ("final", "best"):
        if directory.has_model(which):
            try:
                directory.load_model(which)
            except UserError as e:
                problems.append(str(e))
    for name, read in (("config.toml", directory.load_config), ("meta.json", directory.load_meta),
                       ("eval.json", lambda: json.loads((run / "eval.json").read_text()))):
        if (run / name).is_file():
            try:
                read()
            except (UserError, ValueError) as e:
                problems.append(f"{name}: {e}")
    return problems


class Trials:
    """Kills, checks and resumes in `tmp`, one run directory after another; failures are collected, not raised at once."""

    def __init__(self, tmp: Path, seed: int, modes: tuple[str, ...], recovery_kills: float, span: int | None = None):
        self.tmp, self.rng, self.modes, self.recovery_kills = tmp, random.Random(seed), modes, recovery_kills
        self.span = span  # point kills land within the victim's first `span` checkpoints (None: anywhere in its session)
        self.run: Path | None = None
        self.failures: list[str] = []
        self.log: list[str] = []  # each trial: where its kills landed and what the check found
        self.kills: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}
        self.trial = self.killed = 0  # trials, and those whose victim was killed (not finished first)
        self.children: list[tuple[str, float, float]] = []  # (what, wall seconds, CPU seconds) of every child process

    # ----- one child, killed

    def launch(self, args: list[str], name: str, stop: str = "") -> tuple[subprocess.Popen, Path, float]:
        err = self.tmp / f"{name}.err"
        with open(self.tmp / f"{name}.out", "wb") as out, open(err, "wb") as errf:
            proc = subprocess.Popen([sys.executable, "-c", HOOK, *args], cwd=ROOT, stdout=out, stderr=errf,
                                    env=child_env(CRASH_RUN_DIR=str(self.run), CRASH_STOP=stop))
        return proc, err, time.monotonic()

    def done(self, what: str, t0: float, cpu0: float) -> None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children.append((what, time.monotonic() - t0, usage.ru_utime + usage.ru_stime - cpu0))

    @staticmethod
    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def victim(self, fresh: bool, mode: str, name: str, stop: str = "") -> str:
        """Start a victim on `self.run` and kill it as `mode` says; returns what happened (for messages)."""
        run = self.run
        if fresh:
            args, sessions = [*TRAIN_ARGS, "--run-dir", str(run), "--steps", str(FRESH_STEPS)], FRESH_STEPS // EVERY
        else:
            args, sessions = ["--resume", str(run), "--steps", str(newest(run) + RESUME_STEPS), "--no-progress"], RESUME_STEPS // EVERY
        sessions = min(sessions, self.span or sessions)
        if mode == "point" and not stop:
            when, kind, per = self.rng.choice(POINTS)
            stop = f"{when}:{kind}:{self.rng.randint(1, max(per * sessions, 1) if per else PRUNES * (1 if kind == 'prune' else 10))}"
        n_temp, delay = self.rng.randint(1, 6), self.rng.uniform(0.0, 3.5)
        cpu0, before = self.cpu(), temp_entries(run)  # temporaries an earlier kill left count for nothing
        proc, err, t0 = self.launch(args, name, stop if mode == "point" else "")
        seen: set[str] = set()
        detail = {"point": f"stop at {stop}", "tmp": f"at new temporary entry #{n_temp}", "random": f"{delay:.3f} s after TensorFlow loaded"}[mode]
        anchor = None
        while proc.poll() is None:
            now = time.monotonic()
            if now - t0 > TIMEOUT:
                proc.kill()
                proc.wait()
                return f"{name} ({detail}): timed out after {TIMEOUT:.0f} s"
            if mode == "point":
                hit = stopped(proc.pid)
            elif mode == "tmp":
                seen |= temp_entries(run) - before
                hit = len(seen) >= n_temp
            else:
                anchor = anchor or (now if b"\ndevice: " in (self.tmp / f"{name}.out").read_bytes() else None)  # TensorFlow is loaded
                hit = anchor is not None and now - anchor >= delay
            if hit:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                self.done(f"{name} ({mode})", t0, cpu0)
                self.kills[mode] = self.kills.get(mode, 0) + 1
                return f"{name} killed ({detail}) at {now - t0:.3f} s; last write point: {self.last_point(err)}"
            time.sleep(0.002 if mode == "point" else 0.0005)
        self.done(f"{name} (not killed)", t0, cpu0)
        text = err.read_text(errors="replace")
        own = "\n".join(line for line in text.splitlines() if not line.startswith("@crash"))
        if proc.returncode != 0 or "Traceback" in own:
            self.fail(f"{name} ({detail}) exited {proc.returncode} before any kill: {own[-2000:]}")
        return f"{name} finished before the kill ({detail})"

    @staticmethod
    def last_point(err: Path) -> str:
        points = [line for line in err.read_text(errors="replace").splitlines() if line.startswith("@crash")]
        return points[-1][len("@crash "):] if points else "none (nothing written yet)"

    # ----- the checks after a kill

    def fail(self, what: str) -> None:
        self.failures.append(f"[seed {SEED}, trial {self.trial}, run {self.run.name if self.run else None}] {what}; on disk: "
                             f"{on_disk(self.run) if self.run else '-'}")

    def check_disk(self, what: str) -> bool:
        problems = sealed_problems(self.run)
        if problems:
            self.fail(f"after {what}: {'; '.join(problems)}")
        return not problems

    def train_py(self, args: list[str]) -> subprocess.CompletedProcess:
        t0, cpu0 = time.monotonic(), self.cpu()
        try:
            result = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as e:
            result = subprocess.CompletedProcess(e.cmd, -9, "", f"(timed out after {TIMEOUT:.0f} s) {e.stderr or ''}")
        self.done("resume" if args[0] == "--resume" else "restart", t0, cpu0)
        return result

    def check_resume(self, what: str) -> bool:
        """`train.py --resume` after the kill: it succeeds, or (no complete checkpoint) refuses in one line, whose advice works."""
        run, sealed = self.run, newest(self.run)
        before = on_disk(run)
        result = self.train_py(["--resume", str(run), "--steps", str(sealed + CHECK_STEPS), "--no-progress"])
        lines = result.stderr.strip().splitlines()
        if result.returncode == 0 and "Traceback" not in result.stderr and not any(line.startswith("error:") for line in lines):
            problems = sealed_problems(run)
            if newest(run) != sealed + CHECK_STEPS or not RunDirectory(run).has_model():
                problems.append(f"the resume exited 0 but the newest checkpoint is at {newest(run)} (wanted {sealed + CHECK_STEPS}) "
                                f"or model.keras is missing")
            if list((run / "checkpoints").glob(".tmp-*")):
                problems.append("a .tmp-* entry is left in checkpoints/ after a complete resume")
            if problems:
                self.fail(f"after {what}, the resume succeeded but: {'; '.join(problems)} (before it: {before})")
                return False
            self.outcomes["resumed"] = self.outcomes.get("resumed", 0) + 1
            return True
        if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error:") or "Traceback" in result.stderr:
            self.fail(f"after {what}, the resume exited {result.returncode} with stderr {result.stderr[-3000:]!r} (before it: {before})")
            return False
        if sealed:
            self.fail(f"after {what}, the resume refused although {sealed} is sealed: {lines[0]} (before it: {before})")
            return False
        self.outcomes["refused, then restarted"] = self.outcomes.get("refused, then restarted", 0) + 1
        # the advice: start over with --force (the same command as the first time, and --force)
        restart = self.train_py([*TRAIN_ARGS, "--run-dir", str(run), "--steps", str(EVERY), "--force"])
        if restart.returncode != 0 or "Traceback" in restart.stderr or not self.check_disk("the advised restart"):
            self.fail(f"after {what}, the refusal {lines[0]!r} was followed (--force) and exited {restart.returncode}: {restart.stderr[-2000:]!r}")
            return False
        return True

    # ----- trials

    def one(self, fresh: bool, mode: str | None = None) -> None:
        self.trial += 1
        if fresh or self.run is None:
            fresh, self.run = True, self.tmp / f"run-{self.trial:03d}"
        mode = mode or self.rng.choice(self.modes)
        what = self.victim(fresh, mode, f"trial-{self.trial:03d}")
        self.killed += " killed (" in what
        if "timed out" in what:
            self.fail(what)
        ok = "timed out" not in what and self.check_disk(what)
        if ok and self.rng.random() < self.recovery_kills and " killed (" in what and self.run.joinpath("config.toml").is_file() and newest(self.run):
            # killed again while the resume cleans up after the first kill (removes .tmp-*, trims the logs, rewrites model.keras)
            what += "; then " + self.victim(False, "point", f"trial-{self.trial:03d}-recovery", stop=f"any:{self.rng.randint(1, 12)}")
            ok = self.check_disk(what)
        if not (ok and self.check_resume(what)):
            self.run = None  # the next trial starts a new run
        self.log.append(f"trial {self.trial}: {what} -> {'ok' if self.run else 'FAILED'}")

    def summary(self) -> str:
        kinds: dict[str, list[tuple[float, float]]] = {}
        for what, wall, cpu in self.children:
            kinds.setdefault(what.split(" ")[-1].strip("()") if what.startswith("trial") else what, []).append((wall, cpu))
        times = ", ".join(f"{len(v)} {k} {sum(w for w, _ in v) / len(v):.1f}/{sum(c for _, c in v) / len(v):.1f} s" for k, v in sorted(kinds.items()))
        litter = sorted(p.name for run in self.tmp.glob("run-*") for d in (run, run / "tb") if d.is_dir()
                        for p in d.iterdir() if p.name.startswith(".") and ".tmp" in p.name)
        return (f"seed {SEED}: {self.trial} trials ({self.killed} victims killed, the rest finished first), kills by mode {self.kills}, "
                f"checks {self.outcomes}, child processes (mean wall/CPU): {times}; total {sum(c[1] for c in self.children):.0f} s wall, "
                f"{sum(c[2] for c in self.children):.0f} s CPU; atomic_path temporaries left behind by kills: {len(litter)} {litter[:4]}; "
                f"{len(self.failures)} failures")


def run_trials(tmp: Path, count: int, modes: tuple[str, ...], fresh_share: float, recovery_kills: float, span: int | None = None) -> Trials:
    trials = Trials(tmp, SEED, modes, recovery_kills, span)
    for i in range(count):
        trials.one(i == 0 or trials.rng.random() < fresh_share)
    print("\n".join(trials.log), file=sys.stderr)
    print(trials.summary(), file=sys.stderr)
    return trials


def test_sigkill_inside_sealing_then_resume_fast(tmp_path):
    """Fast tier: two seeded point kills (a fresh run, then its resume), each checked and resumed."""
    t0 = time.monotonic()
    trials = run_trials(tmp_path, 2, modes=("point",), fresh_share=0.0, recovery_kills=0.0, span=2)
    assert not trials.failures, "\n".join(trials.failures)
    assert trials.killed == 2, trials.summary()
    print(f"{time.monotonic() - t0:.1f} s", file=sys.stderr)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_many(tmp_path):
    """Slow tier: 56 trials (point, temp-file and random-time kills, some followed by a kill during recovery)."""
    trials = run_trials(tmp_path, 56, modes=("point", "point", "point", "tmp", "random"), fresh_share=0.25, recovery_kills=0.2)
    assert not trials.failures, f"{trials.summary()}\n" + "\n".join(trials.failures)
    assert trials.killed >= 50, trials.summary()
