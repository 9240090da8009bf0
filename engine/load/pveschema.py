"""The Proxmox VE API schema, as one module of ours over fakepve's copy of it.

fakepve ships PVE's own API description and a validator that answers in PVE's own words; every
rendered ``api`` step is checked against it before anything is sent, so a misspelt parameter or a
bad property string (``net0=virtio,bridge=vmbr0``) fails at validate or dry-run time with the
message PVE itself would give. Only this module imports ``fakepve.schema``: a change in fakepve
touches one place. The fakepve version is pinned in pyproject.toml.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Any

from fakepve import schema as _schema


@lru_cache(maxsize=1)
def _loaded() -> Any:
    return _schema.load()


def check_request(
    method: str, path: str, params: dict[str, Any], unknown: str | None = None
) -> list[tuple[str | None, str]]:
    """PVE's objections to ``method path`` with ``params``, as (parameter or None, message) pairs.

    ``path`` is relative to /api2/json. Path parameters (``node``, ``vmid``) are taken from the path.
    A path segment whose value is exactly ``unknown`` (a value known only at run time), and a
    parameter whose value is or contains it, are not judged.
    """
    found = _loaded().match(path)
    if found is None:
        if unknown is not None and unknown in path.split("/"):
            return []  # a segment known only at run time (``/status/{{ action }}``): judged when it is known
        return [(None, f"the Proxmox VE API has no path {path}{_closest(path)}")]
    spec = found.methods.get(method)
    if spec is None:
        allowed = ", ".join(sorted(found.methods)) or "none"
        return [(None, f"{method} is not a method of {found.template} (it has: {allowed})")]
    values = {**params, **found.params}
    _, errors = _schema.validate(spec.get("parameters") or {}, values)
    return [
        (name, f"{name}: {'; '.join(str(message).strip().splitlines())}")
        for name, message in sorted(errors.items())
        if unknown is None or not _holds(values.get(name.split(".")[0]), unknown)
    ]


def _holds(value: Any, unknown: str) -> bool:
    """Whether a value is, or is built around, a value known only at run time (``ip=unknown/24``):
    its format is judged when it is known."""
    return value == unknown or (isinstance(value, str) and re.search(rf"(?<!\w){unknown}(?!\w)", value) is not None)


def is_task(method: str, path: str) -> bool:
    """Whether PVE answers this call with a task UPID (clone, start, migrate, ...)."""
    found = _loaded().match(path)
    spec = found.methods.get(method) if found else None
    return bool(spec and _schema.is_task(method, spec))


def methods_of(template: str) -> frozenset[str]:
    """The methods PVE's API has for a path template (``/nodes/{node}/qemu/{vmid}/config``); empty when
    there is no such path. What the table of PVE calls (``engine.load.pvetable``) is checked against."""
    spec = _loaded().paths.get(template)
    return frozenset(spec) if spec else frozenset()


def changing_paths() -> dict[str, frozenset[str]]:
    """Every path of PVE's API with the methods of it that are not GET."""
    return {
        template: frozenset(m for m in methods if m != "GET")
        for template, methods in _loaded().paths.items()
        if any(m != "GET" for m in methods)
    }


def _closest(path: str) -> str:
    templates = list(_loaded().paths)
    shape = "/".join("{x}" if part.isdigit() else part for part in path.split("/"))
    guesses = difflib.get_close_matches(shape, templates, n=1, cutoff=0.6)
    return f" (closest: {guesses[0]})" if guesses else ""
