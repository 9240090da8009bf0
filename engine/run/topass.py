"""``to_pass``: a step's result fields stored in a ``pass`` entry, the secret ones shown nowhere.

Some answers hold a secret that exists only there: PVE shows a new API token's secret once, in the
answer to the request that creates it. A step with ``to_pass`` hands the named fields of its result
to ``pass insert -m -f PATH`` (on stdin, no shell: one field per line, the entry format
``engine.run.credentials`` reads) the moment it succeeds, before its output is journaled, shown,
extracted or seen by a later step; the fields listed under ``secret`` are told to the run's masker
first and replaced by ``*MASKED*`` in the output. While such a step runs its progress lines are
withheld: they come before the secret is known, so nothing could mask them.

A failure of ``pass`` fails the step with a message naming the entry, never a value, and saying the
secret was shown nowhere, so the operator knows to recreate what made it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..load.problems import Problem
from ..runbook.model import Step
from .credentials import run_pass
from .secrets import MASK, Masker, Secret, scrub

ATTRIBUTE = "to_pass"
#: Seconds ``pass insert`` may take (it encrypts to public keys: no passphrase, so this is generous).
INSERT_TIMEOUT = 60.0


class PassWriteFailed(Exception):
    """The result could not be stored in pass; the message names the entry and field, never a value."""


@dataclass(frozen=True)
class PassTarget:
    """A step's ``to_pass``, its path rendered: the entry, the result fields that are its lines, the secret ones."""

    path: str
    lines: tuple[str, ...]
    secret: tuple[str, ...]


@runtime_checkable
class PassSink(Protocol):
    """What stores an entry and masks what it holds: the run's ``Dispatcher`` (or the simulation's)."""

    masker: Masker

    def write_pass(self, path: str, lines: Sequence[Secret]) -> str:
        """Store ``lines`` as the entry ``path``; returns one line for progress (never a value)."""
        ...


def declared(step: Step) -> bool:
    return ATTRIBUTE in step.attrs


def spec_problems(step: Step, file: str) -> list[Problem]:
    """What the schema cannot say: every secret field is among the lines (a secret not stored would be lost)."""
    spec = step.attrs.get(ATTRIBUTE)
    if not isinstance(spec, dict):
        return []
    lines = [str(x) for x in spec.get("lines") or []]
    problems = [
        Problem(
            file,
            step.line,
            f"attributes.{ATTRIBUTE}.secret",
            f"secret field '{name}' is not among the lines stored in pass: it would be masked and lost; "
            f"add it to {ATTRIBUTE}.lines",
        )
        for name in spec.get("secret") or []
        if str(name) not in lines
    ]
    if "until" in step.attrs:
        problems.append(
            Problem(
                file,
                step.line,
                f"attributes.{ATTRIBUTE}",
                "until repeats the step, and each attempt would write the pass entry again: remove until",
            )
        )
    return problems


def target(step: Step, path: str) -> PassTarget:
    spec = step.attrs[ATTRIBUTE]
    return PassTarget(
        path.strip(), tuple(str(x) for x in spec.get("lines") or ()), tuple(str(x) for x in spec.get("secret") or ())
    )


def store(data: Any, where: PassTarget, sink: PassSink) -> tuple[Any, str]:
    """Store ``where.lines`` of ``data`` in pass; returns ``data`` with every secret masked, and a progress line.

    The masker learns the secrets before anything else happens, so even a failure's message is masked.
    """
    values = {name: _field(data, name, where.path) for name in dict.fromkeys(where.lines)}
    for name in where.secret:
        sink.masker.add(values[name])
    if not where.path:
        raise PassWriteFailed(f"{ATTRIBUTE}.path rendered empty: no pass entry to store the result in. {_LOST}")
    said = sink.write_pass(where.path, [Secret(values[name]) for name in where.lines])
    masked = sink.masker.mask_data(data)
    for name in where.secret:  # also a value too short for the masker to know
        masked = _replaced(masked, name.split("."))
    return masked, said


_LOST = (
    "The secret was shown nowhere and is now lost: remove what the step created (an API token: "
    "`pveum user token remove USER@REALM TOKENID`) and run again."
)


def _field(data: Any, name: str, path: str) -> str:
    """Field ``name`` (``a.b`` reads ``data["a"]["b"]``) of the result as one line; errors quote no value."""
    value: Any = data
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            keys = ", ".join(sorted(map(str, value))) if isinstance(value, dict) else type(value).__name__
            raise PassWriteFailed(
                f"the step's result has no field '{name}' for pass entry '{path}' (it has: {keys}). {_LOST}"
            )
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, str | int | float) or str(value) == "":
        raise PassWriteFailed(
            f"field '{name}' of the step's result is {'empty' if value == '' else type(value).__name__}, "
            f"not a value for a line of pass entry '{path}'. {_LOST}"
        )
    text = str(value)
    if "\n" in text or "\r" in text:
        raise PassWriteFailed(f"field '{name}' of the step's result spans several lines (pass entry '{path}'). {_LOST}")
    return text


def _replaced(data: Any, parts: list[str]) -> Any:
    if not isinstance(data, dict) or parts[0] not in data:
        return data
    inner = MASK if len(parts) == 1 else _replaced(data[parts[0]], parts[1:])
    return {**data, parts[0]: inner}


def insert(path: str, lines: Sequence[Secret], env: Mapping[str, str], *, timeout: float = INSERT_TIMEOUT) -> str:
    """``pass insert -m -f path`` with ``lines`` on stdin (no shell, no argument holds a value)."""
    text = "".join(line.reveal() + "\n" for line in lines)
    try:
        returncode, _stdout, stderr = run_pass(("insert", "--multiline", "--force", path), env, timeout, stdin=text)
    except subprocess.TimeoutExpired:
        raise PassWriteFailed(
            f"`pass insert {path}` did not finish within {timeout:g} s; pass entry '{path}' may not "
            f"have been written. {_LOST}"
        ) from None
    except FileNotFoundError:
        raise PassWriteFailed(
            f"pass is not installed (or not on PATH), so pass entry '{path}' could not be written. {_LOST}"
        ) from None
    if returncode != 0:
        said = scrub(stderr, *lines).strip() or "no message"
        raise PassWriteFailed(
            f"`pass insert {path}` failed (exit {returncode}): {said}. Pass entry '{path}' was not written. {_LOST}"
        )
    return f"stored {len(lines)} line(s) in pass entry '{path}'"
