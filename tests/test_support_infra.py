"""Prove the real-infrastructure test helpers work before engine tests rely on them.

If these fail, every engine test that talks to "pve01" or reads a token from
``pass`` would fail in confusing ways; these tests pin the failure to the
environment (missing packages, sshd refusing root, gpg-agent socket paths...)
instead.  ``bash tests/run.sh`` installs the system packages first.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.passstore import PassStore, create_pass_store, pass_store
from tests.support.sshd import SshServer, find_free_port, running_sshd, start_sshd

TOKEN_ID = "root@pam!runbook"
TOKEN_SECRET = "0b5c6f8e-1111-2222-3333-444455556666"
ENTRY = "proxmox/pve01/api-token"


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd per session: starting it costs keygen + spawn (~0.3 s)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def password_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    """One store per session with the API token entry the engine expects."""
    store = create_pass_store(tmp_path_factory.mktemp("pass"), entries={ENTRY: [TOKEN_ID, TOKEN_SECRET]})
    try:
        yield store
    finally:
        store.stop()


def _ssh(
    server: SshServer, alias: str, remote: str, *extra: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the exact command form the engine will use, plus optional ssh options."""
    argv = [
        "ssh",
        "-F",
        str(server.ssh_config),
        "-o",
        "BatchMode=yes",
        *extra,
        alias,
        remote,
    ]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------
# sshd


def test_ssh_echo_hello_exact_engine_form(sshd_server: SshServer) -> None:
    result = _ssh(sshd_server, "pve01", "sh -c 'echo hello'")
    assert result.returncode == 0, result.stderr + sshd_server.log_text()
    assert result.stdout == "hello\n"
    assert result.stderr == ""


