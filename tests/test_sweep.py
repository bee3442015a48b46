"""agent.sweep: seeds x settings as Ray Tune trials, each a run directory; bad input refused before Ray starts; faults (slow).

The fast tier runs one real sweep (2 CartPole seeds, 600 env steps each) through
the command line, and the bad-input checks, which need no Ray. The slow tier
(`make test-all`) removes a worker node of a 3-node Ray cluster mid-sweep, and
kills / interrupts the sweep command and reruns it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.run.run_dir import RunDirectory
from agent.plot import stats
from agent.sweep import cli as sweep_cli
from agent.sweep.cli import build_spec
from agent.sweep.cluster import ADDRESS_TIMEOUT_S, check_address
from agent.sweep.plan import SweepSpec, parse_grid, plan, settings, split_values, trial_name
from agent.sweep.state import EXPERIMENT, prepare_out
from common.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install '.[cluster]')")

# A tiny but real protocol: learning starts at 200 env steps, an evaluation and a checkpoint every 300.
TINY = ["--set", "eval_every=300", "--set", "checkpoint_every=300", "--set", "learning_starts=200", "--set", "eval_episodes=3",
        "--set", "final_eval_episodes=5", "--set", "jit_compile=false"]


def sweep_cmd(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent.sweep", "--out", str(out), *args]


def run_sweep_cli(out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(out, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def eval_rows(run_dir: Path) -> list[dict]:
    with (run_dir / "progress.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- fast: one real sweep


@needs_ray
def test_sweep_runs_every_seed_as_a_run_directory_and_summarizes(tmp_path):
    out = tmp_path / "sweep"
    proc = run_sweep_cli(out, "--env", "CartPole-v1", "--seeds", "2", "--steps", "600", *TINY, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    finals = {}
    for seed in (0, 1):
        run_dir = out / f"CartPole-v1-seed{seed}"
        for name in ("config.toml", "meta.json", "model.keras", "progress.csv", "eval.json", "checkpoints"):
            assert (run_dir / name).exists(), (seed, name)
        final = json.loads((run_dir / "eval.json").read_text())
        assert final["env_step"] == 600 and len(final["returns"]) == 5
        finals[seed] = final["mean"]
        cfg = RunDirectory(run_dir).load_config()
        assert (cfg.seed, cfg.total_steps, cfg.eval_every) == (seed, 600, 300)
        assert [int(r["env_step"]) for r in eval_rows(run_dir) if r["eval_return_mean"]] == [300, 600]
    with (out / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    row = rows[0]
    assert (row["env_id"], row["setting"], row["seeds"], row["finished"]) == ("CartPole-v1", "base", "2", "2")
    assert [float(row["final_seed0"]), float(row["final_seed1"])] == pytest.approx([finals[0], finals[1]], abs=0.01)
    expected = stats.summarize([finals[0], finals[1]])
    assert float(row["iqm"]) == pytest.approx(expected.iqm, abs=0.01)
    assert (float(row["iqm_ci_low"]), float(row["iqm_ci_high"])) == pytest.approx(expected.iqm_ci, abs=0.01)
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "sweep.json").is_file()
    assert EXPERIMENT in os.listdir(out)  # Tune's experiment, for a restore
    table = proc.stdout[proc.stdout.index("IQM (95% CI)") - 200:]
    assert "CartPole-v1" in table and f"{expected.iqm:.1f}" in table
    assert "eval     CartPole-v1-seed0: env step 300" in proc.stdout


# --------------------------------------------------------------------------- fast: bad input, one line, exit 2, nothing started


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the command got as far as starting Ray."""

    def refuse(*a, **k):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(sweep_cli, "start_ray", refuse)
    monkeypatch.setattr(sweep_cli, "run_sweep", refuse)


