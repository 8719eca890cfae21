"""The README's shell examples run as printed: every command in its ```bash blocks, in order, in
a fresh virtual environment, from a scratch copy of this checkout; and git sees nothing they
write as an untracked file.

A ```bash block whose lines start with `$ ` shows commands and their output: the `$ ` lines are
the commands, the others output.  In any other block every line is a command.  A line ending in
a backslash goes on on the next.  The server the curl examples talk to is the README's own
(`./run_api.sh`), started in the background on PORT 1313, or on a free port when 1313 is taken
(then only the port in the curl commands is rewritten).  The commands not run are listed in
SKIPPED with the reason (a cluster this machine lacks; the whole suite, which would run this
test again); every other command must exit 0.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gunicorn_support import SERVICE_VARIABLES, call, free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
README_PORT = 1313

# Commands not run (a pattern matched from the start), and why.
SKIPPED = {
    r"\./run_tests\.sh\s*(#.*)?$": "runs the whole suite, this test among it: it would run itself",
}
# Commands that serve until stopped: started in the background, stopped at the end.
SERVERS = ("./run_api.sh",)
NEEDS_JAVA = ("--engine spark", "deploy/spark/")   # run where a Java runtime is, as CI installs one
COMMAND_SECONDS = 600
STARTUP_SECONDS = 300                    # ./run_api.sh first refreshes the venv (pip)
STOP_SECONDS = 40


@dataclass
class Command:
    text: str
    shown: list[str] = field(default_factory=list)   # the output the README prints after it


def readme_commands(text: str = README) -> list[Command]:
    """The commands of the README's ```bash blocks, in order, with the output shown after each."""
    commands: list[Command] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        lines = block.splitlines()
        prompted = any(line.startswith("$ ") for line in lines)
        pending = ""
        for line in lines:
            if pending:
                pending += "\n" + line
            elif prompted and line.startswith("$ "):
                pending = line[2:]
            elif prompted:
                if commands and line.strip():
                    commands[-1].shown.append(line)
                continue
            elif line.strip():
                pending = line
            else:
                continue
            if not pending.endswith("\\"):
                commands.append(Command(pending))
                pending = ""
        assert not pending, f"a command runs past its block: {pending!r}"
    return commands


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIPPED.items():
        if re.match(pattern, command):
            return reason
    if any(marker in command for marker in NEEDS_JAVA) and shutil.which("java") is None:
        return "needs a Java runtime (Java 17) for Spark"
    return None


def same_output(shown: str, actual: str) -> bool:
    """A line the README shows matches the real one: up to a `...` where it is cut short, and but
    for the time and rate a scoring run reports."""
    if "..." in shown:
        return actual.startswith(shown.split("...")[0])
    timing = re.compile(r"in [\d.]+ s \([\d,]+ rows/s\)")
    return timing.sub("in T s (R rows/s)", shown) == timing.sub("in T s (R rows/s)", actual)


# --------------------------------------------------------------------------- the reading of the README

def test_the_commands_are_read_from_the_bash_blocks_as_a_reader_reads_them():
    text = ("```bash\n./a.sh   # a comment\n\n./b.sh --x\n```\nprose\n"
            "```bash\n$ one \\\n    --two\nits output\n\n$ three\n```\n"
            "```json\n{\"not\": \"a command\"}\n```\n")
    commands = readme_commands(text)
    assert [c.text for c in commands] == ["./a.sh   # a comment", "./b.sh --x", "one \\\n    --two", "three"]
    assert commands[2].shown == ["its output"] and commands[3].shown == []


def test_the_readme_has_the_commands_this_test_knows_about():
    commands = [c.text for c in readme_commands()]
    for pattern in SKIPPED:
        assert any(re.match(pattern, c) for c in commands), f"{pattern!r} matches no command of the README"
    for start in SERVERS:
        assert any(c.startswith(start) for c in commands), f"{start!r} is no longer in the README"
    assert skip_reason("./run_tests.sh --quick") is None
    assert any("localhost:1313" in c for c in commands)
    assert any(".venv/bin/ad-purchase sample" in c and c.split()[-1].endswith(".parquet") for c in commands)
    # One spelling: every Python command goes through the installed console script.
    for command in commands:
        assert not re.match(r"(\.venv/bin/)?python3? ", command), command


def test_output_lines_compare_up_to_a_cut_and_but_for_the_timing():
    assert same_output('3,"x12","expected ... (commas only ...)"', '3,"x12","expected a currency"')
    assert not same_output("row,field", "row,value")
    assert same_output("scored 998 rows in 0.1 s (19,949 rows/s); wrote s.csv",
                       "scored 998 rows in 2.4 s (415 rows/s); wrote s.csv")
    assert not same_output("scored 998 rows in 0.1 s (19,949 rows/s)", "scored 997 rows in 0.1 s (19,949 rows/s)")


