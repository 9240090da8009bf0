"""Run ``ShellCommand`` scripts on a PVE node over SSH, or on this machine.

Both executors feed the script to ``bash -s`` on stdin instead of passing it as an argument: the
argument list of every process is world-readable (``ps``, ``/proc/*/cmdline``), stdin is not. The
script is wrapped in a brace group read before anything runs (see ``_script_payload``), so a
syntax error anywhere stops it before its first line, and a command inside that reads stdin
(``cat``, ``read``, ``apt-get``) cannot swallow the rest of the script.

Every child runs in its own process group, which is killed as a whole on timeout: a hung ssh
client or a stuck ``sleep`` under a local script must not outlive the step. ``run_process`` does
that for every executor that starts a program, talosctl included.
"""

from __future__ import annotations

import json
import math
import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..load.facts import Facts
from ..run.credentials import DEFAULT_TOKEN_ENV, ENV_TOKEN_RE, CredentialError
from ..run.secrets import ChildEnvironment, Secret, scrub
from ..runbook.actions import Result, ShellCommand, StepFailed
from ..shell.programs import programs
from .base import Change, Progress, TokenProvider, not_installed
from .preview import shell_changes

STDERR_TAIL_LINES = 20
OUTPUT_LIMIT = 16 * 1024 * 1024  # bytes kept per stream; beyond this a runaway command only wastes memory
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL to a timed-out process group
REMOTE_GRACE = 1.0  # the node kills the script this long after we give up locally, so ours acts first
_PROGRESS_LINE_LIMIT = 64 * 1024  # a "line" without newline is cut here, so binary output cannot grow it
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class ProcessOutcome:
    """What a finished (or killed) child process left behind; output already has secrets masked."""

    exit_code: int | None  # None when the process group was killed on timeout
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    # On timeout: the main process had already exited, a background process it left kept the output open.
    exited_before_timeout: bool = False

    def data(self) -> dict[str, Any]:
        """The ``Result.data`` / ``StepFailed.data`` form the runner and ``extract`` see."""
        return {"stdout": self.stdout, "stderr": self.stderr, "exit_code": self.exit_code}

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last ``lines`` of stderr, indented, for a failure message; says so when empty."""
        tail = self.stderr.rstrip("\n").splitlines()[-lines:]
        if not tail:
            return "  (nothing on stderr)"
        return "\n".join("  " + line for line in tail)


class _Capture:
    """Collects one output stream (up to OUTPUT_LIMIT) and hands complete lines to ``progress``."""

    def __init__(self, progress: Progress | None, secrets: Sequence[Secret]):
        self._progress = progress
        self._secrets = secrets
        self._kept = bytearray()
        self._dropped = 0
        self._partial = b""

    def feed(self, data: bytes) -> None:
        room = OUTPUT_LIMIT - len(self._kept)
        self._kept += data[:room]
        self._dropped += max(0, len(data) - room)
        if self._progress is None:
            return
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        if len(self._partial) > _PROGRESS_LINE_LIMIT:
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            self._emit(line)

    def close(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""

    def _emit(self, line: bytes) -> None:
        assert self._progress is not None
        self._progress(scrub(line.decode(errors="replace").rstrip("\r"), *self._secrets))

    def text(self) -> str:
        text = self._kept.decode(errors="replace")
        if self._dropped:
            text += f"\n[runbook: {self._dropped} more bytes of output dropped]\n"
        return scrub(text, *self._secrets)


def run_process(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin_data: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    progress: Progress | None = None,
    secrets: Sequence[Secret] = (),
) -> ProcessOutcome:
    """Run ``argv`` (no shell) in a new process group, feeding ``stdin_data``, within ``timeout`` seconds.

    Reading both pipes and writing stdin through one selector loop avoids the classic deadlock of
    a child blocked on a full stdout pipe while we block writing its stdin, and lets output reach
    ``progress`` as it happens. On timeout, or when anything interrupts us (Ctrl-C included; the
    child's own session does not get the terminal's SIGINT), the whole group is killed. Raises
    ``OSError`` when the program cannot be started; callers turn that into their own message.
    """
    started = time.monotonic()
    deadline = started + timeout
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    captures = {proc.stdout.fileno(): _Capture(progress, secrets), proc.stderr.fileno(): _Capture(progress, secrets)}
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    timed_out = False
    exited_before_timeout = False
    try:
        with selectors.DefaultSelector() as selector:
            for fd in captures:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            pending = memoryview(stdin_data or b"")
            if proc.stdin is not None:
                if pending:
                    os.set_blocking(proc.stdin.fileno(), False)
                    selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
                else:
                    proc.stdin.close()
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _events in selector.select(remaining):
                    fd = key.fd
                    if fd in captures:
                        chunk = _read(fd)
                        if chunk is None:
                            continue
                        if chunk:
                            captures[fd].feed(chunk)
                        else:
                            selector.unregister(fd)
                            captures[fd].close()
                        continue
                    assert proc.stdin is not None
                    try:
                        pending = pending[os.write(fd, pending[:65536]) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # the child stopped reading: its exit status will tell why
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(fd)
                        proc.stdin.close()
        if not timed_out:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            exited_before_timeout = proc.poll() is not None
            _kill_group(proc)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return ProcessOutcome(
        exit_code=None if timed_out else proc.returncode,
        stdout=captures[out_fd].text(),
        stderr=captures[err_fd].text(),
        seconds=time.monotonic() - started,
        timed_out=timed_out,
        exited_before_timeout=exited_before_timeout,
    )


def _read(fd: int) -> bytes | None:
    """One chunk from a non-blocking pipe; None when it was not ready after all, b"" at EOF."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, give the child KILL_GRACE to exit, SIGKILL the group, reap.

    The group id is the child's pid (``start_new_session``). The final SIGKILL goes to the group
    even when the child exited on SIGTERM, for members that ignore it. Waiting for the group itself
    to empty is not possible portably: members orphaned to an init that does not reap them stay
    in it as zombies.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    try:
        proc.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def masks(secrets: Iterable[Secret]) -> list[Secret]:
    """Every value to mask in a command's output for ``secrets``: each one whole, and for an API token
    handed over as ``user@realm!tokenid=secret`` its secret part alone too, since commands split it
    (Ansible's proxmox modules do, and so does ``${TOKEN#*=}``). The whole value comes first, so it
    is masked as one."""
    out: list[Secret] = []
    for secret in secrets:
        out.append(secret)
        token = ENV_TOKEN_RE.fullmatch(secret.reveal())
        if token:
            out.append(Secret(token["secret"]))
    return out


