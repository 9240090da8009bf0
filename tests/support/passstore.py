"""Throw-away ``pass`` password store with its own GnuPG home for tests.

Why this exists: runbook reads API tokens with the real ``pass show`` (a
multi-line entry: line 1 the token id such as ``root@pam!runbook``, line 2
the secret).  Faking ``pass`` would hide the things that break in practice:
gpg-agent start-up, pinentry prompts in non-interactive runs, trailing
newlines.  So the tests build a real store encrypted to a real, throw-away,
passphrase-less GPG key and never touch the developer's ``~/.gnupg`` or
``~/.password-store``.

Isolation is done purely with environment variables (GNUPGHOME,
PASSWORD_STORE_DIR, ...): every subprocess that should see the test store
must be given :attr:`PassStore.env` (or :meth:`PassStore.full_env`).

Pitfall handled here: gpg-agent puts its sockets in GNUPGHOME when
/run/user/<uid> does not exist (typical in containers), and a Unix socket
path is limited to ~107 bytes.  pytest's tmp_path can be longer than that, in
which case gpg fails with confusing "can't connect to the agent" errors.  A
short directory under /tmp is used as GNUPGHOME in that case.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.tools import find_tool

__all__ = [
    "DEFAULT_UID",
    "PassStore",
    "PassStoreError",
    "create_pass_store",
    "pass_store",
]

DEFAULT_UID = "runbook test <runbook-test@example.invalid>"

#: Longest GNUPGHOME we accept before switching to a short /tmp dir.  The
#: longest agent socket name is "S.gpg-agent.browser" (19 chars); sun_path is
#: 108 bytes including the NUL, so leave a comfortable margin.
_MAX_GNUPGHOME_LEN = 80

#: ed25519 (sign) + cv25519 (encrypt): generation takes milliseconds, unlike
#: RSA which can stall on entropy in fresh containers.
_KEY_PARAMS_ECC = """\
%no-protection
Key-Type: eddsa
Key-Curve: ed25519
Key-Usage: sign
Subkey-Type: ecdh
Subkey-Curve: cv25519
Subkey-Usage: encrypt
Name-Real: {name}
Name-Email: {email}
Expire-Date: 0
%commit
"""

#: Fallback for GnuPG builds without ECC support.
_KEY_PARAMS_RSA = """\
%no-protection
Key-Type: RSA
Key-Length: 2048
Key-Usage: sign
Subkey-Type: RSA
Subkey-Length: 2048
Subkey-Usage: encrypt
Name-Real: {name}
Name-Email: {email}
Expire-Date: 0
%commit
"""


class PassStoreError(RuntimeError):
    """gpg or pass failed; the message includes their stderr."""


@dataclass
class PassStore:
    """A ready-to-use password store plus the environment that selects it."""

    gnupghome: Path
    store_dir: Path
    #: Full fingerprint of the throw-away key (what ``pass init`` was given).
    key_id: str
    #: Only the variables that select/tame this store; merge into os.environ
    #: (or use :meth:`full_env`) for subprocesses, or monkeypatch.setenv each.
    env: dict[str, str]
    #: Wall-clock seconds for key generation + ``pass init``.
    startup_seconds: float = 0.0
    #: Set when GNUPGHOME is a short /tmp dir we created and must delete.
    _owned_dir: Path | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def full_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return ``base`` (default os.environ) overlaid with :attr:`env`.

        Variables that could make gpg try to reach a terminal or an X/Wayland
        pinentry (GPG_TTY, DISPLAY, WAYLAND_DISPLAY) are dropped so a test can
        never block waiting for a passphrase dialog.
        """
        merged = dict(os.environ if base is None else base)
        for var in ("GPG_TTY", "DISPLAY", "WAYLAND_DISPLAY", "GPG_AGENT_INFO"):
            merged.pop(var, None)
        merged.update(self.env)
        return merged

    def _run(
        self, argv: Sequence[str], input: str | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return _run(argv, self.full_env(), input=input, timeout=timeout)

    def insert(self, path: str, content: str | Sequence[str]) -> None:
        """Store ``content`` at ``path`` exactly like ``pass insert -m -f``.

        ``-m`` reads the whole of stdin (multi-line); ``-f`` skips the
        "overwrite?" question, which would otherwise consume stdin.  A
        sequence is joined with newlines; a trailing newline is added because
        that is what a user typing the entry produces.
        """
        text = content if isinstance(content, str) else "\n".join(content)
        if not text.endswith("\n"):
            text += "\n"
        self._run(["pass", "insert", "-m", "-f", path], input=text)

    def show(self, path: str) -> str:
        """Return ``pass show path`` output verbatim (including final newline)."""
        return self._run(["pass", "show", path]).stdout

    def stop(self) -> None:
        """Kill this GNUPGHOME's gpg-agent (and any dirmngr); idempotent.

        gpg auto-starts an agent per GNUPGHOME that outlives the test run and
        keeps its socket dir busy; without this every session leaks one.
        """
        if self._stopped:
            return
        self._stopped = True
        if shutil.which("gpgconf"):
            subprocess.run(
                ["gpgconf", "--kill", "all"],
                env=self.full_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=15,
                check=False,
            )
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)

    def __enter__(self) -> PassStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _run(
    argv: Sequence[str],
    env: Mapping[str, str],
    input: str | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run a gpg/pass command non-interactively; raise PassStoreError on failure.

    stdin is always provided (DEVNULL if no input) so nothing can ever wait
    on the test runner's terminal.
    """
    try:
        proc = subprocess.run(
            list(argv),
            env=dict(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise PassStoreError(f"{argv[0]} timed out (pinentry waiting?): {list(argv)}") from exc
    if proc.returncode != 0:
        raise PassStoreError(
            f"{list(argv)} failed with rc={proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def _pick_gnupghome(workdir: Path) -> tuple[Path, Path | None]:
    """Return (GNUPGHOME, dir-to-delete-on-stop) honouring the socket length limit."""
    candidate = workdir / "gnupg"
    if len(str(candidate)) <= _MAX_GNUPGHOME_LEN:
        return candidate, None
    short = Path(tempfile.mkdtemp(prefix="rbgpg-", dir="/tmp"))
    return short, short


def _write_gpg_confs(gnupghome: Path) -> None:
    """Configure gpg/gpg-agent so no pinentry is ever launched.

    The key has no passphrase, so pinentry should never be needed; loopback
    mode turns any unexpected passphrase request into an immediate error
    instead of a hang on a missing tty.
    """
    (gnupghome / "gpg.conf").write_text(
        "pinentry-mode loopback\nno-greeting\nno-permission-warning\ntrust-model always\n"
    )
    (gnupghome / "gpg-agent.conf").write_text(
        "allow-loopback-pinentry\n"
        # Cache forever: no re-prompt mid-session (moot without passphrase).
        "default-cache-ttl 86400\nmax-cache-ttl 86400\n"
    )


def _generate_key(env: Mapping[str, str], uid: str) -> str:
    """Generate a passphrase-less key pair and return its fingerprint."""
    name, _, rest = uid.partition(" <")
    email = rest.rstrip(">") or "runbook-test@example.invalid"
    last_error: PassStoreError | None = None
    for template in (_KEY_PARAMS_ECC, _KEY_PARAMS_RSA):
        try:
            _run(
                ["gpg", "--batch", "--gen-key"],
                env,
                input=template.format(name=name, email=email),
                timeout=120,
            )
            break
        except PassStoreError as exc:  # e.g. gpg without ECC: try RSA
            last_error = exc
    else:
        assert last_error is not None
        raise last_error
    listing = _run(["gpg", "--batch", "--with-colons", "--list-secret-keys", "--fingerprint"], env).stdout
    for line in listing.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    raise PassStoreError(f"no fingerprint found after key generation:\n{listing}")


def create_pass_store(
    workdir: Path,
    uid: str = DEFAULT_UID,
    entries: Mapping[str, str | Sequence[str]] | None = None,
) -> PassStore:
    """Create GNUPGHOME, key and initialised store; caller must ``stop()``.

    ``entries`` is an optional ``{path: content}`` map inserted right away,
    handy for session fixtures.  GNUPGHOME moves to a short /tmp dir when
    ``workdir`` is too deep for gpg-agent's socket paths.
    """
    for tool in ("gpg", "gpgconf", "pass"):
        find_tool(tool)
    t0 = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    gnupghome, owned = _pick_gnupghome(workdir)
    gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
    gnupghome.chmod(0o700)  # gpg warns (and agent may refuse) on looser modes
    _write_gpg_confs(gnupghome)
    store_dir = workdir / "password-store"

    env = {
        "GNUPGHOME": str(gnupghome),
        "PASSWORD_STORE_DIR": str(store_dir),
        # Neutralise developer settings that would change pass' behaviour:
        # a signing key makes pass demand signed .gpg-id files, extensions
        # could shadow commands, extra gpg opts could re-enable prompts.
        "PASSWORD_STORE_SIGNING_KEY": "",
        "PASSWORD_STORE_GPG_OPTS": "",
        "PASSWORD_STORE_ENABLE_EXTENSIONS": "false",
        "PASSWORD_STORE_KEY": "",
        # Keep gpg output parseable regardless of the caller's locale.
        "LC_ALL": "C.UTF-8",
    }
    store = PassStore(gnupghome=gnupghome, store_dir=store_dir, key_id="", env=env, _owned_dir=owned)
    try:
        base_env = store.full_env()
        store.key_id = _generate_key(base_env, uid)
        _run(["pass", "init", store.key_id], base_env)
        for path, content in (entries or {}).items():
            store.insert(path, content)
    except BaseException:
        store.stop()
        raise
    store.startup_seconds = time.monotonic() - t0
    return store


@contextlib.contextmanager
def pass_store(
    workdir: Path,
    uid: str = DEFAULT_UID,
    entries: Mapping[str, str | Sequence[str]] | None = None,
) -> Iterator[PassStore]:
    """Context manager around :func:`create_pass_store` that always kills the agent."""
    store = create_pass_store(workdir, uid=uid, entries=entries)
    try:
        yield store
    finally:
        store.stop()
