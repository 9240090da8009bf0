"""The Proxmox VE API token: where it comes from, and how it stays out of every message.

The token is read at the moment of use: from the environment variable named by
``credentials.token_env`` when it is set (CI, automation), else from the ``pass`` entry named by
``credentials.pass_path`` (line 1 the token id, line 2 the secret). Nothing caches it between
calls: ``pass show`` costs about 25 ms, which is noise next to any API call, and re-reading means
a token rotated or a store locked mid-run takes effect at once.

Every error says what to do and never contains the secret, nor anything that might be it: a
malformed environment value is described, never echoed, and ``pass``'s stderr is scrubbed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import exitcodes
from ..errors import RunbookError
from .secrets import Secret, scrub

DEFAULT_TOKEN_ENV = "PROXMOX_API_TOKEN"
#: Seconds ``pass show`` may take; long enough for a person to answer a pinentry prompt.
PASS_TIMEOUT = 60.0

# PVE's own rules: user ``[^\s:/]+``, realm and token name start with a letter.
_TOKEN_ID = r"[^\s:/]+@[A-Za-z][A-Za-z0-9._-]*![A-Za-z][A-Za-z0-9._-]*"
TOKEN_ID_RE = re.compile(_TOKEN_ID)
ENV_TOKEN_RE = re.compile(rf"(?P<id>{_TOKEN_ID})=(?P<secret>\S+)")
#: The HTTP header's prefix, often pasted along with the token: PVE then answers 401, which says nothing.
_HEADER_PREFIX = re.compile(r"\s*(?:Authorization:\s*)?PVEAPIToken[=\s]", re.IGNORECASE)

_ENTRY_FORMAT = "line 1 the token id (user@realm!tokenid), line 2 the secret"
_BOOTSTRAP = (
    "the RBAC bootstrap creates the token on a node (`pveum user token add USER@REALM TOKENID` prints the secret once)"
)


class CredentialError(RunbookError):
    """The API token could not be obtained; the message says why and what to do, never the secret."""

    exit_code = exitcodes.FAILED


@dataclass(frozen=True)
class ApiToken:
    """A PVE API token. ``source`` says where it came from, for messages ("pass entry proxmox/lab/...")."""

    token_id: str
    secret: Secret
    source: str = ""

    def authorization(self) -> str:
        """The ``Authorization`` header value; call it only while building the request that sends it."""
        return f"PVEAPIToken={self.token_id}={self.secret.reveal()}"


def resolve_token(config_data: dict[str, Any], env: Mapping[str, str], *, timeout: float = PASS_TIMEOUT) -> ApiToken:
    """The token named by ``config_data['credentials']``: the environment variable if set, else ``pass``.

    ``env`` is both where the variable is looked up and the environment ``pass`` runs with (it needs
    GNUPGHOME, PASSWORD_STORE_DIR, the gpg-agent's variables...). Raises ``CredentialError``.
    """
    credentials = config_data["credentials"]
    var = credentials.get("token_env") or DEFAULT_TOKEN_ENV
    pass_path = credentials.get("pass_path")
    if var in env:
        return parse_env_token(env[var], var, pass_path)
    if not pass_path:
        raise CredentialError(
            f"no API token: environment variable {var} is not set, and cluster-config.yaml names no pass "
            f"entry (credentials.pass_path). Export {var}=user@realm!tokenid=secret, or add credentials.pass_path "
            f"naming a pass entry with {_ENTRY_FORMAT}."
        )
    return read_pass_token(pass_path, env, timeout=timeout)


def parse_env_token(value: str, var: str, pass_path: str | None) -> ApiToken:
    """Parse ``user@realm!tokenid=secret`` from variable ``var``; errors describe the value, never show it."""
    value = value.strip()
    match = ENV_TOKEN_RE.fullmatch(value)
    if match and not _HEADER_PREFIX.match(value):
        return ApiToken(match["id"], Secret(match["secret"]), f"environment variable {var}")
    if _HEADER_PREFIX.match(value):
        problem = "starts with 'PVEAPIToken=', the prefix of the HTTP Authorization header; leave it out"
    elif not value:
        problem = "is set but empty"
    elif "=" not in value:
        problem = "has no '=' between the token id and the secret"
    elif not TOKEN_ID_RE.fullmatch(value.partition("=")[0]):
        problem = "does not start with a token id of the form user@realm!tokenid"
    elif not value.partition("=")[2]:
        problem = "has nothing after the '='"
    else:
        problem = "has whitespace in the secret"
    otherwise = f"unset it to read the token from pass entry '{pass_path}'" if pass_path else "fix it"
    raise CredentialError(
        f"environment variable {var} {problem} (its value is not shown). Set it to "
        f"user@realm!tokenid=secret, e.g. runbook@pve!ci=<secret>, or {otherwise}."
    )


def read_pass_token(pass_path: str, env: Mapping[str, str], *, timeout: float = PASS_TIMEOUT) -> ApiToken:
    """Run ``pass show pass_path`` (no shell) and read the token id and secret from its two lines."""
    return _token_from_entry(pass_show(pass_path, env, "the API token", timeout=timeout), pass_path)


def read_pass_secret(pass_path: str, env: Mapping[str, str], *, timeout: float = PASS_TIMEOUT) -> Secret:
    """The first line of pass entry ``pass_path`` (pass's own convention: the password comes first)."""
    text = pass_show(pass_path, env, "the secret", timeout=timeout)
    first = text.splitlines()[0] if text.strip() else ""
    if not first:
        raise CredentialError(f"pass entry '{pass_path}' is empty: its first line must hold the secret.")
    return Secret(first)


def pass_show(pass_path: str, env: Mapping[str, str], what: str, *, timeout: float = PASS_TIMEOUT) -> str:
    """``pass show pass_path``'s output; every failure is a ``CredentialError`` saying what to do."""
    try:
        returncode, stdout, stderr = run_pass(("show", pass_path), env, timeout)
    except FileNotFoundError:
        raise CredentialError(
            f"pass is not installed (or not on PATH), so {what} in pass entry "
            f"'{pass_path}' cannot be read. Install it (Debian: apt install pass gnupg)"
            + (f", or set {DEFAULT_TOKEN_ENV}=user@realm!tokenid=secret." if what == "the API token" else ".")
        ) from None
    except subprocess.TimeoutExpired:
        raise CredentialError(
            f"`pass show {pass_path}` did not finish within {timeout:g} s; gpg is probably "
            f"waiting for the key's passphrase on a pinentry it cannot show. Unlock the key first "
            f"(run `pass show {pass_path}` in a terminal), then run again."
        ) from None
    if returncode != 0:
        # Whatever pass printed on stdout before failing must not leak through its stderr.
        stderr = scrub(stderr, *(Secret(line) for line in stdout.splitlines() if line.strip())).strip()
        if "is not in the password store" in stderr:
            store = (
                f"Store the API token there: {_BOOTSTRAP}; then `pass insert -m {pass_path}` with {_ENTRY_FORMAT}."
                if what == "the API token"
                else f"Store it there: `pass insert {pass_path}`."
            )
            raise CredentialError(f"pass entry '{pass_path}' does not exist. {store}")
        if "gpg:" in stderr:
            raise CredentialError(
                f"gpg could not decrypt pass entry '{pass_path}': {stderr}. Check that the "
                f"secret key the store is encrypted to is in this keyring (`gpg "
                f"--list-secret-keys`; GNUPGHOME selects the keyring) and that gpg-agent can ask "
                f"for its passphrase."
            )
        raise CredentialError(f"`pass show {pass_path}` failed (exit {returncode}): {stderr or 'no message'}")
    return stdout


def run_pass(
    args: Sequence[str], env: Mapping[str, str], timeout: float, stdin: str | None = None
) -> tuple[int, str, str]:
    """``pass ARGS`` (no shell; ``stdin`` its input) in its own process group, all of which is killed
    on timeout (``subprocess.TimeoutExpired`` is raised then).

    Killing only ``pass`` (a shell script) would leave its gpg holding the output pipes, and
    reading them would then wait as long as gpg does. The partial output of a killed run is
    dropped unread: it may hold the secret.
    """
    with subprocess.Popen(
        ["pass", *args],
        env=dict(env),
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return proc.returncode, stdout, stderr


def _token_from_entry(text: str, pass_path: str) -> ApiToken:
    """Check the entry's shape; no message quotes a line, since any line might be the secret."""
    lines = [line.strip() for line in text.splitlines()]
    while len(lines) > 2 and not lines[-1]:  # blank lines after the secret are harmless
        lines.pop()
    fix = f"Rewrite it with `pass insert -m -f {pass_path}`: {_ENTRY_FORMAT}."
    if len(lines) != 2:
        raise CredentialError(f"pass entry '{pass_path}' has {len(lines)} line(s); it must have exactly 2. {fix}")
    token_id, secret = lines
    if _HEADER_PREFIX.match(token_id):
        raise CredentialError(
            f"line 1 of pass entry '{pass_path}' starts with 'PVEAPIToken=', the prefix of the HTTP "
            f"Authorization header; leave it out. {fix}"
        )
    if not TOKEN_ID_RE.fullmatch(token_id):
        raise CredentialError(
            f"line 1 of pass entry '{pass_path}' is not a token id of the form "
            f"user@realm!tokenid (if '{pass_path}' is a folder, pass printed its listing). {fix}"
        )
    if not secret:
        raise CredentialError(f"pass entry '{pass_path}' has an empty secret on line 2. {fix}")
    if re.search(r"\s", secret):
        raise CredentialError(f"the secret on line 2 of pass entry '{pass_path}' contains whitespace. {fix}")
    return ApiToken(token_id, Secret(secret), f"pass entry '{pass_path}'")


class TokenSource:
    """Gives the API token at each use; ``get()`` re-reads it every time (no cache, see the module doc).

    ``env`` None means the process environment as it is at each ``get()``.
    """

    def __init__(
        self, config_data: dict[str, Any], env: Mapping[str, str] | None = None, *, timeout: float = PASS_TIMEOUT
    ):
        self._config = config_data
        self._env = env
        self._timeout = timeout

    def get(self) -> ApiToken:
        return resolve_token(self._config, os.environ if self._env is None else self._env, timeout=self._timeout)
