"""The shipped runbook library in an operator's home: what changed upstream, what the operator edited.

``runbook init`` copies the library that ships in the package into ``runbooks/`` and writes a
manifest beside it, ``runbooks/.library.json``: the SHA-256 of each file as it was shipped. The
manifest lives beside the runbooks, not in the state folder, because it describes those files and
must travel with them when the home is committed and cloned elsewhere.

Three hashes decide each runbook's state: the home's file, the manifest (what was shipped when it
was last copied) and the installed package's. A file equal to the manifest is unedited; a package
file unequal to the manifest changed upstream. ``update`` copies only files the operator did not
edit, so an edit is never lost: for an edited file that changed upstream it shows the difference.
A reviewed (``runbook trust``) runbook that an update replaces needs a new review, which the trust
check already demands (its hash moved); ``update`` says so, and never records a review itself.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunbookError
from ..ingest import trust
from ..load.home import Home
from ..resources import data_path

MANIFEST = ".library.json"

#: The states of a shipped runbook in a home, in the order ``status`` lists them.
CURRENT = "current"  # the home has what the installed version ships
UPDATE = "update"  # unedited, and the installed version ships another content: update copies it
NEW = "new"  # shipped by the installed version, not in the home yet: update adds it
EDITED = "edited"  # the operator changed it; the installed version ships what the home was given
CONFLICT = "edited+changed"  # the operator changed it and so did the installed version: never overwritten
REMOVED = "removed"  # the operator deleted a shipped runbook: update does not bring it back
DROPPED = "no longer shipped"  # the installed version no longer ships it: left as it is


class LibraryError(RunbookError):
    """The manifest or a runbook cannot be read or written; the message names the file."""


@dataclass(frozen=True)
class Entry:
    """One shipped (or once shipped) runbook and its state in the home."""

    file: str  # e.g. vm-clone.md
    state: str


def shipped_dir() -> Path:
    """The library the installed package ships."""
    return data_path() / "runbooks"


def shipped_files(source: Path | None = None) -> dict[str, Path]:
    """The shipped runbook files by name (``*.md``, including ``_template.md``)."""
    folder = source or shipped_dir()
    return {path.name: path for path in sorted(folder.glob("*.md"))}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_path(home: Home) -> Path:
    return home.runbooks_dir / MANIFEST


def read_manifest(home: Home) -> dict[str, str] | None:
    """The shipped hashes by file name; None when the home has no manifest (made by hand)."""
    path = manifest_path(home)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LibraryError(f"{home.shown(path)} cannot be read ({exc}); restore it from version control") from None
    runbooks = data.get("runbooks") if isinstance(data, dict) else None
    if not isinstance(runbooks, dict) or not all(isinstance(v, str) for v in runbooks.values()):
        raise LibraryError(
            f"{home.shown(path)} is not a library manifest (it needs a 'runbooks' mapping of file name to "
            "SHA-256); restore it from version control"
        )
    return dict(runbooks)


def write_manifest(home: Home, hashes: dict[str, str]) -> None:
    """Write the manifest atomically (a crash leaves the old one or the new one, never half)."""
    from importlib.metadata import version

    path = manifest_path(home)
    data: dict[str, Any] = {
        "version": 1,
        "about": "SHA-256 of each runbook as runbook shipped it; 'runbook library status' compares against it",
        "shipped_by": f"runbook {version('runbook')}",
        "runbooks": dict(sorted(hashes.items())),
    }
    _write_atomic(path, json.dumps(data, indent=2) + "\n", home)


def _write_atomic(path: Path, text: str, home: Home) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".library-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise LibraryError(f"cannot write {home.shown(path)}: {exc}") from None


def state_of(home_hash: str | None, recorded: str | None, shipped_hash: str | None) -> str:
    """A runbook's state from its three hashes (None: no such file, or not in the manifest)."""
    if shipped_hash is None:
        return DROPPED
    if home_hash is None:
        return REMOVED if recorded is not None else NEW
    if home_hash == shipped_hash:
        return CURRENT
    if recorded is None or home_hash != recorded:  # not what was shipped: the operator's content
        return CONFLICT if recorded is None or recorded != shipped_hash else EDITED
    return UPDATE


