"""Secret parameters: a runbook's passwords and keys, resolved at the edge and never written down.

A parameter marked ``secret: true`` is not given with ``--param`` (shell history, the process list)
but with ``--secret NAME=SOURCE``: ``env:VAR`` (an environment variable), ``pass:PATH`` (the first
line of a pass entry) or ``prompt`` (asked on the terminal without echo, which is also what happens
when a secret parameter is left out on a terminal). What is recorded (run.json, a saved plan) is the
source, never the value, so a resume or an apply reads it again from the same place, and asks
again when it was typed.

Templates see a placeholder that renders as ``*MASKED*``: plans, journals, progress and reviews are
rendered with it. Only the action handed to an executor is rendered with the value (the runner's
revealing renderer), and the masker learns every value before anything runs, so an output that
echoes it is masked too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..load.problems import InputError, Problem
from ..runbook.model import Parameter, Runbook
from .credentials import CredentialError, read_pass_secret
from .secrets import MASK, Secret

PROMPT = "prompt"
SOURCE_FORMS = "env:VAR, pass:PATH or prompt"
_ENV = re.compile(r"env:(?P<var>[A-Za-z_][A-Za-z0-9_]*)")
_PASS = re.compile(r"pass:(?P<path>[^\s]+)")

#: Asks the operator for one secret parameter's value, without echo; None when nobody can be asked.
Ask = Callable[[Parameter], str]


class Hidden:
    """What a template sees for a secret parameter: renders as ``*MASKED*``, offers nothing else.

    Not a ``Secret``: a template may call methods on what it is given, and this has none that
    could give the value away.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return MASK

    __repr__ = __str__


@dataclass(frozen=True)
class SecretParams:
    """The resolved secret parameters of one run: their values and where each came from."""

    values: dict[str, Secret] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def placeholders(self) -> dict[str, Hidden]:
        """The template names of the secret parameters, each rendering as ``*MASKED*``."""
        return {name: Hidden() for name in self.values}

    def revealed(self) -> dict[str, str]:
        """The values, for the one renderer whose actions go to executors and nowhere else."""
        return {name: secret.reveal() for name, secret in self.values.items()}


def split_sources(items: Mapping[str, str]) -> dict[str, str]:
    """``--secret`` values as given (NAME -> SOURCE), sources stripped of surrounding spaces."""
    return {name.strip(): source.strip() for name, source in items.items()}


def resolve(
    runbook: Runbook,
    given: Mapping[str, str],
    env: Mapping[str, str],
    ask: Ask | None,
) -> SecretParams:
    """Every secret parameter of ``runbook``, read from its source; every problem reported at once.

    ``given``: NAME -> SOURCE from ``--secret`` (or from a run's record); a secret parameter left
    out is asked for with ``ask`` when there is one (a terminal), else it is missing.
    """
    specs = {p.name: p for p in runbook.parameters}
    problems: list[Problem] = []
    for name in given:
        param = specs.get(name)
        if param is None:
            secret = ", ".join(p.name for p in runbook.parameters if p.secret) or "none"
            problems.append(
                Problem(
                    "--secret", None, name, f"{runbook.name} has no parameter '{name}' (secret parameters: {secret})"
                )
            )
        elif not param.secret:
            problems.append(
                Problem(
                    "--secret", None, name, f"'{name}' is not a secret parameter: give it with --param {name}=VALUE"
                )
            )
    values: dict[str, Secret] = {}
    sources: dict[str, str] = {}
    for param in runbook.parameters:
        if not param.secret:
            continue
        source = given.get(param.name, PROMPT if ask is not None else "")
        try:
            values[param.name] = _read(param, source, env, ask)
        except ValueError as exc:
            problems.append(Problem("--secret", None, param.name, str(exc)))
            continue
        sources[param.name] = source
    if problems:
        raise InputError(problems)
    return SecretParams(values, sources)


def _read(param: Parameter, source: str, env: Mapping[str, str], ask: Ask | None) -> Secret:
    """One secret parameter's value from ``source``; ValueError says what to give instead."""
    name = param.name
    if not source:
        raise ValueError(
            f"required secret parameter missing: add --secret {name}=env:VAR or --secret {name}=pass:PATH "
            f"({param.description})"
        )
    if source == PROMPT:
        if ask is None:
            raise ValueError(
                f"secret parameter {name} was typed at a prompt, and there is no terminal to ask again: "
                f"add --secret {name}=env:VAR or --secret {name}=pass:PATH"
            )
        value = ask(param)
        origin = "the prompt"
    elif match := _ENV.fullmatch(source):
        var = match["var"]
        if var not in env:
            raise ValueError(f"environment variable {var} (named by --secret {name}=env:{var}) is not set")
        value = env[var]
        origin = f"environment variable {var}"
    elif match := _PASS.fullmatch(source):
        try:
            return read_pass_secret(match["path"], env)
        except CredentialError as exc:
            raise ValueError(str(exc)) from None
    else:
        raise ValueError(f"say where the secret is: --secret {name}=SOURCE with SOURCE {SOURCE_FORMS} (not shown)")
    if not value:
        raise ValueError(f"secret parameter {name} is empty ({origin} gave nothing)")
    return Secret(value)


@dataclass(frozen=True)
class SecretInput:
    """How one command was given its secret parameters: ``--secret NAME=SOURCE``, and who to ask for
    the ones left out (None: nobody, not a terminal)."""

    sources: Mapping[str, str] = field(default_factory=dict)
    ask: Ask | None = None

    def over(self, recorded: Mapping[str, str] | None) -> SecretInput:
        """These sources on top of the ones a run or plan ``recorded`` (a resume may name new ones)."""
        return SecretInput({**(recorded or {}), **self.sources}, self.ask)


NO_SECRETS = SecretInput()
