"""Reading the API token: the environment form, and a real ``pass`` store with a throw-away GPG key.

Every failure is checked for what it says to do and for the one thing it must never say: the secret.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.run.credentials import DEFAULT_TOKEN_ENV, CredentialError, TokenSource, resolve_token
from engine.run.secrets import MASK
from tests.support.passstore import PassStore, pass_store

TOKEN_ID = "root@pam!runbook"
SECRET = "sekret-5f1d2c7a-91e0-4c8b-a6d3-0e2f4b6c8d10"
ENTRY = "proxmox/lab/runbook-token"
ENTRIES: dict[str, str | list[str]] = {
    ENTRY: [TOKEN_ID, SECRET],
    "bad/secret-only": [SECRET],
    "bad/three-lines": [TOKEN_ID, SECRET, "url: https://pve01:8006"],
    "bad/swapped": [SECRET, TOKEN_ID],
    "bad/empty-secret": f"{TOKEN_ID}\n\n",
    "bad/trailing-blank": f"{TOKEN_ID}\n{SECRET}\n\n\n",
    "folder/entry": [TOKEN_ID, SECRET],
    "bad/header-prefix": [f"PVEAPIToken={TOKEN_ID}", SECRET],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    with pass_store(tmp_path_factory.mktemp("pass"), entries=ENTRIES) as made:
        yield made


@pytest.fixture
def env(store: PassStore) -> dict[str, str]:
    """The store's environment without any token variable the developer's shell may carry."""
    full = store.full_env()
    full.pop(DEFAULT_TOKEN_ENV, None)
    return full


def config(pass_path: str = ENTRY, token_env: str | None = None) -> dict[str, object]:
    credentials: dict[str, str] = {"pass_path": pass_path, "ssh_user": "root"}
    if token_env:
        credentials["token_env"] = token_env
    return {"credentials": credentials}


def failure(pass_path: str, env: dict[str, str], **kwargs: float) -> str:
    with pytest.raises(CredentialError) as info:
        resolve_token(config(pass_path), env, **kwargs)
    message = str(info.value)
    assert SECRET not in message and SECRET not in repr(info.value)
    return message


def test_pass_entry_gives_the_token_and_only_the_header_reveals_it(env: dict[str, str]) -> None:
    token = resolve_token(config(), env)
    assert token.token_id == TOKEN_ID
    assert token.secret.reveal() == SECRET
    assert token.source == f"pass entry '{ENTRY}'"
    assert token.authorization() == f"PVEAPIToken={TOKEN_ID}={SECRET}"
    assert SECRET not in repr(token) and SECRET not in str(token) and MASK in repr(token)


def test_blank_lines_after_the_secret_are_ignored(env: dict[str, str]) -> None:
    assert resolve_token(config("bad/trailing-blank"), env).secret.reveal() == SECRET


def test_token_source_reads_again_on_every_get(store: PassStore, env: dict[str, str]) -> None:
    store.insert("rotating", [TOKEN_ID, "first-secret"])
    source = TokenSource(config("rotating"), env)
    assert source.get().secret.reveal() == "first-secret"
    store.insert("rotating", [TOKEN_ID, "second-secret"])
    assert source.get().secret.reveal() == "second-secret"


def test_environment_variable_wins_over_pass(env: dict[str, str]) -> None:
    token = resolve_token(config("no/such/entry"), dict(env, PROXMOX_API_TOKEN=f"runbook@pve!ci={SECRET}\n"))
    assert (token.token_id, token.secret.reveal()) == ("runbook@pve!ci", SECRET)
    assert token.source == "environment variable PROXMOX_API_TOKEN"


def test_token_env_names_the_variable(env: dict[str, str]) -> None:
    custom = dict(env, LAB_TOKEN=f"ops@pve!lab-1={SECRET}", PROXMOX_API_TOKEN="ignored")
    token = resolve_token(config("no/such/entry", token_env="LAB_TOKEN"), custom)
    assert token.token_id == "ops@pve!lab-1"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (SECRET, "has no '='"),
        (f"runbook-ci={SECRET}", "does not start with a token id"),
        (f"root@pam={SECRET}", "does not start with a token id"),
        ("root@pam!runbook=", "has nothing after the '='"),
        ("", "is set but empty"),
        (f"root@pam!runbook={SECRET} {SECRET}", "whitespace in the secret"),
        # Pasted with the header's prefix: PVE answered 401, which said nothing of the cause.
        (f"PVEAPIToken=root@pam!runbook={SECRET}", "starts with 'PVEAPIToken=', the prefix of the HTTP"),
        (f"Authorization: PVEAPIToken=root@pam!runbook={SECRET}", "leave it out"),
    ],
)
def test_malformed_environment_value_is_described_never_echoed(env: dict[str, str], value: str, says: str) -> None:
    with pytest.raises(CredentialError) as info:
        resolve_token(config(), dict(env, PROXMOX_API_TOKEN=value))
    message = str(info.value)
    assert says in message
    assert "PROXMOX_API_TOKEN" in message and "user@realm!tokenid=secret" in message
    assert SECRET not in message and "runbook-ci" not in message


def test_without_pass_path_the_token_comes_from_the_variable_alone(env: dict[str, str]) -> None:
    """``pass_path`` may be left out when automation always sets the variable; unset, it says both ways."""
    only_env = {"credentials": {"ssh_user": "root", "token_env": "LAB_TOKEN"}}
    token = resolve_token(only_env, dict(env, LAB_TOKEN=f"ops@pve!lab={SECRET}"))
    assert token.token_id == "ops@pve!lab"
    with pytest.raises(CredentialError) as info:
        resolve_token(only_env, env)
    message = str(info.value)
    assert "environment variable LAB_TOKEN is not set" in message and "credentials.pass_path" in message
    with pytest.raises(CredentialError) as info:
        resolve_token(only_env, dict(env, LAB_TOKEN="nonsense"))
    assert "fix it" in str(info.value) and "pass entry" not in str(info.value)


def test_missing_entry_says_how_to_create_it(env: dict[str, str]) -> None:
    message = failure("proxmox/lab/nope", env)
    assert "pass entry 'proxmox/lab/nope' does not exist" in message
    assert "pass insert -m proxmox/lab/nope" in message and "pveum user token add" in message


def test_pass_not_installed(env: dict[str, str], tmp_path: Path) -> None:
    message = failure(ENTRY, dict(env, PATH=str(tmp_path)))
    assert "pass is not installed" in message and "apt install pass" in message


def test_gpg_cannot_decrypt_without_the_key(env: dict[str, str]) -> None:
    keyring = tempfile.mkdtemp(prefix="rbgpg-", dir="/tmp")  # short: gpg-agent's socket lives here
    empty = dict(env, GNUPGHOME=keyring)
    try:
        message = failure(ENTRY, empty)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=empty, capture_output=True, check=False)
        shutil.rmtree(keyring, ignore_errors=True)
    assert "gpg could not decrypt pass entry" in message
    assert "No secret key" in message and "gpg --list-secret-keys" in message


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("bad/secret-only", "has 1 line(s); it must have exactly 2"),
        ("bad/three-lines", "has 3 line(s); it must have exactly 2"),
        ("bad/swapped", "line 1 of pass entry 'bad/swapped' is not a token id"),
        ("bad/empty-secret", "has an empty secret on line 2"),
        ("folder", "is not a token id"),  # pass prints a folder's listing
        ("bad/header-prefix", "line 1 of pass entry 'bad/header-prefix' starts with 'PVEAPIToken='"),
    ],
)
def test_badly_shaped_entries(env: dict[str, str], entry: str, says: str) -> None:
    message = failure(entry, env)
    assert says in message
    assert f"pass insert -m -f {entry}" in message


def _fake_pass(directory: Path, script: str) -> dict[str, str]:
    """A PATH whose ``pass`` is this shell script: for the failures the real one cannot be made to show."""
    program = directory / "pass"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}/usr/bin:/bin"}


def test_pass_stderr_is_scrubbed_of_anything_it_printed(tmp_path: Path) -> None:
    env = _fake_pass(tmp_path, f"echo '{TOKEN_ID}'; echo '{SECRET}'; echo 'oops: {SECRET}' >&2; exit 1\n")
    message = failure(ENTRY, env)
    assert f"oops: {MASK}" in message


def test_pass_that_hangs_is_stopped_with_its_children(tmp_path: Path) -> None:
    # The child sleep keeps the output pipe open, as a gpg waiting for a pinentry would.
    env = _fake_pass(tmp_path, f"echo '{SECRET}'; sleep 30\necho done\n")
    started = time.monotonic()
    message = failure(ENTRY, env, timeout=0.3)
    assert time.monotonic() - started < 5
    assert "did not finish within 0.3 s" in message and "passphrase" in message
