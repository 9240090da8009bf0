"""Secrets that refuse to be printed.

A ``Secret`` renders as ``*MASKED*`` in ``str``, ``repr``, f-strings, logging and tracebacks; only
``reveal()`` gives the value, and it is called at the point of use (building one HTTP header, one
subprocess environment). Leaking a token must be the hard thing to do, not the easy one.
"""

from __future__ import annotations

MASK = "*MASKED*"


class Secret:
    """A string value that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled or copied into a record")


def scrub(text: str, *secrets: Secret | None) -> str:
    """``text`` with every occurrence of the given secrets' values replaced by the mask.

    A last line of defence for text that comes from outside (a subprocess's stderr, an exception
    from a library) and might echo a value back.
    """
    for secret in secrets:
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), MASK)
    return text
