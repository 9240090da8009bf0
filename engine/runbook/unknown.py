"""Values a dry-run cannot know yet, shown as such instead of guessed.

In a dry-run, ``steps.clone.upid`` has no value: the clone has not happened. ``Unknown`` stands in
for it: it renders as ``(known after run: steps.clone.upid)``, any attribute or item of it is
another Unknown, comparisons and arithmetic give Unknown, and asking whether it is true (a
``when`` or ``check`` that depends on it) raises ``UnknownValue`` so the plan can say "depends on
run-time values" rather than crash or guess.
"""

from __future__ import annotations

from typing import Any


class UnknownValue(Exception):
    """A decision needed a value that only a later step can produce; ``source`` names it."""

    def __init__(self, unknown: Unknown):
        self.source = describe(unknown)
        super().__init__(f"depends on a value known only after run: {self.source}")


class Unknown:
    """A placeholder for a value produced at run time; ``source`` says which."""

    # A private slot: any public name (``source``, ``name``...) must stay free to be a field of the
    # unknown value itself, e.g. ``steps.where.source``.
    __slots__ = ("_origin",)

    def __init__(self, origin: str):
        object.__setattr__(self, "_origin", origin)

    def __str__(self) -> str:
        return f"(known after run: {self._origin})"

    __repr__ = __str__

    #: What Jinja's sandbox asks of anything called: an unknown's method (``cluster.vms.get(1031)`` offline)
    #: may be called, and gives the same unknown.
    unsafe_callable = alters_data = False

    def __getattr__(self, name: str) -> Unknown:
        if name.startswith("__"):
            raise AttributeError(name)
        return Unknown(f"{self._origin}.{name}")

    def __getitem__(self, key: Any) -> Unknown:
        # An unknown key is named by its origin (``cluster.vms[vmid]``): its own "(known after run: ...)"
        # would nest parentheses, which the rendered text's readers (validate's API check) cannot pair.
        if isinstance(key, Unknown):
            shown = describe(key)
        else:
            shown = f'"{key}"' if isinstance(key, str) else str(key)  # double quotes: they sit well in shell quoting
        return Unknown(f"{self._origin}[{shown}]")

    def __bool__(self) -> bool:
        raise UnknownValue(self)

    def __iter__(self) -> Any:
        raise UnknownValue(self)

    def __len__(self) -> int:
        raise UnknownValue(self)

    def __contains__(self, item: Any) -> bool:
        raise UnknownValue(self)

    def _derived(self, *_: Any) -> Unknown:
        return self

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _derived  # type: ignore[assignment]
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _derived
    __truediv__ = __floordiv__ = __mod__ = __rmod__ = __call__ = _derived
    __hash__ = object.__hash__


def describe(unknown: Unknown) -> str:
    """Which run-time value an Unknown stands for (``steps.clone.upid``)."""
    return str(object.__getattribute__(unknown, "_origin"))


def contains_unknown(value: Any) -> bool:
    """Whether an Unknown (or the rendered text of one) hides anywhere inside ``value``."""
    if isinstance(value, Unknown):
        return True
    if isinstance(value, str):
        return "(known after run: " in value
    if isinstance(value, dict):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_unknown(v) for v in value)
    return False
