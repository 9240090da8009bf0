"""SshExecutor against a real throw-away sshd, LocalExecutor against the real bash.

No subprocess mocking: quoting, exit statuses, ssh's own error messages and process-group kills
are exactly what a mock would get wrong.
"""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.executors.shell import LocalExecutor, SshExecutor, _classify_ssh_error, parse_json_output
from engine.run.secrets import MASK, Secret
from engine.runbook.actions import ShellCommand, StepFailed
from tests.support.sshd import SshServer, find_free_port, start_sshd

SECRET_VALUE = "tok-3f9c1e7a-5b2d-4c11-9e0f-8a7b6c5d4e3f"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd for the session; its ssh_config aliases pve01..pve03 all point at it."""
    server = start_sshd(tmp_path_factory.mktemp("sshd-executor"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh(sshd: SshServer) -> SshExecutor:
    return SshExecutor(
        {alias: alias for alias in sshd.aliases}, sshd.user, ssh_config=str(sshd.ssh_config), connect_timeout=5
    )


def _processes_with(marker: str) -> list[int]:
    """Live (non-zombie) pids whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if marker in cmdline and stat[stat.rindex(b")") + 2 :].split()[0] != b"Z":
            found.append(int(entry))
    return found


def _wait_until_gone(marker: str, within: float) -> list[int]:
    deadline = time.monotonic() + within
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _unique_sleep() -> str:
    """A ``sleep`` argument no other process has, so leftovers can be found in /proc."""
    return f"30.{random.randrange(10**8):08d}"


# --------------------------------------------------------------------------
# ssh


def test_script_runs_on_node_and_stdout_comes_back(ssh: SshExecutor) -> None:
    result = ssh.execute(ShellCommand(script="echo hello\necho err >&2\nid -un", node="pve01"))
    assert result.data == {"stdout": f"hello\n{ssh.user}\n", "stderr": "err\n", "exit_code": 0}
    assert result.summary.startswith("pve01: done")


def test_set_eu_stops_at_failing_middle_command(ssh: SshExecutor) -> None:
    with pytest.raises(StepFailed) as failed:
        ssh.execute(ShellCommand(script="echo one\nfalse\necho two", node="pve02"))
    assert failed.value.data["stdout"] == "one\n"
    assert failed.value.data["exit_code"] == 1
    assert "node pve02" in failed.value.message and "exited with 1" in failed.value.message


def test_unset_variable_is_an_error(ssh: SshExecutor) -> None:
    with pytest.raises(StepFailed) as failed:
        ssh.execute(ShellCommand(script='echo "$NOT_SET_ANYWHERE"\necho after', node="pve01"))
    assert "NOT_SET_ANYWHERE: unbound variable" in failed.value.message
    assert "after" not in failed.value.data["stdout"]


def test_quoted_value_stays_one_argument(ssh: SshExecutor, tmp_path: Path) -> None:
    value = f"x; touch {tmp_path}/pwned1 $(touch {tmp_path}/pwned2) `touch {tmp_path}/pwned3` 'it''s' \"$HOME\""
    # As the renderer does: every value through shlex.quote.
    result = ssh.execute(ShellCommand(script=f"printf '%s|' {shlex.quote(value)}\nprintf '%s\\n' $#", node="pve03"))
    assert result.data["stdout"] == f"{value}|0\n"
    assert list(tmp_path.iterdir()) == []


def test_commands_reading_stdin_do_not_eat_the_script(ssh: SshExecutor) -> None:
    result = ssh.execute(ShellCommand(script="cat\nread -r line || echo no-input\necho after", node="pve01"))
    assert result.data["stdout"] == "no-input\nafter\n"


