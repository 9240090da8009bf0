"""Secrets that refuse to be printed.

A ``Secret`` renders as ``*MASKED*`` in ``str``, ``repr``, f-strings, logging and tracebacks; only
``reveal()`` gives the value, and it is called at the point of use (building one HTTP header, one
subprocess environment). Leaking a token must be the hard thing to do, not the easy one.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

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


#: Values shorter than this are not masked: a two-letter "secret" would blank out half of every output.
MIN_MASKED = 4
#: Lines a ``LineMasker`` holds back at most while they may end with the start of a secret.
HOLD_LINES = 64
_LINE_BREAK = r"(?:\r?\n)?"


def forms(value: str) -> list[str]:
    """The ways a tool may print ``value``: as is, URL-encoded, JSON-escaped, and base64 (standard
    and URL-safe, at each of the three byte alignments it can have inside a longer encoded text:
    only the characters that depend on ``value`` alone, so it is found inside any base64 stream)."""
    found = [value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]]
    raw = value.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            encoded = encode(b"\0" * offset + raw).decode()
            core = encoded[-(-8 * offset // 6) : (8 * (offset + len(raw))) // 6]
            if len(core) >= 2 * MIN_MASKED:
                found.append(core)
    return list(dict.fromkeys(f for f in found if len(f) >= MIN_MASKED))


class Masker:
    """Every secret a run resolved or was given, masked in any text in every form ``forms`` lists,
    also when a line break splits it (a terminal wrap, ``fold``). Thread-safe: steps running at once
    share one. The last line of defence for text that comes from outside (a child's output, a
    library's exception), behind the first: children get a secret only when their step asks."""

    def __init__(self, *secrets: Secret | str | None):
        self._lock = threading.Lock()
        self._forms: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Secret | str | None) -> None:
        """Mask ``secret`` from now on (nothing for None or a value too short to mask)."""
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if not value or len(value) < MIN_MASKED:
            return
        with self._lock:
            new = [form for form in forms(value) if form not in self._forms]
            if not new:
                return
            self._forms = sorted([*self._forms, *new], key=len, reverse=True)
            self._pattern = re.compile(
                "|".join(_LINE_BREAK.join(re.escape(char) for char in form) for form in self._forms)
            )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        """``text`` with every form of every secret replaced by the mask."""
        pattern = self._pattern
        return text if pattern is None or not text else pattern.sub(MASK, text)

    def mask_data(self, data: Any) -> Any:
        """``data`` (a step's output, however deep) with every string masked, keys included."""
        if self._pattern is None:
            return data
        if isinstance(data, str):
            return self.mask(data)
        if isinstance(data, list | tuple):
            return type(data)(self.mask_data(item) for item in data)
        if isinstance(data, dict):
            return {self.mask_data(k): self.mask_data(v) for k, v in data.items()}
        return data

    def holds(self, text: str) -> bool:
        """True when ``text`` contains a secret in any form (an environment value to keep from a child)."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def may_continue(self, text: str) -> bool:
        """True when ``text`` ends with the first ``MIN_MASKED`` or more characters of a secret's form
        (line breaks ignored): the next line may finish it, so the line must wait before it is shown."""
        tail = re.sub(r"\r?\n", "", text[-4 * max((len(f) for f in self._forms), default=0) :])
        return any(tail.endswith(form[:k]) for form in self._forms for k in range(MIN_MASKED, len(form)))

    def lines(self, emit: Callable[[str], None]) -> LineMasker:
        """A progress callback that masks each line before ``emit`` sees it; ``close()`` it at the end."""
        return LineMasker(self, emit)


class LineMasker:
    """Masks a stream of lines, holding a line back while it may end with the first part of a secret
    whose rest comes on the next line, so that a secret split by a line break is never shown in two
    halves. ``close()`` shows what is still held."""

    def __init__(self, masker: Masker, emit: Callable[[str], None]):
        self._masker = masker
        self._emit = emit
        self._held: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self._held = self._masker.mask("\n".join([*self._held, line])).split("\n")
            if self._masker.may_continue("\n".join(self._held)) and len(self._held) < HOLD_LINES:
                return
            ready, self._held = self._held, []
        for text in ready:
            self._emit(text)

    def close(self) -> None:
        with self._lock:
            ready, self._held = self._held, []
        for text in ready:
            self._emit(text)


def scrub(text: str, *secrets: Secret | None) -> str:
    """``text`` with every occurrence of the given secrets' values, in every form, replaced by the mask."""
    return Masker(*secrets).mask(text)


class ChildEnvironment:
    """What a child process (a local script, ssh, talosctl) inherits from this one: every variable
    but those that hold a secret: the ones named in ``hidden`` (the API token's variable) and any
    whose value holds a secret ``masker`` knows. A step that needs the token asks for it
    (``api_token_env``) and gets it in ``extra``; nothing else reaches a child by inheritance."""

    def __init__(self, hidden: Iterable[str] = (), masker: Masker | None = None):
        self.hidden = frozenset(hidden)
        self.masker = masker

    def __call__(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        masker = self.masker
        kept = {
            name: value
            for name, value in os.environ.items()
            if name not in self.hidden and not (masker is not None and masker.holds(value))
        }
        return {**kept, **(extra or {})}
