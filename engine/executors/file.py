"""Run ``FileWrite`` actions: write a file atomically with a mode, on this machine or on a PVE node.

A file step is checked by its content: a file already holding exactly that content and mode is left
alone (``Result.left_alone``), so the step needs no ``check`` and a rerun or a resume changes
nothing. Otherwise the content goes to a temporary file in the same folder (created private, then
given its mode), is flushed to disk (fsync), and is renamed over the path: a reader sees the old
file or the new one, never half of one, and a failure leaves no partial file behind. The folder
must exist; the step says so when it does not, rather than creating folders nobody asked for.

Where the file lives is a ``FileStore``: ``LocalFiles`` (this machine), ``SshFiles`` (a node, over
the same OpenSSH transport as ``ssh`` steps; one connection per write, which compares and writes in
one script), and the simulation's own (``engine.sim.nodefiles``). The content never appears in an
argument list: over SSH it travels inside the script on stdin.

The review (``preview``) reads the file as it is now, through the same store, and shows a create,
a change with a short diff of the content, or nothing. A ``secret`` file's content is never shown:
only its size and digest.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import hashlib
import os
import shlex
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..load.facts import Facts
from ..runbook.actions import FileWrite, Result, ShellCommand, StepFailed
from .base import Change, FieldChange, Progress, not_installed, unknown_value

#: Bytes of an existing file read back for the review's diff; a larger file is compared by digest only.
DIFF_READ_LIMIT = 256 * 1024
#: Lines of a diff a review shows before it only counts the rest.
DIFF_LINES = 24
#: Characters of the digest a review line shows (the JSON and the journal keep it whole).
DIGEST_SHOWN = 16


@dataclass(frozen=True)
class FileState:
    """A file as it is now: its mode (octal digits, ``600``), size, digest and, when asked for and
    small enough, its text (None otherwise)."""

    mode: str
    size: int
    sha256: str
    text: str | None = None


class Missing(Exception):
    """The folder the file would go in does not exist (``folder`` as resolved where the file lives)."""

    def __init__(self, folder: str):
        super().__init__(folder)
        self.folder = folder


class FileStore(Protocol):
    """Where files are read and written: this machine, a node over SSH, a simulated node."""

    where: str  # "this machine", "node pve01", as messages name it

    def read(self, path: str, *, text: bool) -> FileState | None:
        """The file at ``path`` (None when there is none); raises ``Missing`` when its folder is missing."""

    def write(self, path: str, data: bytes, mode: int, sha256: str) -> tuple[str, bool]:
        """Write atomically unless the file already holds ``data`` with ``mode``; (resolved path, changed).
        Raises ``Missing`` when the folder is missing, ``StepFailed`` for anything else."""


def octal(mode: str) -> int:
    """``"0600"`` -> 0o600."""
    return int(mode, 8)


def mode_text(mode: int) -> str:
    """0o600 -> ``"0600"``, as a reader writes a mode."""
    return f"{mode:04o}"


class LocalFiles:
    """Files on this machine; ``~`` is the operator's home."""

    where = "this machine"

    def read(self, path: str, *, text: bool) -> FileState | None:
        target = Path(path).expanduser()
        if not target.parent.is_dir():
            raise Missing(str(target.parent))
        try:
            with open(target, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise StepFailed(f"{target} on {self.where} is not a regular file", sent=False)
                digest = hashlib.sha256()
                kept = bytearray()
                while chunk := handle.read(65536):
                    digest.update(chunk)
                    if text and len(kept) <= DIFF_READ_LIMIT:
                        kept += chunk
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StepFailed(f"{target} on {self.where} is a folder, not a file", sent=False) from None
        except PermissionError:
            raise StepFailed(f"{target} on {self.where} cannot be read (permission denied)", sent=False) from None
        shown = kept.decode(errors="replace") if text and len(kept) <= DIFF_READ_LIMIT else None
        return FileState(f"{stat.S_IMODE(info.st_mode):o}", info.st_size, digest.hexdigest(), shown)

    def write(self, path: str, data: bytes, mode: int, sha256: str) -> tuple[str, bool]:
        target = Path(path).expanduser()
        now = self.read(str(target), text=False)
        if now is not None and now.sha256 == sha256 and octal(now.mode) == mode:
            return str(target), False
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            try:
                os.fchmod(fd, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _sync_folder(target.parent)
        return str(target), True


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry for the renamed file, so it survives a crash too."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Transport(Protocol):
    """What ``SshFiles`` needs of ``engine.executors.shell.SshExecutor``: run a script on a node."""

    def run(self, command: ShellCommand, progress: Progress | None = None) -> Result: ...


#: The shell lines every node script starts with: the path (``~`` expanded on the node), its folder.
_RESOLVE = """path={path}
case $path in "~") path=$HOME ;; "~/"*) path="$HOME/${{path#"~/"}}" ;; esac
dir=$(dirname -- "$path")
if [ ! -d "$dir" ]; then printf 'missing-folder %s\\n' "$dir"; exit 0; fi
"""

_READ = (
    _RESOLVE
    + """if [ ! -e "$path" ]; then echo absent; exit 0; fi
if [ ! -f "$path" ]; then echo not-a-file; exit 0; fi
size=$(stat -c %s -- "$path")
printf 'file %s %s %s\\n' "$(stat -c %a -- "$path")" "$size" "$(sha256sum -- "$path" | cut -d' ' -f1)"
if [ {text} = yes ] && [ "$size" -le {limit} ]; then base64 -w0 -- "$path"; echo; fi
"""
)

_WRITE = (
    _RESOLVE
    + """if [ -f "$path" ] && [ "$(stat -c %a -- "$path")" = {mode} ] \\
   && [ "$(sha256sum -- "$path" | cut -d' ' -f1)" = {sha256} ]; then
  printf 'in-place %s\\n' "$path"; exit 0
fi
tmp=$(mktemp -- "$dir/.$(basename -- "$path").XXXXXXXX.tmp")
trap 'rm -f -- "$tmp"' EXIT
printf '%s' {content} | base64 -d > "$tmp"
chmod {mode} -- "$tmp"
sync -- "$tmp"
mv -f -- "$tmp" "$path"
trap - EXIT
sync -- "$dir" 2>/dev/null || true
printf 'written %s\\n' "$path"
"""
)


class SshFiles:
    """Files on one PVE node, read and written by a script run over SSH (``transport``).

    The content travels base64-encoded inside the script, which ``bash -s`` reads on stdin, and is
    decoded by a pipe from the ``printf`` builtin: it is in no argument list and no temporary file
    but the one renamed into place.
    """

    def __init__(self, transport: Transport, node: str, timeout: float | None = None):
        self.transport = transport
        self.node = node
        self.timeout = timeout
        self.where = f"node {node}"

    def _run(self, script: str) -> list[str]:
        result = self.transport.run(ShellCommand(script, node=self.node, timeout=self.timeout))
        lines = str(result.data.get("stdout", "")).splitlines()
        if not lines:
            raise StepFailed(f"the script that reads and writes the file on {self.where} said nothing")
        word, _, rest = lines[0].partition(" ")
        if word == "missing-folder":
            raise Missing(rest)
        return lines

    def read(self, path: str, *, text: bool) -> FileState | None:
        lines = self._run(_READ.format(path=shlex.quote(path), text="yes" if text else "no", limit=DIFF_READ_LIMIT))
        word, *fields = lines[0].split()
        if word == "absent":
            return None
        if word == "not-a-file":
            raise StepFailed(f"{path} on {self.where} is not a regular file", sent=False)
        mode, size, digest = fields
        shown = None
        if text and len(lines) > 1:
            shown = base64.b64decode(lines[1]).decode(errors="replace")
        return FileState(mode, int(size), digest, shown)

    def write(self, path: str, data: bytes, mode: int, sha256: str) -> tuple[str, bool]:
        lines = self._run(
            _WRITE.format(
                path=shlex.quote(path),
                mode=f"{mode:o}",
                sha256=shlex.quote(sha256),
                content=shlex.quote(base64.b64encode(data).decode()),
            )
        )
        word, _, resolved = lines[0].partition(" ")
        return resolved, word == "written"


class FileExecutor:
    """Writes ``FileWrite`` actions through the store of their place (``local``, or ``nodes(name)``)."""

    kind = "file"

    def __init__(self, local: FileStore, nodes: Callable[[FileWrite], FileStore], *, needs: tuple[str, ...] = ()):
        self.local = local
        self.nodes = nodes
        self.needs = needs  # programs this machine needs to reach a node (the OpenSSH client)

    def store(self, action: FileWrite) -> FileStore:
        return self.nodes(action) if action.node else self.local

    def execute(self, action: FileWrite, progress: Progress | None = None) -> Result:
        if action.content is None:
            raise StepFailed(
                f"the file step for {action.path} was read back from a record that leaves its content "
                "out (a secret file), so there is nothing to write; render the runbook again",
                sent=False,
            )
        store = self.store(action)
        try:
            resolved, changed = store.write(action.path, action.content.encode(), octal(action.mode), action.sha256)
        except Missing as missing:
            raise StepFailed(_missing_message(action, store, missing.folder), sent=False) from None
        except OSError as exc:
            raise StepFailed(f"could not write {action.path} on {store.where}: {exc.strerror or exc}") from None
        data = {"path": resolved, "changed": changed, "bytes": action.size, "sha256": action.sha256}
        if not changed:
            return Result(data, summary=f"{resolved}: already in place", left_alone=True)
        return Result(data, summary=f"wrote {resolved} ({action.size} bytes, mode {action.mode}) on {store.where}")

    def preview(self, action: FileWrite, facts: Facts) -> list[Change]:
        """What writing would change, from the file as it is now: read here, through the file's own
        store (the one read a file's review needs). A node's file is not read offline."""
        if action.node and facts.offline:
            return file_changes(action, "offline")
        store = self.store(action)
        try:
            before = store.read(action.path, text=not action.secret)
        except Missing as missing:
            if any(p.id == missing.folder for p in facts.planned):  # an earlier step of the plan makes it
                return file_changes(action, None)
            return file_changes(action, None, note=_missing_message(action, store, missing.folder, review=True))
        except StepFailed as failure:
            return file_changes(action, "not read", note=failure.message)
        return file_changes(action, before)

    def missing(self, action: FileWrite) -> list[str]:
        return not_installed(self.needs, None) if action.node else []

    def close(self) -> None:
        """Nothing held: every node script is its own ssh process."""


def _missing_message(action: FileWrite, store: FileStore, folder: str, *, review: bool = False) -> str:
    where = store.where
    if review:
        return (
            f"the folder {folder} does not exist on {where} yet: the run fails here unless an earlier step creates it"
        )
    return (
        f"the folder {folder} does not exist on {where}, so {action.path} cannot be written there; "
        "create it first (a step before this one), or correct the path"
    )


def file_changes(action: FileWrite, before: FileState | str | None, *, note: str = "") -> list[Change]:
    """The review of writing ``action`` over ``before``: the file as it is (None: there is none; a
    string: why it is not known). Nothing when the file already holds that content and mode."""
    where = f"node {action.node}" if action.node else "this machine"
    name = f"file {action.path} ({where})"
    file_id = f"{action.node}:{action.path}" if action.node else action.path
    after = {"mode": action.mode, "bytes": action.size, "sha256": action.sha256[:DIGEST_SHOWN]}
    details = [note] if note else []
    if isinstance(before, str):
        fields = tuple(FieldChange(key, unknown_value(before), value) for key, value in after.items())
        details.append(
            f"whether it exists, and what it holds, is unknown ({before}); it is written unless it holds this already"
        )
        return [Change("change", "file", file_id, name, fields, detail="\n".join(details))]
    if before is not None and before.sha256 == action.sha256 and octal(before.mode) == octal(action.mode):
        return []
    if action.secret:
        details.append("content not shown: the step is secret")
    elif before is not None and before.text is not None and action.content is not None:
        details += content_diff(before.text, action.content)  # a new file's content is the step's own display
    if before is None:
        fields = tuple(FieldChange(key, None, value) for key, value in after.items())
        return [Change("create", "file", file_id, name, fields, detail="\n".join(details))]
    now = {"mode": mode_text(octal(before.mode)), "bytes": before.size, "sha256": before.sha256[:DIGEST_SHOWN]}
    fields = tuple(FieldChange(key, now[key], after[key]) for key in after if now[key] != after[key])
    return [Change("change", "file", file_id, name, fields, detail="\n".join(details))]


def content_diff(before: str, after: str) -> list[str]:
    """A short unified diff (``-`` old, ``+`` new lines, one line of context), counted beyond ``DIFF_LINES``."""
    lines = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=1))[2:]
    if len(lines) > DIFF_LINES:
        return [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more lines of diff"]
    return lines