def test_syntax_error_at_the_end_runs_nothing(ssh: SshExecutor, tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as failed:
        ssh.execute(ShellCommand(script=f"touch {tmp_path}/ran\nif then fi", node="pve01"))
    assert failed.value.data["exit_code"] == 2
    assert "syntax error" in failed.value.message
    assert not (tmp_path / "ran").exists()


def test_non_zero_exit_message_has_stderr_tail(ssh: SshExecutor) -> None:
    script = "for i in $(seq 1 30); do echo line$i >&2; done\nexit 3"
    with pytest.raises(StepFailed) as failed:
        ssh.execute(ShellCommand(script=script, node="pve01"))
    message = failed.value.message
    assert "exited with 3" in message and f"{ssh.user}@pve01" in message
    assert "line30" in message and "line11" in message and "line10\n" not in message
    assert failed.value.sent is True and failed.value.retryable is False


def test_env_reaches_the_script_but_not_the_argv(ssh: SshExecutor) -> None:
    command = ShellCommand(
        script='printf "%s|%s|" "$GREETING" "${#TOKEN}"\necho "$TOKEN"\ncat /proc/$$/cmdline /proc/$PPID/cmdline',
        node="pve01",
        env={"GREETING": "hello; touch /tmp/x"},
    )
    result = ssh.run(command, secret_env={"TOKEN": Secret(SECRET_VALUE)})
    stdout = result.data["stdout"]
    assert stdout.startswith(f"hello; touch /tmp/x|{len(SECRET_VALUE)}|{MASK}\n")
    assert SECRET_VALUE not in stdout  # masked even when the script prints it
    argv = ssh.argv(command)
    assert not any(SECRET_VALUE in a or "GREETING" in a or "printf" in a for a in argv)
    assert argv[-1].endswith("bash -s") and "-F" in argv and "BatchMode=yes" in argv
    # The remote bash's own and its parent's command lines (as ps shows them) hold neither.
    cmdlines = stdout.split("\n", 1)[1].replace("\0", " ")
    assert cmdlines.startswith("bash -s timeout --kill-after=")
    assert "GREETING" not in cmdlines and "printf" not in cmdlines


def test_invalid_env_name_is_refused_before_connecting(ssh: SshExecutor) -> None:
    with pytest.raises(StepFailed) as failed:
        ssh.execute(ShellCommand(script="true", node="pve01", env={"A=B; touch /tmp/x #": "v"}))
    assert failed.value.sent is False and "not valid" in failed.value.message


def test_unknown_node_lists_known_nodes(ssh: SshExecutor) -> None:
    with pytest.raises(StepFailed) as failed:
        ssh.execute(ShellCommand(script="true", node="pve99"))
    assert "unknown node 'pve99'" in failed.value.message
    assert "pve01, pve02, pve03" in failed.value.message
    assert failed.value.sent is False


def test_progress_gets_lines_as_they_come(ssh: SshExecutor) -> None:
    lines: list[str] = []
    ssh.execute(ShellCommand(script="echo a\necho b >&2\nprintf c", node="pve01"), progress=lines.append)
    assert sorted(lines) == ["a", "b", "c"]


def _config_for(
    tmp_path: Path,
    sshd: SshServer,
    *,
    port: int | None = None,
    identity: Path | None = None,
    known_hosts: Path | None = None,
) -> Path:
    """An ssh_config with one alias ``pvex`` pointing at the test server with some detail changed."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        "\n".join(
            [
                "Host pvex",
                f"    HostName {sshd.host}",
                f"    Port {port or sshd.port}",
                f'    IdentityFile "{identity or sshd.client_key}"',
                "    IdentitiesOnly yes",
                "    IdentityAgent none",
                f'    UserKnownHostsFile "{known_hosts or sshd.known_hosts}"',
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking yes",
                "    LogLevel ERROR",
            ]
        )
        + "\n"
    )
    return cfg


def test_closed_port_says_refused_and_was_not_sent(sshd: SshServer, tmp_path: Path) -> None:
    cfg = _config_for(tmp_path, sshd, port=find_free_port())
    executor = SshExecutor({"pve09": "pvex"}, sshd.user, ssh_config=str(cfg), connect_timeout=5)
    with pytest.raises(StepFailed) as failed:
        executor.execute(ShellCommand(script="echo hi", node="pve09"))
    message = failed.value.message
    assert "node pve09" in message and f"{sshd.user}@pvex" in message
    assert "connection refused" in message and "is sshd running" in message
    assert f"ssh -F {cfg} {sshd.user}@pvex true" in message
    assert failed.value.sent is False and failed.value.retryable is True


def test_unknown_host_key_says_what_to_check(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = _config_for(tmp_path, sshd, known_hosts=empty)
    executor = SshExecutor({"pve01": "pvex"}, sshd.user, ssh_config=str(cfg))
    with pytest.raises(StepFailed) as failed:
        executor.execute(ShellCommand(script="echo hi", node="pve01"))
    assert "host key verification failed" in failed.value.message
    assert "known_hosts" in failed.value.message
    assert failed.value.sent is False and failed.value.retryable is False


def test_rejected_key_says_permission_denied(sshd: SshServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    cfg = _config_for(tmp_path, sshd, identity=stranger)
    executor = SshExecutor({"pve01": "pvex"}, sshd.user, ssh_config=str(cfg))
    with pytest.raises(StepFailed) as failed:
        executor.execute(ShellCommand(script="echo hi", node="pve01"))
    assert "permission denied" in failed.value.message
    assert "authorized_keys" in failed.value.message and "ssh-add -l" in failed.value.message
    assert failed.value.sent is False


@pytest.mark.parametrize(
    ("stderr", "problem", "sent"),
    [
        # OpenSSH's wording for failures the loopback server cannot produce cheaply.
        ("ssh: Could not resolve hostname pve01.lab: Name or service not known\n", "does not resolve", False),
        ("ssh: connect to host 10.0.0.1 port 22: Connection timed out\n", "timed out", False),
        ("ssh: connect to host 10.0.0.1 port 22: No route to host\n", "unreachable", False),
        ("Timeout, server 10.0.0.1 not responding.\n", "connection was lost", True),
        ("curl: (7) Failed to connect: Connection refused\n", None, True),  # the script's, not ssh's
    ],
)
def test_ssh_error_classification(stderr: str, problem: str | None, sent: bool) -> None:
    found, _advice, _retryable, was_sent = _classify_ssh_error(stderr)
    assert (found is None) if problem is None else (found is not None and problem in found)
    assert was_sent is sent


def test_timeout_kills_client_and_remote_script(ssh: SshExecutor, sshd: SshServer) -> None:
    duration = _unique_sleep()
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        ssh.execute(ShellCommand(script=f"echo started\nsleep {duration}", node="pve01", timeout=1))
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert "timed out after 1 s" in failed.value.message and "On the node, timeout(1) ends it" in failed.value.message
    assert failed.value.data["stdout"] == "started\n"
    # No ssh client of ours is left (its argv names our ssh_config), and the node's `timeout`
    # ends the remote sleep a moment later.
    assert _processes_with(f"-F {sshd.ssh_config}") == []
    assert _wait_until_gone(f"sleep {duration}", within=5) == []


# --------------------------------------------------------------------------
# local


def test_local_script_output_and_exit_code() -> None:
    result = LocalExecutor().execute(ShellCommand(script="echo out\necho err >&2"))
    assert result.data == {"stdout": "out\n", "stderr": "err\n", "exit_code": 0}


def test_local_set_eu_and_failure_message() -> None:
    with pytest.raises(StepFailed) as failed:
        LocalExecutor().execute(ShellCommand(script="echo one\necho bad >&2\nfalse\necho two"))
    assert failed.value.data["stdout"] == "one\n"
    assert "local script exited with 1" in failed.value.message and "bad" in failed.value.message


def test_local_quoted_value_stays_one_argument(tmp_path: Path) -> None:
    value = f"x; touch {tmp_path}/pwned $(touch {tmp_path}/pwned2)"
    result = LocalExecutor().execute(ShellCommand(script=f"printf '%s' {shlex.quote(value)}"))
    assert result.data["stdout"] == value
    assert list(tmp_path.iterdir()) == []


def test_local_env_is_the_childs_only_and_secrets_stay_out_of_argv() -> None:
    command = ShellCommand(
        script='printf "%s|%s\\n" "$GREETING" "$TOKEN"\ntr "\\0" " " </proc/$$/cmdline',
        env={"GREETING": "hi there"},
    )
    result = LocalExecutor().run(command, secret_env={"TOKEN": Secret(SECRET_VALUE)})
    assert result.data["stdout"] == f"hi there|{MASK}\nbash -s "
    assert "GREETING" not in os.environ and "TOKEN" not in os.environ


def test_local_timeout_kills_the_process_group() -> None:
    duration = _unique_sleep()
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        LocalExecutor().execute(ShellCommand(script=f"sleep {duration} &\nsleep {duration}", timeout=1))
    assert time.monotonic() - started < 5
    assert "local script timed out after 1 s" in failed.value.message
    assert _wait_until_gone(f"sleep {duration}", within=1) == []


def test_local_background_process_holding_output_is_a_timeout_not_a_hang() -> None:
    duration = _unique_sleep()
    with pytest.raises(StepFailed) as failed:
        LocalExecutor().execute(ShellCommand(script=f"sleep {duration} &\necho done", timeout=1))
    assert "kept its output open" in failed.value.message
    assert _wait_until_gone(f"sleep {duration}", within=1) == []


def test_local_large_output_does_not_deadlock() -> None:
    # Far more than a pipe buffer on both streams, while a big script is still being written.
    script = "head -c 3000000 /dev/zero | tr '\\0' a\nhead -c 3000000 /dev/zero | tr '\\0' b >&2\n" + "#" * 500000
    result = LocalExecutor().execute(ShellCommand(script=script, timeout=20))
    assert len(result.data["stdout"]) == 3_000_000 and len(result.data["stderr"]) == 3_000_000


def test_local_refuses_a_script_meant_for_a_node(tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as failed:
        LocalExecutor().execute(ShellCommand(script=f"touch {tmp_path}/ran", node="pve01"))
    assert failed.value.sent is False and not (tmp_path / "ran").exists()


def test_local_nonpositive_timeout_is_refused() -> None:
    with pytest.raises(StepFailed) as failed:
        LocalExecutor().execute(ShellCommand(script="true", timeout=0))
    assert failed.value.sent is False


# --------------------------------------------------------------------------
# parse_json_output


def test_parse_json_output_one_document_or_lines() -> None:
    assert parse_json_output('{\n  "a": [1, 2]\n}\n') == {"a": [1, 2]}
    assert parse_json_output('{"n": 1}\n\n{"n": 2}\n') == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [("", "printed nothing"), ('{"n": 1}\nnot json here\n', "line 2: Expecting value: 'not json here'")],
)
def test_parse_json_output_errors(stdout: str, expected: str) -> None:
    with pytest.raises(StepFailed) as failed:
        parse_json_output(stdout)
    assert expected in failed.value.message