def cli(*args):
    result = CliRunner().invoke(sweep_cli.main, list(args))
    return result.exit_code, result.output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--set", "lerning_rate=1e-3"], "unknown config field 'lerning_rate'"),
    (["--grid", "lerning_rate=1e-3,3e-4"], "unknown config field 'lerning_rate'"),
    (["--grid", "learning_rate=1e-3,-1"], "learning_rate must be > 0"),
    (["--env", "CartPol-v1"], "unknown env id 'CartPol-v1'"),
    (["--env", "MountainCarContinuous-v0"], "DQN needs discrete actions"),
    (["--set", "seed=3"], "use --seeds/--first-seed"),
    (["--grid", "total_steps=100,200"], "use --steps"),
    (["--set", "train_minutes=5"], "a sweep compares trials at equal env steps"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--budget", "4"], "add --search"),
    (["--search", "--budget", "2"], "give at least one --grid"),
    (["--search", "--grid", "learning_rate=1e-3,3e-4"], "--search needs --budget"),
    (["--search", "--budget", "1", "--env", "CartPole-v1", "--env", "Acrobot-v1", "--grid", "gamma=0.9,0.99"], "search one --env at a time"),
    (["--grid", "gamma=0.9,0.9"], "listed twice"),
    (["--address", "ray://10.0.0.1:10001"], "Ray Client (ray://) is not supported"),
    (["--address", "headnode"], "expected HOST:PORT"),
    (["--address", "8.8.8.8:6379"], "8.8.8.8 is a public address (8.8.8.8), and a Ray cluster runs any code sent to it"),
    (["--address", "[2001:4860:4860::8888]:6379"], "is a public address"),
    (["--address", "no-such-host.invalid:6379"], "does not resolve"),
])
def test_bad_input_is_one_line_and_exit_2_before_ray_starts(tmp_path, no_ray, args, message):
    out = tmp_path / "sweep"
    code, output = cli("--out", str(out), "--steps", "600", *args)
    assert code == 2, output
    assert output.startswith("error: ") and message in output and output.count("\n") == 1, output
    assert not out.exists()


def test_an_address_that_does_not_answer_is_refused_within_seconds(tmp_path, no_ray):
    address = f"127.0.0.1:{closed_port()}"
    t0 = time.perf_counter()
    code, output = cli("--out", str(tmp_path / "sweep"), "--address", address)
    assert code == 2 and output.startswith(f"error: no Ray cluster answers at {address}") and output.count("\n") == 1, output
    assert time.perf_counter() - t0 < ADDRESS_TIMEOUT_S + 5


