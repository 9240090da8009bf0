"""Saved plans: a reviewed dry-run written to a file, and what must still hold to apply it.

``runbook run NAME --dry-run --out plan.json`` writes what the operator reviewed: the inputs'
hashes, the cluster it was made against, the live facts it was computed from (each guest's config
``digest``, status and snapshots, as read for the review's values before), the change set, the
gates and every planned action. ``runbook apply plan.json`` runs exactly that, and refuses when
anything it was planned against moved. The functions here are pure: reading the file and the
cluster happens in ``engine.run.execution``.

The file carries a hash of its own content (``sealed_sha256``): a plan edited after the review
is refused, as a change nobody reviewed. It holds no secret: plans never do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .. import exitcodes
from ..errors import RunbookError

KIND = "runbook-plan"
FORMAT = 1
SEAL = "sealed_sha256"


class PlanFileError(RunbookError):
    """The file is not a saved plan this version can apply (a user error: exit 1)."""

    exit_code = exitcodes.PROBLEMS


class PlanRefused(RunbookError):
    """The plan no longer describes what applying it would do: something it was made against moved."""

    exit_code = exitcodes.REFUSED


def canonical(document: Mapping[str, Any]) -> bytes:
    """The bytes the seal is computed over: sorted keys, no spaces, the seal itself left out."""
    body = {key: value for key, value in document.items() if key != SEAL}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` as a saved plan: its kind and format first, its content hash last."""
    sealed = {"kind": KIND, "format": FORMAT, **{k: v for k, v in document.items() if k not in ("kind", "format")}}
    sealed[SEAL] = hashlib.sha256(canonical(sealed)).hexdigest()
    return sealed


def unseal(text: str, where: str) -> dict[str, Any]:
    """The saved plan in ``text`` (from file ``where``), checked: its kind, format and seal."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{where}: not a saved plan (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise PlanFileError(
            f'{where}: not a saved plan (no "kind": "{KIND}"); write one with runbook run NAME --dry-run --out FILE'
        )
    if document.get("format") != FORMAT:
        raise PlanFileError(
            f"{where}: a saved plan of format {document.get('format')!r}; this runbook applies format {FORMAT}: "
            "make the plan again with this version"
        )
    if document.get(SEAL) != hashlib.sha256(canonical(document)).hexdigest():
        raise PlanRefused(
            f"{where} was changed after it was written (its content no longer matches its sealed_sha256), so it "
            "is not the plan that was reviewed. Review again and save a new plan: runbook run ... --dry-run --out FILE"
        )
    return document


def condensed(path: str, data: Any) -> dict[str, Any]:
    """What of one read must not move between the review and the apply: a config's digest, a
    guest's status, a snapshot list's names; anything else, a digest of the whole answer."""
    if data is None:
        return {"exists": False}
    if path.endswith("/config") and isinstance(data, Mapping) and "digest" in data:
        return {"digest": data["digest"]}
    if path.endswith("/status/current") and isinstance(data, Mapping):
        return {"status": data.get("status"), "lock": data.get("lock")}
    if path.endswith("/snapshot") and isinstance(data, list):
        return {"snapshots": sorted(str(s.get("name")) for s in data if isinstance(s, Mapping))}
    return {"sha256": hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()}


def planned_against(reads: Iterable[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each path the review read for its values before, condensed; the last read of a path counts."""
    return {path: condensed(path, data) for path, data in reads}


def moved(saved: Mapping[str, Mapping[str, Any]], now: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What changed on the cluster since the plan was made, one line per resource, in words."""
    lines = []
    for path, then in saved.items():
        current = now.get(path, {"exists": False})
        if current == then:
            continue
        if then.get("exists") is False:
            lines.append(f"{path} exists now; it did not when the plan was made")
        elif current.get("exists") is False:
            lines.append(f"{path} is gone")
        else:
            what = ", ".join(
                f"{key} {then.get(key)!r} -> {current.get(key)!r}"
                for key in sorted(set(then) | set(current))
                if then.get(key) != current.get(key)
            )
            lines.append(f"{path}: {what}")
    return lines


def inputs_moved(saved: Mapping[str, str | None], now: Mapping[str, str | None]) -> list[str]:
    """The inputs (runbook, profile, config) whose content differs from the plan's."""
    names = {"runbook": "the runbook", "profile": "the profile", "config": "cluster-config.yaml"}
    return [
        names.get(key) or (f"the called runbook {key.removeprefix('called:')}" if key.startswith("called:") else key)
        for key in sorted(set(saved) | set(now))
        if saved.get(key) != now.get(key)
    ]
