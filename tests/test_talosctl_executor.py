"""TalosctlExecutor against the fake talosctl from tests/support, put first on PATH."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from engine.executors.talosctl import INSTALL_DOCS, TalosctlExecutor
from engine.runbook.actions import StepFailed, TalosctlCommand
from tests.support.fake_talosctl import FakeTalosctl, install


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTalosctl:
    installed = install(tmp_path / "fake")
    for name, value in installed.env().items():
        monkeypatch.setenv(name, value)
    return installed


def test_argv_talosconfig_and_cwd_reach_the_binary(fake: FakeTalosctl, tmp_path: Path) -> None:
    fake.respond(["version"], stdout='{"version": "v1.9.5"}\n', stderr="note\n")
    talosconfig = tmp_path / "talosconfig"
    argv = ("version", "--nodes", "10.0.0.1", "--short; touch /tmp/pwned")
    result = TalosctlExecutor().execute(TalosctlCommand(argv=argv, talosconfig=str(talosconfig), cwd=str(tmp_path)))
    assert result.data == {"stdout": '{"version": "v1.9.5"}\n', "stderr": "note\n", "exit_code": 0}
    [call] = fake.calls()
    assert call["argv"] == list(argv)
    assert call["talosconfig"] == str(talosconfig)
    assert call["cwd"] == str(tmp_path)


def test_without_talosconfig_the_inherited_one_is_kept(fake: FakeTalosctl, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALOSCONFIG", "/home/op/.talos/config")
    TalosctlExecutor().execute(TalosctlCommand(argv=("health",)))
    assert fake.calls()[0]["talosconfig"] == "/home/op/.talos/config"


def test_missing_binary_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StepFailed) as failed:
        TalosctlExecutor().execute(TalosctlCommand(argv=("version",)))
    message = failed.value.message
    assert "talosctl is not installed" in message and INSTALL_DOCS in message
    assert f"searched: {tmp_path}" in message
    assert failed.value.sent is False


def test_missing_binary_given_as_path(tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as failed:
        TalosctlExecutor(binary=str(tmp_path / "talosctl")).execute(TalosctlCommand(argv=("version",)))
    assert f"{tmp_path / 'talosctl'} does not exist or is not executable" in failed.value.message


def test_failure_has_exit_code_and_stderr_tail(fake: FakeTalosctl) -> None:
    fake.respond(["apply-config"], stderr="error applying config: rpc error: code = Unavailable\n", exit=1)
    with pytest.raises(StepFailed) as failed:
        TalosctlExecutor().execute(TalosctlCommand(argv=("apply-config", "--file", "cp.yaml")))
    message = failed.value.message
    assert "`talosctl apply-config --file cp.yaml` exited with 1" in message
    assert "code = Unavailable" in message
    assert failed.value.data["exit_code"] == 1


def test_hang_is_killed_at_the_timeout(fake: FakeTalosctl) -> None:
    fake.respond(stdout="waiting for node\n", hang=True)
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        TalosctlExecutor().execute(TalosctlCommand(argv=("health", "--wait-timeout", "10m"), timeout=1))
    assert time.monotonic() - started < 5
    assert "timed out after 1 s and was killed" in failed.value.message
    assert failed.value.data["stdout"] == "waiting for node\n"
    pid = fake.calls()[0]["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_missing_cwd_is_refused_before_running(fake: FakeTalosctl, tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as failed:
        TalosctlExecutor().execute(TalosctlCommand(argv=("version",), cwd=str(tmp_path / "nope")))
    assert "does not exist" in failed.value.message and failed.value.sent is False
    assert fake.calls() == []