def test_an_address_that_accepts_but_never_answers_is_refused_after_the_timeout():
    """A socket that listens and never speaks: the connection opens, the cluster call meets its deadline."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        t0 = time.perf_counter()
        with pytest.raises(UserError, match=f"no Ray cluster answers at {address}"):
            check_address(address, timeout_s=0.5)
    assert time.perf_counter() - t0 < 3


def test_a_sweep_file_is_read_and_flags_win(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('env = "CartPole-v1"\nseeds = 3\nsteps = 2_000\n[set]\neval_every = 500\n[grid]\nlearning_rate = [1e-3, 3e-4]\n'
                    'hidden_sizes = [[64, 64], [128]]\n')
    spec = build_spec((), None, str(path), ("eval_every=250",), (), None, None, 1_000, False, None)
    assert spec.envs == ("CartPole-v1",) and spec.seeds == (0, 1, 2) and spec.steps == 1_000
    assert spec.overrides == {"eval_every": "250"}
    trials = plan(spec)
    assert len(trials) == 2 * 2 * 3
    assert trials[0].name == "CartPole-v1-learning_rate=0.001+hidden_sizes=64x64-seed0"
    assert {t.config["hidden_sizes"][0] for t in trials} == {64, 128}
    assert all(t.config["eval_every"] == 250 and t.config["total_steps"] == 1_000 for t in trials)
    path.write_text("[network]\nhidden_sizes = [64]\n")
    with pytest.raises(UserError, match="unknown key 'network'"):
        build_spec((), None, str(path), (), (), None, None, None, False, None)


def test_grid_values_keep_bracketed_lists_and_name_the_run_directories():
    assert split_values("[64,64],[128, 128],[32]") == ["[64,64]", "[128, 128]", "[32]"]
    assert parse_grid(["learning_rate=1e-3, 3e-4", "double_dqn=true,false"]) == {
        "learning_rate": ("1e-3", "3e-4"), "double_dqn": ("true", "false")}
    labels = [label for label, _ in settings({"hidden_sizes": ("[64,64]", "[128]"), "dueling": (True, False)})]
    assert labels == ["hidden_sizes=64x64+dueling=true", "hidden_sizes=64x64+dueling=false", "hidden_sizes=128+dueling=true",
                      "hidden_sizes=128+dueling=false"]
    assert trial_name("ALE/Pong-v5", "base", 3) == "ALE-Pong-v5-seed3"
    with pytest.raises(UserError, match="--grid expects key=value1,value2"):
        parse_grid(["learning_rate"])


def test_search_draws_the_same_settings_every_time():
    spec = SweepSpec(envs=("CartPole-v1",), seeds=(0, 1), steps=1_000, grid={"gamma": ("0.9", "0.95", "0.99"), "n_steps": ("1", "3")},
                           search=True, budget=2)
    first = plan(spec)
    assert len(first) == 2 * 2 and len({t.setting for t in first}) == 2
    assert [t.name for t in plan(spec)] == [t.name for t in first]


def test_the_out_directory_resumes_only_the_same_sweep(tmp_path):
    spec = SweepSpec(envs=("CartPole-v1",), seeds=(0, 1), steps=600)
    trials = plan(spec)
    out, resuming = prepare_out(tmp_path / "s", spec, trials)
    assert not resuming and json.loads((out / "sweep.json").read_text())["trials"] == ["CartPole-v1-seed0", "CartPole-v1-seed1"]
    assert prepare_out(tmp_path / "s", spec, trials) == (out, True)
    other = SweepSpec(envs=("CartPole-v1",), seeds=(0, 1), steps=900)
    with pytest.raises(UserError, match="holds a sweep with other steps"):
        prepare_out(tmp_path / "s", other, plan(other))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty and holds no sweep"):
        prepare_out(tmp_path / "busy", spec, trials)


def test_a_trial_worker_exiting_inside_a_callback_prints_no_traceback():
    """As Ray's SIGTERM handler does to a finished trial's worker: SystemExit raised inside a weakref callback.
    Python's default hook prints "Exception ignored in" and a traceback; the trials' hook drops that, and only that."""
    code = ("import sys, weakref\n"
            "from agent.sweep.trial import quiet_shutdown_exit\n"
            "class Thing: pass\n"
            "def exit_now(ref): raise SystemExit(1)\n"
            "def fail(ref): raise ValueError('a real error')\n"
            "if sys.argv[1] == 'hook': sys.unraisablehook = quiet_shutdown_exit\n"
            "t = Thing(); r = weakref.ref(t, exit_now); del t\n"
            "u = Thing(); s = weakref.ref(u, fail); del u\n"
            "print('went on')\n")
    runs = {how: subprocess.run([sys.executable, "-c", code, how], cwd=ROOT, capture_output=True, text=True, timeout=60) for how in ("default", "hook")}
    assert "SystemExit" in runs["default"].stderr and "ValueError" in runs["default"].stderr  # the noise, reproduced
    assert runs["hook"].returncode == 0 and runs["hook"].stdout == "went on\n"
    assert "SystemExit" not in runs["hook"].stderr and "ValueError: a real error" in runs["hook"].stderr  # other errors still show


def test_validation_imports_neither_tensorflow_nor_ray():
    """The driver stays light: configs and envs are checked without TensorFlow, and Ray loads only to run."""
    code = ("import sys; from agent.sweep.cli import build_spec; from agent.sweep.plan import plan; "
            "plan(build_spec(('CartPole-v1',), None, None, ('eval_every=300',), ('gamma=0.9,0.99',), 2, 0, 600, False, None)); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# --------------------------------------------------------------------------- slow: faults


def launch(cmd: list[str], logs: Path, **kwargs) -> subprocess.Popen:
    """Start the command with its output in files (a pipe nobody reads while we wait could fill and block it)."""
    n = len(list(logs.parent.glob(f"{logs.name}-*.out")))
    out, err = logs.with_name(f"{logs.name}-{n}.out"), logs.with_name(f"{logs.name}-{n}.err")
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=o, stderr=e, text=True, **kwargs)
    proc.logs = (out, err)
    return proc


def output(proc: subprocess.Popen) -> tuple[str, str]:
    return proc.logs[0].read_text(), proc.logs[1].read_text()


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = output(proc)
            pytest.fail(f"the sweep ended (rc {proc.returncode}) before {what}:\n{out[-4000:]}\n{err[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def finish(proc: subprocess.Popen, timeout_s: float) -> tuple[str, str]:
    """The command's output once it ends; past `timeout_s` it is killed and the test fails with the output's tail."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        out, err = output(proc)
        pytest.fail(f"the sweep did not end within {timeout_s:g} s:\n{out[-4000:]}\n{err[-4000:]}")
    return output(proc)


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*/manifest.json"))


def assert_finished(out: Path, names: list[str], steps: int) -> None:
    for name in names:
        final = json.loads((out / name / "eval.json").read_text())
        assert final["env_step"] == steps, name
        logged = [int(r["env_step"]) for r in eval_rows(out / name)]
        assert logged == sorted(set(logged)) and logged[-1] == steps, (name, logged)  # no step twice, none from zero again


