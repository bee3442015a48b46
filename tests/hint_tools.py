"""What the tests/test_hints*.py files share: the one `error:` line of a refusal, a tiny run trained once per process,
programs run as a user's shell runs them, and the check that a `pip install` hint installs what is missing.

A missing optional package is made by a `sitecustomize.py` put first on PYTHONPATH: a meta-path finder that refuses
the blocked modules (`find_spec` raises ModuleNotFoundError, as for a package that is not installed), so the entry
point runs unchanged and meets the same ImportError a user without the extra meets. Nothing is uninstalled. The same
file can take the network away (every name lookup fails), as on a machine without one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--env", "CartPole-v1", "--steps", "600", "--checkpoint-every", "300", "--eval-every", "300", "--eval-episodes", "2",
        "--set", "learning_starts=200", "--set", "final_eval_episodes=2", "--no-progress"]

SITECUSTOMIZE = '''
import os, sys

BLOCKED = set(filter(None, os.environ.get("HINTS_BLOCK", "").split(",")))


class NotInstalled:
    """Refuses the blocked top-level packages as the import system refuses one that is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())

if os.environ.get("HINTS_OFFLINE"):  # no network: every name lookup fails, as on a machine without one
    import socket

    def offline(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    socket.getaddrinfo = offline
'''


def refusal(result) -> str:
    """The one `error:` line of a refused click command run in-process (CliRunner)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    return line


def refused(done: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a refused program run in a subprocess."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    return line


def succeeded(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    return done


def user_env(**changes: str | None) -> dict[str, str]:
    """This process's environment (TF quiet, SDL's dummy driver from conftest) with `changes`; None removes a name."""
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run(args: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """A program as a user's shell runs it: `args[0]` "python" is this venv's interpreter."""
    args = [sys.executable if args[0] == "python" else args[0], *args[1:]]
    return subprocess.run(args, cwd=cwd, env=env or user_env(), capture_output=True, text=True, timeout=timeout)


def without(modules: tuple[str, ...], where: Path, env: dict[str, str] | None = None, *, network: bool = True) -> dict[str, str]:
    """An environment in which `modules` cannot be imported (see the module docstring), nor any host reached unless
    `network`; `where` gets the sitecustomize.py that does it."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(env or user_env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(where), str(ROOT), env.get("PYTHONPATH", "")]))
    env["HINTS_BLOCK"] = ",".join(modules)
    if not network:
        env["HINTS_OFFLINE"] = "1"
    return env


def python_command(line: str, after: str) -> list[str]:
    """The backquoted command the hint names after `after` (`python ...`), as argv."""
    import shlex

    match = re.search(re.escape(after) + r"[^`]*`([^`]+)`", line)
    assert match, line
    return shlex.split(match.group(1))


# --------------------------------------------------------------------------- pip install hints


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(extra: str) -> dict[str, str]:
    """{canonical distribution name: its requirement} of an optional extra of pyproject.toml."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    extras = pyproject()["project"]["optional-dependencies"]
    assert extra in extras, f"no extra {extra!r} in pyproject.toml (it has {', '.join(extras)})"
    return {canonicalize_name(Requirement(r).name): r for r in extras[extra]}


def provides(distribution: str, module: str) -> bool:
    """Whether installing `distribution` from PyPI brings the importable `module` (as the installed one here does)."""
    from importlib.metadata import packages_distributions
    from packaging.utils import canonicalize_name

    return canonicalize_name(distribution) in {canonicalize_name(d) for d in packages_distributions().get(module, [])}


def assert_pip_hint_installs(line: str, module: str) -> None:
    """The hint's `pip install PACKAGE` and `pip install '.[EXTRA]'` both bring the missing `module`.

    '.[EXTRA]' is pip's syntax for this checkout (its pyproject.toml) with the extra; 'tfdqn[EXTRA]' the same from PyPI.
    """
    from packaging.utils import canonicalize_name

    packages = re.search(r"pip install ((?:[A-Za-z0-9_.-]+ ?)+?) \(or pip install '\.\[(\w+)\]' in a checkout\)", line)
    assert packages, line
    named, extra = packages.group(1).split(), packages.group(2)
    assert any(provides(p, module) for p in named), (named, module)
    in_extra = requirement_names(extra)
    assert any(canonicalize_name(p) in in_extra for p in named if provides(p, module)), (extra, in_extra, named)


# --------------------------------------------------------------------------- a tiny run, trained once per process


def tiny_run(tmp_path_factory, *extra: str, name: str = "tiny-run") -> Path:
    """A finished TINY CartPole run (model.keras, best_model.keras, progress.csv), made once per test process.

    Tests that change it work on a copy (shutil.copytree).
    """
    from click.testing import CliRunner

    import train as train_cli

    run_dir = tmp_path_factory.getbasetemp() / "hints-shared" / name
    if not (run_dir / "eval.json").is_file():
        result = CliRunner().invoke(train_cli.main, [*TINY, *extra, "--run-dir", str(run_dir), "--force"])
        assert result.exit_code == 0, result.output
    return run_dir