def _check_env(env: Mapping[str, object]) -> None:
    """Refuse names that are not shell identifiers and values with NUL, before anything starts.

    Names go into ``export NAME=...`` lines for ssh, so a name is the one place a rendered value
    could reach the shell unquoted.
    """
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise StepFailed(
                f"environment variable name {name!r} is not valid: use letters, digits and _, "
                "not starting with a digit",
                sent=False,
            )
        text = value.reveal() if isinstance(value, Secret) else str(value)
        if "\0" in text:
            raise StepFailed(
                f"environment variable {name} contains a NUL byte, which no process can receive", sent=False
            )


def _script_payload(script: str, exports: Mapping[str, str] | None = None) -> bytes:
    """What ``bash -s`` reads: ``set -eu``, exports, then the script as one brace group.

    bash reads a whole compound command before running it, so the group is parsed entirely first
    (a syntax error at the end runs nothing), and ``</dev/null`` gives the script's commands an
    empty stdin rather than the rest of the script. ``set -eu`` stays outside the group so the
    script cannot be parsed without it.
    """
    lines = ["set -eu"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in (exports or {}).items()]
    lines += ["{", script, "} </dev/null", ""]
    return "\n".join(lines).encode()


def _timeout_of(command: ShellCommand, default: float) -> float:
    timeout = command.timeout if command.timeout is not None else default
    if not timeout > 0:
        raise StepFailed(f"timeout must be a positive number of seconds, not {timeout!r}", sent=False)
    return timeout


def _seconds(value: float) -> str:
    """A duration as an operator reads it: ``1 s``, ``2.5 s``."""
    return f"{value:g} s"


