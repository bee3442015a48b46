"""Every shell command in README.md and docs/**/*.md against the programs it names (issue 31 item 6).

The fenced blocks marked `sh`, `bash`, `shell` or `console` are split into commands: `\\` continuations
joined, split at `&&`, `||`, `;`, `|` and `&`, `$ ` prompts (and in a console block, the output lines
without one), comments, redirections and leading `VAR=value` assignments dropped. A command is ours when
its program is `python train.py`, `python play.py`, `python bench/X.py`, `python -m M` for a module of
this repository (agent.export, agent.plot, agent.sweep, classic, ...), a console script of pyproject.toml
(tfdqn-train, ...: checked as the `python` command it stands for) or `make`. For each:

- the program exists: the script file, or the module (a package by its `__main__`); `make`'s targets
  are rules of the Makefile;
- every `--flag` is in the program's `--help` (for a click group such as `python -m classic`, in the help
  of the subcommand the command calls: `python -m classic mnist --help`);
- every argument that names a repository path exists, relative to the repository root.

One test per (doc, program), so a failure names the doc; its message lists `file:line`, the command
and what is missing. Each `--help` runs once per program (cached), with `sys.executable`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}

# The console scripts of pyproject.toml, each as the `python` invocation it stands for.
CONSOLE_SCRIPTS = {
    "tfdqn-train": ("train.py",),
    "tfdqn-play": ("play.py",),
    "tfdqn-sweep": ("-m", "agent.sweep"),
    "tfdqn-export": ("-m", "agent.export"),
    "tfdqn-plot": ("-m", "agent.plot"),
}

# Flags whose value is a file or directory the command writes: it need not exist beforehand.
OUTPUT_FLAGS = {"--out", "--record", "--record-dir", "--run-dir", "--save-demos", "--screenshot-dir", "--dir"}

# Flags whose value is a name, not a file, even with a slash in it (ALE/Pong-v5, a legend label).
NAME_FLAGS = {"--env", "--label", "--title", "--address", "--preset"}

# What a path-like argument looks like: a slash, or one of these suffixes.
PATH_SUFFIXES = (".py", ".toml", ".npz", ".md", ".png")

# Paths that a command earlier in the same block creates, by (doc, path), each with the reason. An entry
# counts only when an earlier command of the same block names the path (tested, as is that each is used).
CREATED_EARLIER = {
    ("docs/classic.md", "demos.npz"): "written by `play.py ... --save-demos demos.npz`, the block's first command, then pretrained on and replayed",
}

PYTHON = re.compile(r"python(3(\.\d+)?)?")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&", "|&", ";;"}
REDIRECTIONS = {">", ">>", "<", "<<", "<<<", ">&", "&>", ">|", "&>>", "<>"}


@dataclass(frozen=True)
class Command:
    doc: str     # relative to the repository root
    line: int    # 1-based line of the command's first line
    block: int   # 1-based line of the block's opening fence
    text: str    # as written (continuations joined)
    argv: tuple[str, ...]

    def where(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}`"


def fenced_blocks(path: Path):
    """(opening fence line, language, [(line, text), ...]) for each fenced code block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`{]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, language, start = m.group(1), m.group(2).lower(), i + 1
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        yield start, language, body


def logical_lines(body, console: bool):
    """(line, text) of each command line: continuations joined; with prompts, only the `$ ` lines."""
    prompted = console or any(text.lstrip().startswith("$ ") for _, text in body)
    current = None
    for number, raw in body:
        text = raw.rstrip()
        if current is None:
            stripped = text.lstrip()
            if prompted:
                if not stripped.startswith("$ "):
                    continue  # the output of the command before
                stripped = stripped[2:]
            current = [number, stripped]
        else:
            current[1] += " " + text.strip()
        if current[1].endswith("\\"):
            current[1] = current[1][:-1].rstrip()
            continue
        yield tuple(current)
        current = None
    if current is not None:
        yield tuple(current)


def split_commands(text: str) -> list[list[str]]:
    """The simple commands of one shell line: argv lists without redirections or leading assignments."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, argv, skip_next = [], [], False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            commands.append(argv)
            argv = []
        elif token in REDIRECTIONS:
            skip_next = True  # the redirection's file
        elif not argv and ASSIGNMENT.match(token):
            pass  # FOO=1 cmd: an environment variable for cmd
        else:
            argv.append(token)
    commands.append(argv)
    return [argv for argv in commands if argv]


def doc_commands(path: Path) -> list[Command]:
    doc = path.relative_to(ROOT).as_posix()
    commands = []
    for start, language, body in fenced_blocks(path):
        if language not in SHELL_LANGUAGES:
            continue
        for line, text in logical_lines(body, console=language == "console"):
            for argv in split_commands(text):
                commands.append(Command(doc, line, start, text.split(" #")[0].strip(), tuple(argv)))
    return commands


def is_our_module(module: str) -> bool:
    top = module.split(".")[0]
    return (ROOT / top).is_dir() or (ROOT / f"{top}.py").is_file()


def program(argv: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(the program as `python` arguments, or ("make",); the arguments after it), or None if not ours."""
    name = os.path.basename(argv[0])
    if name in CONSOLE_SCRIPTS:
        return CONSOLE_SCRIPTS[name], argv[1:]
    if name == "make":
        return ("make",), argv[1:]
    if PYTHON.fullmatch(name) and len(argv) > 1:
        if argv[1] == "-m" and len(argv) > 2 and is_our_module(argv[2]):
            return ("-m", argv[2]), argv[3:]
        if not argv[1].startswith("-") and argv[1].endswith(".py") and not os.path.isabs(argv[1]):
            return (argv[1],), argv[2:]
    return None


def label(prog: tuple[str, ...]) -> str:
    return "make" if prog == ("make",) else "python " + " ".join(prog)


def collect() -> dict[tuple[str, tuple[str, ...]], list[tuple[Command, tuple[str, ...]]]]:
    groups: dict = {}
    for path in DOCS:
        for command in doc_commands(path):
            found = program(command.argv)
            if found is not None:
                prog, args = found
                groups.setdefault((command.doc, prog), []).append((command, args))
    return groups


GROUPS = collect()
ALL_COMMANDS = [command for path in DOCS for command in doc_commands(path)]


# ---- the programs ---------------------------------------------------------------------------------------

class HelpFailed(Exception):
    pass


@functools.cache
def help_text(prog: tuple[str, ...], subcommands: tuple[str, ...] = ()) -> str:
    """The program's --help (its subcommand's, for a click group), run once per program."""
    # TFDQN_VERBOSE_TF=1: tfquiet.setup() then leaves TensorFlow to be imported where it is used, so that
    # `python -m classic SUB --help` (whose group callback calls setup()) does not import it: 0.3 s, not 5-20 s.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFDQN_VERBOSE_TF="1", SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    argv = [sys.executable, *prog, *subcommands, "--help"]
    try:
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        raise HelpFailed(f"`{label(prog)} {' '.join(subcommands)} --help` took over 180 s") from None
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise HelpFailed(f"`{label(prog)} {' '.join(subcommands)} --help` failed (exit {result.returncode}): {tail}")
    return result.stdout


def help_options(text: str) -> set[str]:
    """The option names an --help lists: the `-x, --name VALUE` head of each option line."""
    options = set()
    for line in text.splitlines():
        m = re.match(r"^ {1,6}(-{1,2}[A-Za-z0-9].*)$", line)
        if m:
            head = re.split(r"\s{2,}", m.group(1))[0]
            options.update(re.findall(r"(?<![\w-])--?[A-Za-z0-9][\w-]*", head))
    return options


def help_subcommands(text: str) -> set[str]:
    """The commands of a click group's --help (empty for a plain command)."""
    m = re.search(r"^Commands:\n((?:[ \t]+.*\n?)+)", text, re.MULTILINE)
    return set(re.findall(r"^ {1,4}(\S+)", m.group(1), re.MULTILINE)) if m else set()


def program_missing(prog: tuple[str, ...]) -> str | None:
    """Why the program does not exist, or None."""
    if prog[0] != "-m":
        return None if (ROOT / prog[0]).is_file() else f"{prog[0]} does not exist"
    module = prog[1]
    try:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:  # a package runs its __main__
            if importlib.util.find_spec(f"{module}.__main__") is None:
                return f"package {module} has no __main__ module"
    except (ImportError, ValueError) as e:
        return f"module {module} cannot be found ({type(e).__name__}: {e})"
    return None if spec is not None else f"module {module} does not exist"


@functools.cache
def make_targets() -> frozenset[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([^\s:#=$.][^:=]*?)\s*::?(?!=)", line)
        if m:
            targets.update(m.group(1).split())
    return frozenset(targets)


# ---- the arguments --------------------------------------------------------------------------------------

def is_flag(token: str) -> bool:
    return token.startswith("-") and token != "-" and token != "--" and not re.fullmatch(r"-[\d.]+(e-?\d+)?", token)


def looks_like_repo_path(value: str) -> bool:
    if not value or "://" in value or any(c in value for c in "*?<>{}$") or value.startswith(("~", "/")):
        return False  # URLs, globs, placeholders, $VAR, home and absolute paths: not repository paths
    if value.startswith(("runs/", "./runs/")) or value.startswith("..."):
        return False  # what a run writes
    return "/" in value or value.endswith(PATH_SUFFIXES)


def path_arguments(args: tuple[str, ...]):
    """The path-like arguments, leaving out the values of output and name flags; `KEY=VALUE` (--set) by its VALUE."""
    skip_next = False
    for token in args:
        if skip_next:
            skip_next = False
            continue
        if is_flag(token):
            name, has_value, value = token.partition("=")
            skipped = name in OUTPUT_FLAGS or name in NAME_FLAGS
            skip_next = skipped and not has_value
            if has_value and not skipped and looks_like_repo_path(value):
                yield value
            continue
        value = token.partition("=")[2] if ASSIGNMENT.match(token) else token
        if looks_like_repo_path(value):
            yield value


def created_earlier(command: Command, path: str) -> bool:
    """An allowlisted path that an earlier command of the same block names."""
    if (command.doc, path) not in CREATED_EARLIER:
        return False
    return any(c.doc == command.doc and c.block == command.block and c.line < command.line and path in c.argv for c in ALL_COMMANDS)


def check(command: Command, prog: tuple[str, ...], args: tuple[str, ...]) -> list[str]:
    """What is wrong with one command: a list of `file:line: command: what is missing`."""
    problems = []
    if prog == ("make",):
        for target in args:
            if not is_flag(target) and not ASSIGNMENT.match(target) and target not in make_targets():
                problems.append(f"{command.where()}: no target {target!r} in the Makefile (it has {', '.join(sorted(make_targets()))})")
        return problems
    missing = program_missing(prog)
    if missing:
        return [f"{command.where()}: {missing}"]
    # A click group: the first argument that is not a flag names the subcommand whose help lists the flags.
    subcommands: tuple[str, ...] = ()
    try:
        text = help_text(prog)
        rest = list(args)
        while help_subcommands(text):
            positional = next((i for i, a in enumerate(rest) if not is_flag(a)), None)
            if positional is None:
                break
            name = rest[positional]
            if name not in help_subcommands(text):
                problems.append(f"{command.where()}: `{label(prog)}` has no command {name!r} (it has {', '.join(sorted(help_subcommands(text)))})")
                break
            for flag in rest[:positional]:
                if flag.partition("=")[0] not in help_options(text):
                    problems.append(f"{command.where()}: {flag.partition('=')[0]} is not an option of `{label(prog)}`")
            subcommands += (name,)
            rest = rest[positional + 1:]
            if not any(is_flag(a) for a in rest):
                break  # nothing for the subcommand's help to answer: its name is in the group's list
            text = help_text(prog, subcommands)
    except HelpFailed as e:
        return [f"{command.where()}: {e}"]
    options = help_options(text)
    who = " ".join([label(prog), *subcommands])
    for token in rest:
        if is_flag(token) and token.partition("=")[0] not in options:
            problems.append(f"{command.where()}: {token.partition('=')[0]} is not an option of `{who}` (its --help lists {', '.join(sorted(options))})")
    for path in path_arguments(args):
        if not (ROOT / path).exists() and not created_earlier(command, path):
            problems.append(f"{command.where()}: {path} does not exist in the repository")
    return problems


# ---- the tests ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("doc, prog", sorted(GROUPS), ids=[f"{doc}::{label(prog)}" for doc, prog in sorted(GROUPS)])
def test_doc_commands(doc, prog):
    problems = [p for command, args in GROUPS[(doc, prog)] for p in check(command, prog, args)]
    assert not problems, "\n" + "\n".join(problems)


def test_the_docs_have_commands():
    """The parser finds the commands it should: the two of the quick start and the main programs."""
    readme = {label(prog) for doc, prog in GROUPS if doc == "README.md"}
    assert {"make", "python train.py", "python play.py", "python -m agent.export", "python -m agent.sweep"} <= readme, readme
    assert len({prog for _, prog in GROUPS}) >= 10, sorted({label(prog) for _, prog in GROUPS})


def test_console_scripts_match_pyproject():
    """CONSOLE_SCRIPTS names each console script of pyproject.toml as the module its entry point lives in."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(CONSOLE_SCRIPTS)
    for name, target in scripts.items():
        module = target.partition(":")[0]
        prog = CONSOLE_SCRIPTS[name]
        mapped = prog[1] if prog[0] == "-m" else prog[0].removesuffix(".py").replace("/", ".")
        assert module == mapped or module.startswith(mapped + "."), f"{name} = {target!r}, mapped to `{label(prog)}`"


def test_allowlist_entries_are_used():
    """Each CREATED_EARLIER entry is a path some command of its doc names after an earlier one of its block made it."""
    for (doc, path), reason in CREATED_EARLIER.items():
        assert reason
        users = [c for c in ALL_COMMANDS if c.doc == doc and path in " ".join(c.argv) and created_earlier(c, path)]
        assert users, f"CREATED_EARLIER[{doc!r}, {path!r}] is not needed any more: drop it"


def test_the_parser():
    """Continuations, prompts, separators, assignments, redirections and comments."""
    body = [(1, "$ FOO=1 python train.py --env X \\"), (2, "    --steps 5 && make test # a comment"), (3, "some output"),
            (4, "$ python play.py RUN > out.txt 2>&1 | tee log")]
    lines = list(logical_lines(body, console=True))
    assert lines == [(1, "FOO=1 python train.py --env X --steps 5 && make test # a comment"), (4, "python play.py RUN > out.txt 2>&1 | tee log")]
    assert split_commands(lines[0][1]) == [["python", "train.py", "--env", "X", "--steps", "5"], ["make", "test"]]
    assert split_commands(lines[1][1]) == [["python", "play.py", "RUN", "2"], ["tee", "log"]]
    assert program(("tfdqn-export", "runs/x")) == (("-m", "agent.export"), ("runs/x",))
    assert program(("python", "-m", "pip", "install", ".")) is None
    assert list(path_arguments(("--config", "configs/x.toml", "--out", "q/x.png", "--set", "demos=d.npz", "runs/a", "~/m.npz", "RUN",
                                "--env", "ALE/Pong-v5", "--record=a/b.mp4"))) == ["configs/x.toml", "d.npz"]
    assert help_options("Options:\n  --env TEXT  The env.\n  -h, --help  Show this.\n  --fps FLOAT RANGE   [x>=0.1]\n") == {"--env", "-h", "--help", "--fps"}
