"""Secrets stay out of children and out of every output.

Two defences, each tested on its own: a child process inherits no variable that holds the API
token (only a step with ``api_token_env`` gets it, under the name it asks for), and whatever a
child, a task log or an error prints is masked against every secret the run knows, in the forms a
tool may print it: as is, URL-encoded, base64 at any alignment, JSON-escaped, split by line breaks
or across the chunks a pipe delivers.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest

from engine.run.dispatch import Dispatcher
from engine.run.secrets import MASK, Masker, forms
from engine.runbook.actions import ShellCommand, StepFailed

TOKEN_ID = "runbook@pve!ci"
SECRET = "7f3a9c1e-52b8-4d6e-a0f1-9b8c7d6e5f4a"
TOKEN = f"{TOKEN_ID}={SECRET}"
PIECE = 7  # a leak of this many characters in a row counts: fold -w 7 prints no longer piece


def pieces(secret: str) -> list[str]:
    return [secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)]


def leaks(text: str) -> list[str]:
    """Every trace of SECRET in ``text``: a piece of it, or of its base64 / URL-encoded / JSON forms."""
    found = [piece for piece in pieces(SECRET) if piece in text]
    for form in forms(SECRET)[1:] + forms(TOKEN)[1:]:
        found += [f"form:{form}"] if form in text else []
    return found


# ---------------------------------------------------------------------------------------------- the masker


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"token: {SECRET}.", id="as-is"),
        pytest.param(urllib.parse.quote(TOKEN, safe=""), id="url-encoded"),
        pytest.param(urllib.parse.quote_plus(f"a b {TOKEN}"), id="form-encoded"),
        pytest.param(json.dumps({"token": TOKEN, "quote": 'say "hi"'}), id="json"),
        pytest.param(base64.b64encode(f"Authorization: PVEAPIToken={TOKEN}".encode()).decode(), id="base64-in-header"),
        pytest.param(base64.b64encode(f"x{SECRET}".encode()).decode(), id="base64-offset-1"),
        pytest.param(base64.b64encode(f"xy{SECRET}yz".encode()).decode(), id="base64-offset-2"),
        pytest.param(base64.urlsafe_b64encode(f"{SECRET}??>>".encode()).decode(), id="base64-urlsafe"),
        pytest.param(f"{SECRET[:9]}\n{SECRET[9:20]}\r\n{SECRET[20:]}", id="split-by-line-breaks"),
    ],
)
def test_every_form_a_tool_may_print_is_masked(text: str) -> None:
    masker = Masker()
    masker.add(TOKEN)
    masker.add(SECRET)
    masked = masker.mask(text)
    assert MASK in masked
    assert not leaks(masked), masked


def test_masking_reaches_into_data_and_leaves_other_text_alone() -> None:
    masker = Masker(SECRET)
    data = {"stdout": f"ok {SECRET}\n", "items": [SECRET, 3, {SECRET: True}], "exit_code": 0}
    assert masker.mask_data(data) == {"stdout": f"ok {MASK}\n", "items": [MASK, 3, {MASK: True}], "exit_code": 0}
    assert masker.mask("nothing secret here") == "nothing secret here"
    assert Masker("abc").mask("abcabc") == "abcabc", "a value too short to be a secret is not masked"
    assert not Masker() and Masker().mask_data(data) is data


def test_progress_lines_hold_back_the_first_half_of_a_secret_until_the_line_that_ends_it() -> None:
    shown: list[str] = []
    lines = Masker(SECRET).lines(shown.append)
    lines("starting")
    lines(f"token={SECRET[:15]}")
    assert shown == ["starting"], "the line ending with the start of the secret waits for the next one"
    lines(f"{SECRET[15:]} done")
    lines("next")
    lines(SECRET[:5])  # an unfinished start at the very end is shown when the stream closes
    lines.close()
    assert shown == ["starting", f"token={MASK} done", "next", SECRET[:5]]


# ---------------------------------------------------------------------------------------------- real children


def _dispatcher(tmp_path: Path, token_env: str = "PROXMOX_API_TOKEN") -> Dispatcher:
    config = {"credentials": {"pass_path": "proxmox/test", "token_env": token_env, "ssh_user": "root"}}
    return Dispatcher(config, tmp_path, env={token_env: TOKEN})


def _run(dispatcher: Dispatcher, script: str, **attrs: object) -> tuple[str, list[str]]:
    """Run ``script`` locally through the dispatcher; its whole output (or failure) and the progress lines."""
    progress: list[str] = []
    command = ShellCommand(script=script, timeout=20, **attrs)  # type: ignore[arg-type]
    try:
        result = dispatcher.execute(command, progress.append)
    except StepFailed as failure:
        return failure.message + json.dumps(failure.data), progress
    return json.dumps(result.data) + result.summary, progress


def test_a_child_inherits_no_variable_holding_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found on a real cluster: a ``local`` step running ``env`` printed PROXMOX_API_TOKEN."""
    monkeypatch.setenv("PROXMOX_API_TOKEN", TOKEN)
    monkeypatch.setenv("RB_COPY_OF_THE_TOKEN", f"Bearer {TOKEN}")
    monkeypatch.setenv("RB_HARMLESS", "kept")
    dispatcher = _dispatcher(tmp_path)
    # Masking is off for this check: what the child received, not what was shown, is under test.
    dispatcher.masker = Masker()
    output, _ = _run(dispatcher, "env")
    assert "RB_HARMLESS=kept" in output
    assert "PROXMOX_API_TOKEN" not in output and "RB_COPY_OF_THE_TOKEN" not in output
    assert not leaks(output)


def test_a_step_that_asks_for_the_token_gets_it_under_its_name_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXMOX_API_TOKEN", TOKEN)
    dispatcher = _dispatcher(tmp_path)
    result = dispatcher.execute(ShellCommand(script='env | cut -d= -f1; echo "length ${#TOK}"', token_env="TOK"), print)
    names = set(result.data["stdout"].split())
    assert "TOK" in names and "PROXMOX_API_TOKEN" not in names
    output = result.data["stdout"]
    assert f"length {len(TOKEN)}" in output


PRINTS = {
    "as-is": 'echo "$TOK"',
    "secret part": 'echo "${TOK#*=}"',
    "on stderr": 'echo "${TOK#*=}" >&2',
    "url-encoded": 'python3 -c \'import os, urllib.parse; print(urllib.parse.quote(os.environ["TOK"], safe=""))\'',
    "base64": 'printf %s "PVEAPIToken=$TOK" | base64 -w0; echo',
    "json": 'python3 -c \'import json, os; print(json.dumps({"t": os.environ["TOK"]}))\'',
    "folded": 'printf %s "${TOK#*=}" | fold -w 7; echo',
    "across chunks": 'printf %s "${TOK:0:20}"; sleep 0.3; printf "%s\\n" "${TOK:20}"',
    "then fails": 'echo "fatal: ${TOK#*=}" >&2; exit 3',
}


@pytest.mark.parametrize("script", PRINTS.values(), ids=PRINTS.keys())
def test_a_step_printing_the_token_on_purpose_shows_only_the_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    monkeypatch.delenv("PROXMOX_API_TOKEN", raising=False)
    output, progress = _run(_dispatcher(tmp_path), script, token_env="TOK")
    everything = output + "\n".join(progress)
    assert MASK in everything, everything
    assert not leaks(everything), everything
