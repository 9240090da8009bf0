"""Reviews of ingested runbooks: a real run needs the reviewed content, byte for byte.

``runbook trust NAME`` records the SHA-256 of the runbook file as it is now, with who and when,
in ``<home>/.runbook/trust.json``. A runbook whose frontmatter has an ``origin`` (every ingested
one) runs for real only while its file still has a recorded hash; any edit, even one character,
needs a new review. Dry-runs need none. The record lives in the home's state folder (like run
journals, never committed): a review is something this operator did on this machine, and a hash
kept inside the file itself could be updated by whoever edits the file.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import RunbookError
from ..load.home import Home
from ..runbook.model import Runbook

FILE = "trust.json"


class TrustError(RunbookError):
    """The trust record cannot be read or written; the message says which file and why."""


@dataclass(frozen=True)
class Review:
    sha256: str
    by: str
    at: str
    source: str | None


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _path(home: Home) -> Path:
    return home.state_dir / FILE


def _load(home: Home) -> dict[str, Any]:
    path = _path(home)
    if not path.is_file():
        return {"version": 1, "runbooks": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrustError(
            f"{home.shown(path)} cannot be read ({exc}); move it away and review the ingested "
            "runbooks again with 'runbook trust NAME'"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("runbooks"), dict):
        raise TrustError(
            f"{home.shown(path)} is not a trust record; move it away and review the ingested runbooks "
            "again with 'runbook trust NAME'"
        )
    return data


def review_of(home: Home, name: str) -> Review | None:
    entry = _load(home)["runbooks"].get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return None
    return Review(entry["sha256"], str(entry.get("by", "?")), str(entry.get("at", "?")), entry.get("source"))


def needs_review(runbook: Runbook) -> bool:
    return isinstance(runbook.frontmatter.get("origin"), dict)


def untrusted_reason(home: Home, runbook: Runbook, path: Path) -> str | None:
    """Why ``runbook`` may not run for real (None when it may): ingested and not reviewed as it is now."""
    if not needs_review(runbook):
        return None
    origin = runbook.frontmatter["origin"]
    try:
        review = review_of(home, runbook.name)
    except TrustError as exc:
        return str(exc)
    if review is not None and review.sha256 == content_hash(path):
        return None
    state = (
        f"has changed since {review.by} reviewed it ({review.at})" if review is not None else "has not been reviewed"
    )
    return (
        f"runbook {runbook.name} was ingested from {origin.get('source', '?')} and {state}, so it does not run "
        f"for real. Read it (runbook show {runbook.name}; runbook run {runbook.name} --dry-run shows every "
        f"step), then record your review with: runbook trust {runbook.name}"
    )


def record(home: Home, runbook: Runbook, path: Path, who: str | None = None) -> Review:
    """Record that the runbook's current content was reviewed; returns the record."""
    data = _load(home)
    review = Review(
        content_hash(path),
        who or _who(),
        datetime.now(UTC).isoformat(timespec="seconds"),
        str((runbook.frontmatter.get("origin") or {}).get("source") or "") or None,
    )
    data["runbooks"][runbook.name] = {
        "sha256": review.sha256,
        "by": review.by,
        "at": review.at,
        "source": review.source,
        "file": home.shown(path),
    }
    target = _path(home)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".trust-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise TrustError(f"cannot write {home.shown(target)}: {exc}") from None
    return review


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