@pytest.mark.parametrize("alias", ["pve01", "pve02", "pve03"])
def test_every_alias_reaches_server_as_current_user(sshd_server: SshServer, alias: str) -> None:
    result = _ssh(sshd_server, alias, "sh -c 'id -un'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sshd_server.user


def test_remote_exit_status_and_stderr_propagate(sshd_server: SshServer) -> None:
    # The engine decides success from ssh's exit status; ssh must relay it.
    result = _ssh(sshd_server, "pve01", "sh -c 'echo out; echo err >&2; exit 7'")
    assert result.returncode == 7
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_quoted_script_survives_round_trip(sshd_server: SshServer) -> None:
    script = """printf '%s|' "$1" "$2"; echo"""
    remote = shlex.join(["sh", "-c", script, "sh", "two words", "it's $HOME"])
    result = _ssh(sshd_server, "pve02", remote)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "two words|it's $HOME|\n"


def test_stdin_is_forwarded(sshd_server: SshServer) -> None:
    result = _ssh(sshd_server, "pve03", "sh -c 'wc -l'", input="a\nb\nc\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


def test_parallel_connections_to_all_aliases(sshd_server: SshServer) -> None:
    procs = [
        subprocess.Popen(
            sshd_server.ssh_argv(alias, f"sh -c 'echo {alias}-{i}'"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
        for alias in sshd_server.aliases
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(outputs) == sorted(f"{a}-{i}" for i in range(4) for a in sshd_server.aliases)


def test_strict_host_key_checking_is_really_enforced(sshd_server: SshServer, tmp_path: Path) -> None:
    # Point a copy of the client config at a known_hosts holding a *different*
    # key: if ssh still connected, the pre-populated file would prove nothing.
    other_key = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)],
        check=True,
    )
    keytype, b64 = other_key.with_suffix(".pub").read_text().split()[:2]
    bad_known = tmp_path / "known_hosts"
    bad_known.write_text(f"[{sshd_server.host}]:{sshd_server.port} {keytype} {b64}\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshd_server.ssh_config.read_text().replace(str(sshd_server.known_hosts), str(bad_known)))
    result = subprocess.run(
        ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "pve01", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_connection_to_closed_port_fails_with_message(sshd_server: SshServer) -> None:
    closed = find_free_port()  # nothing listens here
    result = _ssh(
        sshd_server,
        "pve01",
        "sh -c 'echo hello'",
        "-p",
        str(closed),
        "-o",
        "ConnectTimeout=5",
    )
    assert result.returncode == 255  # ssh's own failures are always 255
    assert result.stdout == ""
    assert "Connection refused" in result.stderr
    assert str(closed) in result.stderr


def test_stop_closes_listener_and_context_manager(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_sshd(tmp_path_factory.mktemp("sshd-cm"), aliases=("pve09",)) as server:
        assert server.run("echo up").stdout == "up\n"
        port = server.port
        # A session still running at stop() must be torn down, not leaked.
        lingering = subprocess.Popen(
            server.ssh_argv("pve09", "sh -c 'echo started; sleep 600'"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert lingering.stdout is not None and lingering.stdout.readline() == "started\n"
    assert not server.is_running()
    assert lingering.wait(timeout=10) == 255
    lingering.communicate()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server.stop()  # idempotent


def test_sshd_startup_time_is_reasonable(sshd_server: SshServer) -> None:
    # Documented for fixture-scope decisions; generous bound to avoid flakes.
    assert 0 < sshd_server.startup_seconds < 10


# --------------------------------------------------------------------------
# pass


def test_pass_show_returns_both_lines(password_store: PassStore) -> None:
    # Fresh session + no stdin: proves no tty/pinentry is needed.
    result = subprocess.run(
        ["pass", "show", ENTRY],
        env=password_store.full_env(),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [TOKEN_ID, TOKEN_SECRET]
    assert password_store.show(ENTRY) == f"{TOKEN_ID}\n{TOKEN_SECRET}\n"


def test_pass_entry_is_really_encrypted(password_store: PassStore) -> None:
    blob = (password_store.store_dir / f"{ENTRY}.gpg").read_bytes()
    assert TOKEN_SECRET.encode() not in blob
    gpg_id = (password_store.store_dir / ".gpg-id").read_text().strip()
    assert gpg_id == password_store.key_id


def test_pass_insert_overwrite_and_missing_entry(password_store: PassStore) -> None:
    password_store.insert("tmp/x", "first")
    password_store.insert("tmp/x", ["second", "line"])
    assert password_store.show("tmp/x") == "second\nline\n"
    missing = subprocess.run(
        ["pass", "show", "does/not/exist"],
        env=password_store.full_env(),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert missing.returncode != 0
    assert "not in the password store" in missing.stderr


def test_env_does_not_point_at_real_home(password_store: PassStore) -> None:
    home = Path.home()
    for var in ("GNUPGHOME", "PASSWORD_STORE_DIR"):
        assert not Path(password_store.env[var]).is_relative_to(home)


def test_stop_kills_agent_and_long_workdir_uses_short_gnupghome(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    deep = tmp_path_factory.mktemp("pass-deep") / ("d" * 60) / ("e" * 60)
    with pass_store(deep, entries={"k": ["a", "b"]}) as store:
        assert len(str(store.gnupghome)) < 80
        assert store.show("k") == "a\nb\n"
        sock = subprocess.run(
            ["gpgconf", "--list-dirs", "agent-socket"],
            env=store.full_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert os.path.exists(sock)
    # Agent gone (socket removed) and our short GNUPGHOME cleaned up.
    deadline = time.monotonic() + 5
    while os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(sock)
    assert not store.gnupghome.exists()
    store.stop()  # idempotent


def test_pass_startup_time_is_reasonable(password_store: PassStore) -> None:
    assert 0 < password_store.startup_seconds < 30


def test_a_missing_tool_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.tools import find_tool

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-tool is not installed .*bash tests/run.sh"):
        find_tool("no-such-tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run every test"):
        find_tool("no-such-tool")


def test_install_tools_says_what_to_install_where_it_cannot(tmp_path: Path) -> None:
    """On a machine without apt-get (or rights), the script names the command; CI=true makes it fail."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "grep", "sed", "cat"):  # what the script itself uses; no apt-get, no chromium
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    script = Path(__file__).resolve().parent / "install-tools.sh"

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir / "bash"), str(script)], env={"PATH": str(bin_dir), **env}, capture_output=True, text=True
        )

    local = run()
    assert local.returncode == 0, local.stderr
    assert "cannot install the test tools here (no apt-get on this machine)" in local.stderr
    assert "chromium (Debian package chromium)" in local.stderr
    assert "sudo apt-get update && sudo apt-get install -y --no-install-recommends openssh-server" in local.stderr
    assert "will be skipped" in local.stderr
    ci = run(CI="true")
    assert ci.returncode == 1 and "CI=true, so a missing tool is a failure, not a skip" in ci.stderr