@needs_ray
@pytest.mark.slow
def test_killed_and_interrupted_sweeps_resume_with_the_same_command(tmp_path):
    """SIGKILL the sweep command, rerun it; Ctrl-C it (SIGINT to its process group, as a terminal does), rerun it: every trial
    finishes, and a resumed trial continues its own run directory from its checkpoint instead of starting again."""
    out, steps = tmp_path / "sweep", 2_400
    args = ["--env", "CartPole-v1", "--seeds", "2", "--steps", str(steps), *TINY]
    names = ["CartPole-v1-seed0", "CartPole-v1-seed1"]

    procs = []

    def start():
        procs.append(launch(sweep_cmd(out, *args), tmp_path / "sweep-log", start_new_session=True))
        return procs[-1]

    try:
        run_kill_interrupt_resume(out, steps, names, start)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_kill_interrupt_resume(out: Path, steps: int, names: list[str], start) -> None:
    proc = start()
    wait_for(lambda: all(len(checkpoint_steps(out / n)) >= 1 for n in names), 300, "both trials' first checkpoints", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started (agents Ray leaves behind included)
    proc.wait()
    killed_at = {n: checkpoint_steps(out / n)[-1] for n in names}

    proc = start()
    wait_for(lambda: any(checkpoint_steps(out / n)[-1] >= killed_at[n] + 600 for n in names), 300, "progress after the restart", proc)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = finish(proc, 120)
    assert proc.returncode == 130, stdout + stderr
    assert "resuming the sweep in" in stdout and "resume with the same command" in stderr
    resumed = [line for line in (stdout + stderr).splitlines() if "resuming CartPole-v1-seed" in line]
    assert resumed and all(int(line.split("from env step ")[1].split()[0].replace(",", "")) > 0 for line in resumed), stdout + stderr

    proc = start()
    stdout, stderr = finish(proc, 600)
    assert proc.returncode == 0, stdout + stderr
    assert "resume   CartPole-v1-seed" in stdout
    assert_finished(out, names, steps)
    assert (out / "summary.csv").is_file()


@needs_ray
@pytest.mark.slow
def test_a_trial_on_a_node_that_dies_is_retried_and_resumes(tmp_path):
    """A head and two worker nodes on this machine (ray.cluster_utils.Cluster); remove a worker node while trials run on both:
    its trial is retried on the other node from its last checkpoint, and every trial ends with a valid eval.json."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    proc = None
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        out, steps = tmp_path / "sweep", 1_800
        names = [f"CartPole-v1-seed{s}" for s in range(3)]
        proc = launch(sweep_cmd(out, "--address", cluster.address, "--env", "CartPole-v1", "--seeds", "3", "--steps", str(steps), *TINY),
                      tmp_path / "sweep-log")
        running = lambda: [n for n in names if (out / n / "checkpoints").is_dir() and checkpoint_steps(out / n)]  # noqa: E731
        wait_for(lambda: len(running()) >= 2, 300, "two trials with a checkpoint, one on each worker node", proc)
        cluster.remove_node(workers[1], allow_graceful=False)
        stdout, stderr = finish(proc, 600)
        assert proc.returncode == 0, stdout + stderr
        assert "retry    CartPole-v1-seed" in stdout, stdout
        assert "resuming CartPole-v1-seed" in stdout + stderr
        assert_finished(out, names, steps)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        cluster.shutdown()


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.20", "::1", "fd00::5", "fe80::1%eth0", "::ffff:10.0.0.7"])
def test_loopback_and_private_addresses_pass_the_public_check(ip):
    from agent.sweep.cluster import check_private

    check_private(ip, f"[{ip}]:6379")  # no error


def test_allow_public_address_goes_on_to_ask_the_cluster(tmp_path, no_ray):
    """With the flag the public check is skipped, and the next one (does a Ray cluster answer there?) runs: a port of this
    machine that nothing listens on stands in for the public host, so no packet leaves the machine."""
    from agent.sweep import cluster

    calls = []
    real = cluster.check_private
    cluster.check_private = lambda host, address: calls.append(host)
    try:
        with pytest.raises(UserError, match="no Ray cluster answers"):
            check_address(f"127.0.0.1:{closed_port()}", allow_public=True)
        assert calls == []
        with pytest.raises(UserError, match="no Ray cluster answers"):
            check_address(f"127.0.0.1:{closed_port()}")
        assert calls == ["127.0.0.1"]
    finally:
        cluster.check_private = real