class LocalExecutor:
    """Runs ``ShellCommand`` scripts (``node`` None) on this machine with ``bash -s``.

    ``token_source`` gives the API token to a command that asks for it (``token_env``); it is
    asked at each such command, never before, so a run whose commands need no token needs none.
    """

    kind = "local"

    def __init__(
        self,
        default_timeout: float = 600,
        *,
        token_source: TokenProvider | None = None,
        environment: ChildEnvironment | None = None,
    ):
        self.default_timeout = default_timeout
        self.token_source = token_source
        self.environment = environment or ChildEnvironment([DEFAULT_TOKEN_ENV])

    def execute(self, command: ShellCommand, progress: Progress | None = None) -> Result:
        """Run the script, with the API token in ``command.token_env`` when it asks for it."""
        secret_env = {command.token_env: self._token_value()} if command.token_env else {}
        return self.run(command, progress, secret_env=secret_env)

    def missing(self, command: ShellCommand) -> list[str]:
        """bash, and every program the script names that is not on the PATH it will run with."""
        path = {**self.environment(), **command.env}.get("PATH", os.defpath)
        return not_installed(["bash", *programs(command.script)], path)

    def preview(self, command: ShellCommand, facts: Facts) -> list[Change]:
        return shell_changes(command, facts)

    def close(self) -> None:
        """Nothing to release: every script is its own process, ended when it returns."""

    def _token_value(self) -> Secret:
        """The API token as ``user@realm!tokenid=secret`` (the form Ansible's PROXMOX_API_TOKEN takes)."""
        if self.token_source is None:
            raise StepFailed("the command asks for the API token, but this executor was given none", sent=False)
        try:
            token = self.token_source.get()
        except CredentialError as exc:
            raise StepFailed(f"cannot get the Proxmox VE API token for the command: {exc}", sent=False) from None
        return Secret(f"{token.token_id}={token.secret.reveal()}")

    def run(
        self,
        command: ShellCommand,
        progress: Progress | None = None,
        *,
        secret_env: Mapping[str, Secret] | None = None,
    ) -> Result:
        """Run the script; ``command.env`` and ``secret_env`` reach only the child's environment.

        ``execute`` is the executor's interface; this is the transport under it, for a caller
        that holds the secrets itself. ``secret_env`` holds values resolved at the moment of use
        (never stored in the action); they are masked in the output, the progress lines and any
        failure message.
        """
        if command.node is not None:
            # One action type serves both executors; a node's script must never run here by mistake.
            raise StepFailed(f"a script for node {command.node} was given to the local executor", sent=False)
        secret_env = secret_env or {}
        _check_env(command.env)
        _check_env(secret_env)
        timeout = _timeout_of(command, self.default_timeout)
        env = self.environment({**command.env, **{k: v.reveal() for k, v in secret_env.items()}})
        try:
            outcome = run_process(
                ["bash", "-s"],
                timeout=timeout,
                stdin_data=_script_payload(command.script),
                env=env,
                progress=progress,
                secrets=masks(secret_env.values()),
            )
        except OSError as exc:
            raise StepFailed(f"could not start bash for a local script: {exc}", sent=False) from None
        if outcome.timed_out:
            raise StepFailed(_timeout_message("local script", timeout, outcome), data=outcome.data())
        if outcome.exit_code != 0:
            raise StepFailed(
                f"local script exited with {outcome.exit_code}; stderr:\n{outcome.stderr_tail()}",
                data=outcome.data(),
            )
        return Result(data=outcome.data(), summary=f"local script done in {_seconds(round(outcome.seconds, 1))}")


