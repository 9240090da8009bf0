"""The Temporal test rig: a real ``temporal server start-dev`` on loopback (module-scoped), real
``runbook worker`` processes, a simulated home set to run on it, the CLI in a process of its own, and
the workflow history read back (payloads decoded) for the secret scans.

Shared by the tests of runs on Temporal (tests/test_temporal*.py); import the fixtures by name.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.temporal.server import binary, command
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent.parent
RUNBOOK = Path(sys.executable).parent / "runbook"
HEARTBEAT = 2
TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(address: str) -> bool:
    probe = subprocess.run(
        [str(binary()), "operator", "cluster", "health", "--address", address],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return probe.returncode == 0 and "SERVING" in probe.stdout


@pytest.fixture(scope="module")
def temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server on a free loopback port, its state in a fresh file; stopped at the end."""
    folder = tmp_path_factory.mktemp("temporal")
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(command(folder / "temporal.db", port, None), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: server.poll() is not None or answers(address), 60, "the Temporal dev server to answer")
        assert server.poll() is None, (folder / "server.log").read_text()
        yield address
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def on_temporal(home: Path, address: str, tls: dict[str, str] | None = None) -> None:
    """Point the home's cluster-config.yaml at the server, with short heartbeats (and ``tls``)."""
    path = home / "cluster-config.yaml"
    config = yaml.safe_load(path.read_text())
    config["execution"] = {"temporal": {"address": address, "heartbeat_seconds": HEARTBEAT}}
    if tls is not None:
        config["execution"]["temporal"]["tls"] = tls
    path.write_text(yaml.safe_dump(config, sort_keys=False))


class Workers:
    """``runbook worker`` processes started by a test, each stopped (or already killed) at its end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []
        self.queue_of: dict[int, str] = {}  # a worker's pid -> its own task queue (where the runs it holds go)

    def start(self, env: dict[str, str]) -> subprocess.Popen[str]:
        worker = subprocess.Popen(
            [str(RUNBOOK), "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(worker)
        assert worker.stderr is not None
        line = worker.stderr.readline()  # the worker says it is ready once it polls the task queue
        assert "task queue runbook/lab" in line, line + worker.stderr.read()
        own = re.search(r"and (\S+) for the runs it holds", line)
        assert own is not None, line
        self.queue_of[worker.pid] = own.group(1)
        return worker

    def stop(self) -> None:
        for worker in self.started:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.started:
            worker.communicate(timeout=30)
        self.started.clear()


@pytest.fixture
def workers() -> Iterator[Workers]:
    made = Workers()
    yield made
    made.stop()


def workflow_history(address: str, workflow: str) -> str:
    shown = subprocess.run(
        [str(binary()), "workflow", "show", "--workflow-id", workflow, "--address", address, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def decoded(history: str) -> str:
    """The history with every payload's data decoded (the JSON holds it in base64): what a reader of it learns."""
    texts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("data"), str) and "metadata" in value:
                texts.append(base64.b64decode(value["data"]).decode("utf-8", "replace"))
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(json.loads(history))
    return "\n".join([history, *texts])


def activities(history: str) -> list[str]:
    events = json.loads(history)["events"]
    return [
        event["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for event in events
        if "activityTaskScheduledEventAttributes" in event
    ]


# ------------------------------------------------------------------ a simulated run through Temporal


@pytest.fixture
def sim_home(tmp_path: Path, temporal: str) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "cluster-config.yaml", home / "cluster-config.yaml")
    for folder in ("clusters", "runbooks"):
        shutil.copytree(REPO / folder, home / folder)
    on_temporal(home, temporal)
    return home


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "PROXMOX_"))}
    env.update(RUNBOOK_HOME=str(home), COLUMNS="400")
    return env


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``runbook ARGS`` started in a process of its own, its output piped, for a test to act while it goes."""
    return subprocess.Popen(
        [str(RUNBOOK), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUNBOOK), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT
    )