def status(home: Home, source: Path | None = None) -> list[Entry]:
    """Every shipped (or recorded) runbook with its state; the operator's own runbooks are not listed."""
    manifest = read_manifest(home)
    if manifest is None:
        raise LibraryError(
            f"{home.shown(manifest_path(home))} does not exist, so which runbooks you edited is unknown. "
            "'runbook library update --adopt' records the home's unedited copies of the shipped runbooks"
        )
    shipped = shipped_files(source)
    entries = []
    for name in sorted(set(shipped) | set(manifest)):
        local = home.runbooks_dir / name
        home_hash = digest(local) if local.is_file() else None
        shipped_hash = digest(shipped[name]) if name in shipped else None
        state = state_of(home_hash, manifest.get(name), shipped_hash)
        if state == DROPPED and home_hash is None:
            continue  # gone upstream and here: nothing to say
        entries.append(Entry(name, state))
    return entries


@dataclass(frozen=True)
class UpdateReport:
    copied: list[str]  # updated or added
    kept: list[tuple[str, str]]  # (file, unified diff from the home's file to the shipped one)
    reviews_void: list[str]  # reviewed runbooks whose content the update changed: review them again


def update(home: Home, source: Path | None = None, *, adopt: bool = False) -> UpdateReport:
    """Copy every unedited runbook the installed version changed or added; keep every edited one.

    ``adopt``: a home without a manifest (made by hand, or before manifests) gets one recording the
    files that equal the shipped ones; the others are kept as edited.
    """
    manifest = read_manifest(home)
    if manifest is None:
        if not adopt:
            status(home, source)  # raises the error that says how to start
        manifest = {}
    shipped = shipped_files(source)
    copied, kept, void = [], [], []
    for entry in _entries(home, manifest, shipped):
        target = home.runbooks_dir / entry.file
        if entry.state in (UPDATE, NEW):
            was_reviewed = entry.state == UPDATE and _reviewed(home, target)
            _copy(shipped[entry.file], target, home)
            manifest[entry.file] = digest(target)
            copied.append(entry.file)
            if was_reviewed:
                void.append(target.stem)
        elif entry.state == CURRENT:
            manifest[entry.file] = digest(target)
        elif entry.state == CONFLICT:
            kept.append((entry.file, _diff(home, target, shipped[entry.file])))
    write_manifest(home, manifest)
    return UpdateReport(copied, kept, void)


def _entries(home: Home, manifest: dict[str, str], shipped: dict[str, Path]) -> Iterable[Entry]:
    for name in sorted(shipped):
        local = home.runbooks_dir / name
        yield Entry(
            name, state_of(digest(local) if local.is_file() else None, manifest.get(name), digest(shipped[name]))
        )


def _reviewed(home: Home, path: Path) -> bool:
    """Whether ``path``'s runbook has a recorded review (``runbook trust``), whatever content it was of."""
    try:
        return trust.review_of(home, path.stem) is not None
    except trust.TrustError:
        return True  # an unreadable record: say the review must be renewed, the safe side


def _copy(source: Path, target: Path, home: Home) -> None:
    _write_atomic(target, source.read_text(encoding="utf-8"), home)


def _diff(home: Home, local: Path, shipped: Path) -> str:
    return "".join(
        difflib.unified_diff(
            local.read_text(encoding="utf-8").splitlines(keepends=True),
            shipped.read_text(encoding="utf-8").splitlines(keepends=True),
            f"{home.shown(local)} (yours)",
            f"{local.name} (shipped now)",
        )
    )


def install(home: Home, source: Path | None = None) -> list[str]:
    """Copy the whole shipped library into a new home's ``runbooks/`` and write its manifest."""
    shipped = shipped_files(source)
    hashes = {}
    for name, path in shipped.items():
        target = home.runbooks_dir / name
        _copy(path, target, home)
        hashes[name] = digest(target)
    write_manifest(home, hashes)
    return sorted(shipped)