# --------------------------------------------------------------------------- running them

def scratch_checkout(target: Path) -> Path:
    """This checkout's files as they are (tracked, and new ones not ignored) in a new git
    repository of their own, committed: what a fresh clone of this work would hold."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git = ["git", "-c", "user.name=readme test", "-c", "user.email=readme@test.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "scratch copy"], cwd=target, check=True)
    return target


def fresh_venv(checkout: Path) -> None:
    """.venv in the scratch checkout: a new virtual environment with the requirements (those of
    the tests too, which the README's test commands run) and the project in editable mode."""
    python = shutil.which("python3") or sys.executable
    subprocess.run([python, "-m", "venv", str(checkout / ".venv")], check=True, timeout=300)
    done = subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "-r", "requirements-dev.txt", "--editable", "."],
                          cwd=checkout, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def readme_port() -> int:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", README_PORT))
            return README_PORT
        except OSError:
            return free_port()


def environment(port: int) -> dict[str, str]:
    # Not the service's settings of this run, nor this run's coverage measurement (the README's
    # test commands measure their own).
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES and k != "VIRTUAL_ENV"
           and not k.startswith(("COV_CORE_", "COVERAGE_"))}
    # The README's ./run_api.sh serves from .venv when no Docker engine answers; make sure none
    # does, so the server is the one of this checkout.
    env.update(PORT=str(port), DOCKER_HOST="unix:///nonexistent/docker.sock")
    return env


def ready(port: int) -> bool:
    try:
        return call(port, "GET", "/ready", timeout=2).status == 200
    except OSError:
        return False


def start_server(command: str, checkout: Path, env: dict, log: Path, port: int) -> subprocess.Popen:
    with open(log, "wb") as handle:
        process = subprocess.Popen(["bash", "-c", command], cwd=checkout, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + STARTUP_SECONDS
    while not ready(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(process)
            pytest.fail(f"{command!r} did not serve on port {port}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    return process


def stop_server(process: subprocess.Popen) -> int:
    """SIGTERM, a bounded wait, then SIGKILL to the process group the server was started in."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)              # workers left behind, if any
    except ProcessLookupError:
        pass
    process.wait()
    return process.returncode


@pytest.mark.slow
def test_every_readme_command_runs_as_printed_and_leaves_nothing_untracked(tmp_path):
    checkout = scratch_checkout(tmp_path / "checkout")
    fresh_venv(checkout)
    port = readme_port()
    env = environment(port)
    servers: list[subprocess.Popen] = []
    ran, skipped = [], []
    try:
        for number, command in enumerate(readme_commands()):
            text = command.text.replace(f"localhost:{README_PORT}", f"localhost:{port}")
            reason = skip_reason(text)
            if reason:
                skipped.append((command.text, reason))
                continue
            if text.startswith(SERVERS):
                servers.append(start_server(text, checkout, env, tmp_path / f"server-{number}.log", port))
                continue
            if f"localhost:{port}" in text:
                assert servers, f"{command.text!r} needs the server, which no earlier command started"
            done = subprocess.run(["bash", "-c", text], cwd=checkout, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_SECONDS)
            output = done.stdout.decode(errors="replace")
            assert done.returncode == 0, f"{command.text!r} exited {done.returncode}:\n{output[-3000:]}"
            ran.append(command.text)
            if command.shown and not text.startswith("curl"):     # curl answers: tests/test_readme.py
                actual = [line for line in output.splitlines() if line.strip()]
                for shown in command.shown:
                    assert any(same_output(shown, line) for line in actual), \
                        f"{command.text!r} did not print {shown!r}:\n{output[-3000:]}"
    finally:
        codes = [stop_server(process) for process in servers]
    assert codes == [0] * len(servers), codes                       # the servers stopped cleanly on SIGTERM
    print("skipped:", *(f"  {c.splitlines()[0]}  ({r})" for c, r in skipped), sep="\n")
    assert ran and len(ran) + len(skipped) + len(servers) == len(readme_commands())
    # The venv step of the scripts recorded what it installed (it installs again only on change).
    assert (checkout / ".venv" / ".installed-requirements.txt").is_file()
    assert (checkout / ".venv" / ".installed-requirements-dev.txt").is_file()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=checkout,
                            check=True, capture_output=True, text=True).stdout
    untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
    assert untracked == [], f"the README's commands left files git does not ignore: {untracked}"
    # The console script serves too, from anywhere, with the project's gunicorn settings.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    serve_port = free_port()
    server = start_server(f"{checkout}/.venv/bin/ad-purchase serve --port {serve_port}", elsewhere,
                          dict(env, PORT="1"), tmp_path / "serve.log", serve_port)
    assert stop_server(server) == 0
