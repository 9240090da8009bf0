"""Problems found in user files, as data.

Every check in the engine returns ``Problem`` values instead of raising at the first one, so that
``runbook validate`` can report everything wrong with a tree in one run, each problem pointing at a
file, a line and a field. ``InputError`` carries a batch of them across layers that must stop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import RunbookError


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in one file: where it is and what to do about it."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class InputError(RunbookError):
    """A user file (or argument) is wrong; carries every problem found, never a traceback's worth."""

    def __init__(self, problems: Iterable[Problem] | Problem):
        self.problems: list[Problem] = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def lines(self) -> list[str]:
        """One ``error: ...`` line per problem."""
        return [f"error: {problem}" for problem in self.problems]


def no_such(kind: str, name: str, known: Iterable[str], listing: str) -> str:
    """The message for a name that names nothing: the near misses, or the command that lists them all.

    ``no_such("runbook", "cluster-creat", names, "runbook list")`` says "did you mean
    'cluster-create'?" rather than reciting the whole library at an operator who made a typo.
    """
    import difflib

    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.8)
    if close:
        return f"no {kind} named '{name}'; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    if not names:
        return f"no {kind} named '{name}', and there are none here"
    if len(names) <= 5:
        return f"no {kind} named '{name}' ({kind}s: {', '.join(names)})"
    return f"no {kind} named '{name}' ('{listing}' shows the {len(names)} there are)"