class SshExecutor:
    """Runs ``ShellCommand`` scripts on cluster nodes with the system OpenSSH client.

    The real ``ssh`` keeps everything operators already rely on: their ``~/.ssh/config`` (or
    ``ssh_config``), their agent, known_hosts checking. ``BatchMode`` makes every question
    (passphrase, unknown host key) a failure instead of a prompt nobody sees.
    """

    kind = "ssh"

    def __init__(
        self,
        hosts: Mapping[str, str],
        user: str,
        *,
        ssh_config: str | None = None,
        connect_timeout: float = 10,
        default_timeout: float = 600,
        environment: ChildEnvironment | None = None,
    ):
        self.hosts = dict(hosts)
        self.user = user
        self.ssh_config = ssh_config
        self.connect_timeout = connect_timeout
        self.default_timeout = default_timeout
        # The ssh client's own environment: it forwards none by default, but a user's SendEnv may.
        self.environment = environment or ChildEnvironment([DEFAULT_TOKEN_ENV])

    def execute(self, command: ShellCommand, progress: Progress | None = None) -> Result:
        """Run the script on ``command.node``. The API token is handed to local commands only."""
        if command.token_env:
            raise StepFailed(
                f"a script for node {command.node} asks for the API token, which only local commands get", sent=False
            )
        return self.run(command, progress)

    def missing(self, command: ShellCommand) -> list[str]:
        """The OpenSSH client; what the script runs on the node cannot be known from here."""
        return not_installed(["ssh"], self.environment().get("PATH", os.defpath))

    def preview(self, command: ShellCommand, facts: Facts) -> list[Change]:
        return shell_changes(command, facts)

    def close(self) -> None:
        """Nothing to release: every script is its own ssh process, ended when it returns."""

    def host_of(self, node: str | None) -> str:
        """The host for ``node``; StepFailed (never sent) naming the known nodes otherwise."""
        if node is None:
            raise StepFailed("an ssh step needs a node to run on, and none was given", sent=False)
        try:
            return self.hosts[node]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise StepFailed(
                f"unknown node {node!r}; known nodes: {known} (cluster.nodes in cluster-config.yaml)",
                sent=False,
            ) from None

    def argv(self, command: ShellCommand) -> list[str]:
        """The ssh command line for ``command``: it names the host and a time limit, never the script or env.

        ``--`` keeps a host or user starting with ``-`` from being read as an option. ``-T`` and
        ``-e none`` keep a user's ``RequestTTY`` from echoing the payload back and the payload
        from being read as escape sequences. ServerAlive notices a node that vanished mid-script
        in a minute rather than at the step's timeout. On the node, coreutils ``timeout`` ends the
        script REMOTE_GRACE after we stop waiting locally: killing our ssh client alone would
        leave the script running there, and a retry could then run it twice at once.
        """
        host = self.host_of(command.node)
        timeout = _timeout_of(command, self.default_timeout)
        argv = ["ssh"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        argv += [
            "-T",
            "-e",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "--",
            f"{self.user}@{host}",
            f"timeout --kill-after={KILL_GRACE:g} {timeout + REMOTE_GRACE:g} bash -s",
        ]
        return argv

    def run(
        self,
        command: ShellCommand,
        progress: Progress | None = None,
        *,
        secret_env: Mapping[str, Secret] | None = None,
    ) -> Result:
        """Run the script on ``command.node``; ``command.env`` and ``secret_env`` are exported in it.

        ``execute`` is the executor's interface; this is the transport under it, for a caller
        that holds the secrets itself.

        The exports travel on stdin with the script, so neither a value nor a secret is in any
        argument list, here or on the node. Secrets are masked in output and messages.
        """
        secret_env = secret_env or {}
        _check_env(command.env)
        _check_env(secret_env)
        argv = self.argv(command)
        host = self.host_of(command.node)
        timeout = _timeout_of(command, self.default_timeout)
        exports = {**command.env, **{k: v.reveal() for k, v in secret_env.items()}}
        try:
            outcome = run_process(
                argv,
                timeout=timeout,
                stdin_data=_script_payload(command.script, exports),
                env=self.environment(),
                progress=progress,
                secrets=masks(secret_env.values()),
            )
        except OSError as exc:
            raise StepFailed(
                f"could not start ssh ({exc}); is the OpenSSH client installed and on PATH?", sent=False
            ) from None
        where = f"node {command.node} ({self.user}@{host})"
        if outcome.timed_out:
            raise StepFailed(
                _timeout_message(
                    f"script on {where}",
                    timeout,
                    outcome,
                    f" On the node, timeout(1) ends it {_seconds(REMOTE_GRACE)} later.",
                ),
                data=outcome.data(),
            )
        if outcome.exit_code == 255:
            raise self._ssh_failure(where, host, outcome)
        if outcome.exit_code != 0:
            raise StepFailed(
                f"script on {where} exited with {outcome.exit_code}; stderr:\n{outcome.stderr_tail()}",
                data=outcome.data(),
            )
        return Result(data=outcome.data(), summary=f"{command.node}: done in {_seconds(round(outcome.seconds, 1))}")

    def _ssh_failure(self, where: str, host: str, outcome: ProcessOutcome) -> StepFailed:
        """Explain exit 255: ssh's own failure when its stderr says so, else possibly the script's."""
        by_hand = f"ssh {'-F ' + shlex.quote(self.ssh_config) + ' ' if self.ssh_config else ''}{self.user}@{host} true"
        config = f"the ssh_config {self.ssh_config}" if self.ssh_config else "your ~/.ssh/config"
        problem, advice, retryable, sent = _classify_ssh_error(outcome.stderr)
        if problem is None:
            return StepFailed(
                f"ssh to {where} exited with 255: either ssh failed or the script itself exited 255; "
                f"try `{by_hand}` by hand; stderr:\n{outcome.stderr_tail()}",
                data=outcome.data(),
            )
        return StepFailed(
            f"ssh to {where} failed: {problem}. {advice.format(config=config, user=self.user, host=host)} "
            f"Try `{by_hand}` by hand.\nssh said:\n{outcome.stderr_tail()}",
            retryable=retryable,
            sent=sent,
            data=outcome.data(),
        )


# (pattern in ssh's stderr, problem, advice, retryable, sent). Patterns match ssh's own wording,
# anchored where possible, so a script's "Connection refused" with exit 255 is not mistaken for
# ssh's: ``sent=False`` promises the script never ran.
_SSH_ERRORS: tuple[tuple[re.Pattern[str], str, str, bool, bool], ...] = (
    (
        re.compile(r"^ssh: connect to host .*: Connection refused", re.M),
        "connection refused",
        "Nothing accepts SSH connections there: is sshd running on the node, and are the host and "
        "port right (cluster-config.yaml, {config})?",
        True,
        False,
    ),
    (
        re.compile(r"^ssh: connect to host .*: (Connection timed out|Operation timed out)", re.M),
        "the connection timed out",
        "Check the node is up and reachable from here (network, firewall, VPN).",
        True,
        False,
    ),
    (
        re.compile(r"^ssh: connect to host .*: (No route to host|Network is unreachable)", re.M),
        "the host is unreachable",
        "Check the node is up and reachable from here (network, firewall, VPN).",
        True,
        False,
    ),
    (
        re.compile(r"^ssh: Could not resolve hostname", re.M),
        "the host name does not resolve",
        "Check the node's host in cluster-config.yaml, DNS, and any Host entry in {config}.",
        False,
        False,
    ),
    (
        re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|^Host key verification failed", re.M),
        "host key verification failed",
        "The node's host key is not in known_hosts, or differs from the one recorded there. "
        "Connect once by hand and compare the fingerprint with the node's "
        "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on its console); if the node was "
        "reinstalled, remove the old key with `ssh-keygen -R {host}` first.",
        False,
        False,
    ),
    (
        re.compile(r"^\S+: Permission denied \(", re.M),
        "permission denied",
        "The node did not accept a key for user {user}: check credentials.ssh_user, that your "
        "agent holds the key (ssh-add -l) or {config} names it, and the node's authorized_keys.",
        False,
        False,
    ),
    (
        re.compile(
            r"^(Timeout, server .* not responding|Connection to .* closed by remote host|"
            r"client_loop: send disconnect)",
            re.M,
        ),
        "the connection was lost while the script ran; it may have partly run",
        "Check whether the node rebooted or the network dropped, and what the script did so far.",
        False,
        True,
    ),
)


def _classify_ssh_error(stderr: str) -> tuple[str | None, str, bool, bool]:
    """(problem, advice template, retryable, sent) for ssh's stderr; problem None when unrecognised."""
    for pattern, problem, advice, retryable, sent in _SSH_ERRORS:
        if pattern.search(stderr):
            return problem, advice, retryable, sent
    return None, "", False, True


def _timeout_message(what: str, timeout: float, outcome: ProcessOutcome, remote: str = "") -> str:
    why = (
        " It had exited, but a background process it started kept its output open."
        if outcome.exited_before_timeout
        else ""
    )
    return (
        f"{what} timed out after {_seconds(timeout)} and was killed (its whole process group).{remote}{why} "
        f"Raise the step's `timeout` if it needs longer. stderr so far:\n{outcome.stderr_tail()}"
    )


def parse_json_output(stdout: str) -> Any:
    """Parse a command's stdout as one JSON document, or as JSON lines (then a list of documents).

    Tools disagree: ``pvesh --output-format json`` prints one document, ``talosctl ... -o json``
    prints one per resource. Raises StepFailed naming the first line that is not JSON.
    """
    if not stdout.strip():
        raise StepFailed("expected JSON on stdout, but the command printed nothing")
    try:
        return json.loads(stdout)
    except json.JSONDecodeError as whole_error:
        documents = []
        for number, line in enumerate(stdout.splitlines(), 1):
            if not line.strip():
                continue
            try:
                documents.append(json.loads(line))
            except json.JSONDecodeError as error:
                excerpt = line.strip()[:80]
                raise StepFailed(
                    f"stdout is not JSON, neither one document ({whole_error.msg} at line "
                    f"{whole_error.lineno} column {whole_error.colno}) nor one document per line "
                    f"(line {number}: {error.msg}: {excerpt!r})"
                ) from None
        return documents
