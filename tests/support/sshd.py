"""Throw-away OpenSSH server on loopback for integration tests.

Why this exists: the runbook engine talks to hosts by running the real
``ssh`` client (``ssh -F <ssh_config> -o BatchMode=yes pve01 'sh -c ...'``).
Mocking ``subprocess`` would not catch quoting, exit-status or host-key
problems, so the tests start a real ``sshd`` instead.  Everything it needs
(host key, client key, authorized_keys, known_hosts, configs, pid and log
file) lives in one temp dir, so nothing touches ``~/.ssh`` or ``/etc/ssh`` and
parallel sessions do not interfere.

The server runs as the *current* user (root in CI): sshd can only log in the
user it runs as unless it is root, and using the current user means no
account needs to be created.

Typical use::

    with running_sshd(tmp_path_factory.mktemp("sshd")) as srv:
        subprocess.run(srv.ssh_argv("pve01", "echo hello"), ...)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.tools import find_tool

__all__ = [
    "DEFAULT_ALIASES",
    "SshServer",
    "SshdError",
    "find_free_port",
    "find_sshd",
    "running_sshd",
    "start_sshd",
]

#: Host aliases written into the generated ssh_config; all point at the one
#: loopback server, which is enough to exercise multi-host fan-out.
DEFAULT_ALIASES: tuple[str, ...] = ("pve01", "pve02", "pve03")

#: Debian's sshd hard-codes this privilege-separation chroot dir and refuses
#: to start ("Missing privilege separation directory") when it is absent.  In
#: containers /run is a fresh tmpfs, so it usually is absent.
PRIVSEP_DIR = Path("/run/sshd")


class SshdError(RuntimeError):
    """sshd could not be started or did not become usable; message has the log."""


def find_sshd() -> str:
    """Return the absolute path of ``sshd``.

    sshd re-executes itself per connection and therefore insists on being
    started via an absolute path; /usr/sbin is often not on a non-root PATH.
    """
    for tool in ("ssh", "ssh-keygen"):
        find_tool(tool)
    return find_tool("sshd")


def find_free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently free TCP port on ``host``.

    There is an unavoidable race between closing this socket and sshd binding
    it; :func:`start_sshd` retries with a new port if sshd fails to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class SshServer:
    """A running throw-away sshd plus everything a client needs to reach it."""

    host: str
    port: int
    user: str
    #: Private key whose public half is in the server's authorized_keys.
    client_key: Path
    #: Client config (``ssh -F``) with one Host block per alias.
    ssh_config: Path
    #: Pre-populated with the server host key, so StrictHostKeyChecking=yes works.
    known_hosts: Path
    #: sshd's own config file (useful when debugging a failing test).
    sshd_config: Path
    #: sshd's stderr (``-e``); read it when a connection fails unexpectedly.
    log_file: Path
    workdir: Path
    aliases: tuple[str, ...]
    process: subprocess.Popen[bytes] = field(repr=False)
    #: Wall-clock seconds for the whole start_sshd() call (keygen, spawn,
    #: first successful login); informs fixture-scope decisions.
    startup_seconds: float = 0.0

    def ssh_argv(self, alias: str, command: str | Sequence[str] | None = None) -> list[str]:
        """Build the engine's argv: ``ssh -F cfg -o BatchMode=yes alias cmd``.

        ``command`` given as a sequence is shell-quoted into one string,
        because ssh joins its arguments with spaces and the remote shell
        re-parses them; passing one pre-quoted string avoids double parsing
        surprises.
        """
        argv = ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", alias]
        if command is not None:
            argv.append(command if isinstance(command, str) else shlex.join(command))
        return argv

    def run(
        self,
        command: str | Sequence[str],
        alias: str | None = None,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` via the real ssh client; never raises on exit status."""
        return subprocess.run(
            self.ssh_argv(alias or self.aliases[0], command),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def log_text(self) -> str:
        """Return sshd's log so far (empty string if unreadable)."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def is_running(self) -> bool:
        """True while the sshd listener process is alive."""
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the listener and every live session; idempotent.

        SIGTERM to the listener alone is not enough: each connection is
        served by a child that calls setsid() and survives the listener, so
        a test that left e.g. ``sleep 600`` running would leak it (and keep
        its ssh client hanging).  All descendants are therefore signalled
        too.  SIGKILL is the fallback so a stuck server never hangs the run.
        """
        if self.process.poll() is not None:
            return
        victims = _descendants(self.process.pid)
        self.process.terminate()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        for pid in victims:
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if _pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> SshServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _descendants(root: int) -> list[int]:
    """All live descendant pids of ``root`` (Linux /proc), parents first.

    Reading /proc avoids a psutil dependency; the tests only run on Linux.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm (field 2) may contain spaces/parens; ppid follows the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    result: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        result.append(pid)
        stack.extend(children.get(pid, []))
    return result


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def _keygen(path: Path, comment: str) -> None:
    """Create an unencrypted ed25519 key pair (fast, and accepted everywhere)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _ensure_privsep_dir() -> None:
    """Create /run/sshd if possible; only root's sshd needs it (it chroots there)."""
    if PRIVSEP_DIR.is_dir():
        return
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    except PermissionError:
        if os.geteuid() == 0:
            raise
        # Non-root sshd does not chroot into the privsep dir, so this is fine.


def _quote_cfg(value: Path | str) -> str:
    """Quote a path for ssh(d)_config, which splits on whitespace."""
    return '"' + str(value) + '"'


def _write_sshd_config(
    path: Path,
    *,
    port: int,
    host: str,
    host_key: Path,
    authorized_keys: Path,
    pid_file: Path,
    user: str,
) -> None:
    """Write a minimal, self-contained server config.

    Every security-relevant default is spelled out, so a distro-level
    /etc/ssh/sshd_config change (which we never read: ``-f`` replaces it)
    cannot alter behaviour.
    """
    lines = [
        f"Port {port}",
        f"ListenAddress {host}",
        f"HostKey {_quote_cfg(host_key)}",
        f"PidFile {_quote_cfg(pid_file)}",
        f"AuthorizedKeysFile {_quote_cfg(authorized_keys)}",
        # The temp dir belongs to us but its parents (/tmp) are world
        # writable, which StrictModes would reject.
        "StrictModes no",
        # No PAM: it would need a PAM stack/service and adds login-session noise.
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "AuthenticationMethods publickey",
        # Debian's default already allows root with keys; be explicit because
        # CI runs as root and a distro default of "no" would break everything.
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        # Keep remote output byte-exact for assertions.
        "PrintMotd no",
        "PrintLastLog no",
        "Banner none",
        # Loopback has no reverse DNS worth waiting for.
        "UseDNS no",
        # The default post-quantum sntrup761 key exchange costs ~0.1 s of CPU
        # per connection; engine tests open many connections.  Dropping it on
        # the server makes negotiation fall back to curve25519 without the
        # client config diverging from what production uses.
        "KexAlgorithms -sntrup761x25519-sha512*",
        # Tests may fan out to pve01..pve03 in parallel; the default 10:30:100
        # randomly drops concurrent unauthenticated connections.
        "MaxStartups 100",
        "MaxSessions 50",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "PermitUserEnvironment no",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _write_client_files(
    *,
    ssh_config: Path,
    known_hosts: Path,
    host_pubkey: Path,
    client_key: Path,
    host: str,
    port: int,
    user: str,
    aliases: Sequence[str],
) -> None:
    """Write the ``ssh -F`` config and a known_hosts that trusts our host key.

    The known_hosts line lists both ``[127.0.0.1]:port`` (what ssh looks up
    by default: the HostName) and ``[alias]:port`` so it still matches if a
    test sets HostKeyAlias or CheckHostIP.
    """
    keytype, keyb64 = host_pubkey.read_text().split()[:2]
    names = [f"[{host}]:{port}"] + [f"[{a}]:{port}" for a in aliases]
    known_hosts.write_text(f"{','.join(names)} {keytype} {keyb64}\n")
    known_hosts.chmod(0o600)

    blocks: list[str] = []
    for alias in aliases:
        blocks.append(
            "\n".join(
                [
                    f"Host {alias}",
                    f"    HostName {host}",
                    f"    Port {port}",
                    f"    User {user}",
                    f"    IdentityFile {_quote_cfg(client_key)}",
                    # Only our key: an ssh-agent in the developer's env could
                    # otherwise offer many keys and hit MaxAuthTries.
                    "    IdentitiesOnly yes",
                    "    IdentityAgent none",
                    f"    UserKnownHostsFile {_quote_cfg(known_hosts)}",
                    "    GlobalKnownHostsFile /dev/null",
                    "    StrictHostKeyChecking yes",
                    "    UpdateHostKeys no",
                    "    CheckHostIP no",
                    "    BatchMode yes",
                    "    PasswordAuthentication no",
                    "    KbdInteractiveAuthentication no",
                    "    ConnectTimeout 5",
                    "    ServerAliveInterval 5",
                    "    ServerAliveCountMax 3",
                    "    LogLevel ERROR",
                ]
            )
        )
    ssh_config.write_text("\n\n".join(blocks) + "\n")
    ssh_config.chmod(0o600)


def _wait_for_banner(host: str, port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Poll until sshd sends its ``SSH-2.0-`` banner; False if sshd died.

    A bare TCP connect is not enough: the banner proves sshd (not some other
    process that grabbed the port in the race) is answering.
    """
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.settimeout(1.0)
                if s.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def _spawn(sshd: str, config: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``sshd -D -e -f config`` in the foreground, logging to ``log_file``.

    stderr goes to a file, not a pipe: an unread pipe would eventually fill
    and block sshd mid-test.  ``start_new_session`` keeps Ctrl-C in the test
    runner from killing sshd before our orderly stop().
    """
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def start_sshd(
    workdir: Path,
    aliases: Sequence[str] = DEFAULT_ALIASES,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    verify_login: bool = True,
    port_attempts: int = 5,
) -> SshServer:
    """Start a throw-away sshd for the current user; caller must ``stop()`` it.

    ``workdir`` should be an empty, private temp dir (e.g. from
    ``tmp_path_factory.mktemp``).  With ``verify_login`` a real
    ``ssh ... true`` is run before returning, so a broken setup fails here
    with sshd's log instead of as a confusing engine test failure.
    """
    t_start = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    sshd = find_sshd()
    _ensure_privsep_dir()

    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        # Containers run with an arbitrary uid sometimes; sshd looks the
        # login user up in passwd and would reject every connection.
        raise SshdError(f"uid {os.geteuid()} has no passwd entry; sshd cannot log it in") from None

    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "id_ed25519"
    authorized_keys = workdir / "authorized_keys"
    known_hosts = workdir / "known_hosts"
    ssh_config = workdir / "ssh_config"
    sshd_config = workdir / "sshd_config"
    pid_file = workdir / "sshd.pid"
    log_file = workdir / "sshd.log"

    if not host_key.exists():
        _keygen(host_key, "runbook-test-host")
    if not client_key.exists():
        _keygen(client_key, "runbook-test-client")
    shutil.copyfile(client_key.with_suffix(".pub"), authorized_keys)
    authorized_keys.chmod(0o600)

    last_log = ""
    for _attempt in range(port_attempts):
        port = find_free_port(host)
        _write_sshd_config(
            sshd_config,
            port=port,
            host=host,
            host_key=host_key,
            authorized_keys=authorized_keys,
            pid_file=pid_file,
            user=user,
        )
        _write_client_files(
            ssh_config=ssh_config,
            known_hosts=known_hosts,
            host_pubkey=host_key.with_suffix(".pub"),
            client_key=client_key,
            host=host,
            port=port,
            user=user,
            aliases=aliases,
        )
        t0 = time.monotonic()
        proc = _spawn(sshd, sshd_config, log_file)
        server = SshServer(
            host=host,
            port=port,
            user=user,
            client_key=client_key,
            ssh_config=ssh_config,
            known_hosts=known_hosts,
            sshd_config=sshd_config,
            log_file=log_file,
            workdir=workdir,
            aliases=tuple(aliases),
            process=proc,
        )
        if _wait_for_banner(host, port, proc, t0 + timeout):
            break
        # Either sshd died (port stolen in the race, bad config) or hung.
        server.stop()
        last_log = server.log_text()
        if "Address already in use" not in last_log:
            raise SshdError(f"sshd did not start on {host}:{port}; log:\n{last_log}")
    else:
        raise SshdError(f"sshd could not bind a port after {port_attempts} tries; log:\n{last_log}")

    if verify_login:
        try:
            probe = server.run("true", timeout=timeout)
        except subprocess.TimeoutExpired:
            server.stop()
            raise SshdError(f"ssh login probe timed out; sshd log:\n{server.log_text()}") from None
        if probe.returncode != 0:
            server.stop()
            raise SshdError(
                f"ssh login probe failed (rc={probe.returncode}): "
                f"{probe.stderr.strip()}\n"
                "hint: sshd refuses a locked account ('!' in /etc/shadow) "
                "when UsePAM=no\n"
                f"sshd log:\n{server.log_text()}"
            )
    server.startup_seconds = time.monotonic() - t_start
    return server


@contextlib.contextmanager
def running_sshd(
    workdir: Path,
    aliases: Sequence[str] = DEFAULT_ALIASES,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
) -> Iterator[SshServer]:
    """Context manager around :func:`start_sshd` that always stops the server."""
    server = start_sshd(workdir, aliases=aliases, host=host, timeout=timeout)
    try:
        yield server
    finally:
        server.stop()
