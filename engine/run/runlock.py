"""One run per cluster profile at a time: a lock file per profile, held for the life of the run.

Two runs against the same cluster at once would race each other's clones, deletes and reboots, so
a run takes ``<state_dir>/locks/<profile>.lock`` before it touches anything.

Why ``fcntl.flock`` on an fd held open for the whole run, rather than ``O_CREAT|O_EXCL``:

- The kernel drops a flock the moment its holder dies, however it dies (SIGKILL, OOM killer, a
  crash). An ``O_EXCL`` lock file outlives its creator, and every later run has to guess from a
  pid whether it is stale; the flock needs no guessing on this host.
- flock locks belong to the open file, not the process, so a second acquire in the same process
  conflicts too (POSIX ``fcntl`` locks would silently succeed there).
- The file's JSON (pid, host, run id, since when, the process's start time and the boot id) is
  for people and for the second line of defence: on a filesystem where flock is a no-op the
  content is still checked, and a holder is only declared dead when both the kernel lock and the
  recorded process say so. A pid alone is not enough, because pids are reused: the process start
  time from ``/proc/<pid>/stat`` (and the boot id, across reboots) tells the original holder from
  a stranger that was later given the same pid.
- A lock written on another host cannot be checked from here (its pid means nothing locally), so
  taking it over needs an explicit ``force=True``.

The state dir must be on a local filesystem (or one with working flock, such as Linux NFS).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from .. import exitcodes
from ..errors import RunbookError

_PROC = Path("/proc")
_BOOT_ID = _PROC / "sys" / "kernel" / "random" / "boot_id"
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ATTEMPTS = 5  # re-opens after losing a race with a release that unlinked the file under us


class Liveness(NamedTuple):
    """Whether a recorded process still runs: True, False, or None when it cannot be known here."""

    alive: bool | None
    reason: str


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as it can be recognised later: pid plus what a reused pid would not share.

    ``process_start`` is field 22 of ``/proc/<pid>/stat`` (clock ticks after boot) and ``boot_id``
    the kernel's per-boot id; both are None where there is no ``/proc`` (then only the pid counts).
    """

    pid: int
    host: str
    process_start: int | None
    boot_id: str | None

    @classmethod
    def current(cls) -> ProcessIdentity:
        pid = os.getpid()
        stat = _proc_stat(pid)
        return cls(pid, socket.gethostname(), stat[1] if stat else None, _boot_id())

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "process_start": self.process_start, "boot_id": self.boot_id}

    @classmethod
    def from_dict(cls, data: Any) -> ProcessIdentity:
        """Rebuild from ``as_dict`` output; ValueError when it is not one (a damaged file)."""
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not isinstance(data.get("host"), str):
            raise ValueError("not a process identity (needs an integer pid and a host)")
        start, boot = data.get("process_start"), data.get("boot_id")
        return cls(
            data["pid"],
            data["host"],
            start if isinstance(start, int) else None,
            boot if isinstance(boot, str) else None,
        )

    def liveness(self) -> Liveness:
        """Is this very process still running? Decided from this host's /proc, never from the pid alone."""
        if self.host != socket.gethostname():
            return Liveness(None, f"it ran on host {self.host}, whose processes this host cannot see")
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return Liveness(False, f"this machine has restarted since pid {self.pid} started")
        if not _PROC.joinpath("self", "stat").exists():
            return (
                Liveness(True, f"pid {self.pid} is still running")
                if _pid_exists(self.pid)
                else Liveness(False, f"pid {self.pid} is no longer running")
            )
        stat = _proc_stat(self.pid)
        if stat is None:
            return Liveness(False, f"pid {self.pid} is no longer running")
        state, start = stat
        if state in ("Z", "X", "x"):
            return Liveness(False, f"pid {self.pid} has exited (its parent has not reaped it yet)")
        if self.process_start is not None and start != self.process_start:
            return Liveness(False, f"pid {self.pid} now belongs to another process (a different start time)")
        return Liveness(True, f"pid {self.pid} is still running")


@dataclass(frozen=True)
class LockInfo:
    """What a lock file says about its holder."""

    run_id: str
    started: str  # when the lock was taken, ISO 8601 UTC
    process: ProcessIdentity

    def as_json(self) -> bytes:
        return (
            json.dumps({"run_id": self.run_id, "started": self.started, **self.process.as_dict()}, indent=2).encode()
            + b"\n"
        )

    @classmethod
    def parse(cls, data: bytes) -> LockInfo:
        """ValueError when the bytes are not a lock file's JSON (empty, torn or edited)."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("run_id"), str)
            or not isinstance(doc.get("started"), str)
        ):
            raise ValueError("not a lock record (needs run_id and started)")
        return cls(doc["run_id"], doc["started"], ProcessIdentity.from_dict(doc))

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.process.pid} on {self.process.host}, since {self.started})"


class LockHeld(RunbookError):
    """Another run holds the profile; the message names it and says what to do."""

    exit_code = exitcodes.LOCKED

    def __init__(self, message: str, holder: LockInfo | None, path: Path):
        super().__init__(message)
        self.holder = holder
        self.path = path


class LockUnverifiable(LockHeld):
    """The holder cannot be proven dead (another host, or inconsistent evidence); ``force=True`` takes it over."""


class ProfileLock:
    """The lock of one profile for one run: ``with ProfileLock(state_dir, "prod", run_id) as lock: ...``.

    ``acquire`` returns (and ``note`` keeps) a sentence when a dead holder's lock was reclaimed, so
    the caller can tell the operator that an earlier run was interrupted.
    """

    def __init__(self, state_dir: Path, profile: str, run_id: str, *, force: bool = False):
        if not _PROFILE_NAME.fullmatch(profile):
            raise ValueError(f"profile name {profile!r} cannot name a lock file")
        self.profile = profile
        self.run_id = run_id
        self.force = force
        self.path = lock_path(state_dir, profile)
        self.note: str | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> str | None:
        """Take the lock or raise LockHeld; the lock is decided under the flock, so two acquirers never both win."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this ProfileLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                holder = _read_holder(fd)
                os.close(fd)
                raise LockHeld(self._held_message(holder), holder, self.path) from None
            if not _is_current_file(fd, self.path):
                # The holder released (unlinked) between our open and our flock; this inode is orphaned.
                os.close(fd)
                continue
            try:
                self.note = self._judge_previous(fd)
                info = LockInfo(self.run_id, _now(), ProcessIdentity.current())
                os.ftruncate(fd, 0)
                os.pwrite(fd, info.as_json(), 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self.note
        raise OSError(f"could not take {self.path}: it kept being replaced while we opened it")

    def release(self) -> None:
        """Remove the lock file (only if it is still ours) and drop the flock; safe to call twice."""
        if self._fd is None:
            return
        try:
            if _is_current_file(self._fd, self.path):
                self.path.unlink()
        finally:
            os.close(self._fd)  # closing the last fd of the open file drops the flock
            self._fd = None

    def __enter__(self) -> ProfileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _judge_previous(self, fd: int) -> str | None:
        """We hold the flock; decide whether the content left in the file still belongs to a live run.

        The flock was free, so the holder is dead by the kernel's account. The content is checked
        anyway, because on a filesystem without working flock it is all we have.
        """
        data = _read_all(fd)
        if not data.strip():
            return None
        try:
            previous = LockInfo.parse(data)
        except ValueError as exc:
            return f"replaced an unreadable lock file {self.path} ({exc}); its holder had died while writing it"
        alive, reason = previous.process.liveness()
        if alive is False:
            return (
                f"reclaimed the lock of profile '{self.profile}' from {previous.describe()}: {reason}, "
                f"so that run was interrupted; see `runbook runs show {previous.run_id}`"
            )
        if self.force:
            return (
                f"forced: took over the lock of profile '{self.profile}' from {previous.describe()}, "
                f"whose liveness could not be checked ({reason})"
            )
        if alive is None:
            message = (
                f"profile '{self.profile}' is locked by {previous.describe()}. This host cannot check "
                f"whether it is still alive: {reason}. If that run is gone, take the lock over with "
                f"force (--force); otherwise wait for it, or see `runbook runs show {previous.run_id}`"
            )
        else:
            message = (
                f"profile '{self.profile}' is claimed by {previous.describe()}: {reason}, but it does not "
                f"hold the lock (was {self.path} replaced, or is the state dir on a filesystem without "
                f"flock?). If pid {previous.process.pid} is not that run, take the lock over with "
                f"force (--force); otherwise wait, or see `runbook runs show {previous.run_id}`"
            )
        raise LockUnverifiable(message, previous, self.path)

    def _held_message(self, holder: LockInfo | None) -> str:
        if holder is None:
            return (
                f"profile '{self.profile}' is locked by a process that has not written its details yet "
                f"({self.path}); try again in a moment, or list runs with `runbook runs`"
            )
        message = (
            f"profile '{self.profile}' is locked by {holder.describe()}; only one run per profile at a "
            f"time. Wait for it to finish, or see what it is doing with `runbook runs show {holder.run_id}`"
        )
        alive, reason = holder.process.liveness()
        if alive is False:
            message += (
                f". Its recorded process is gone ({reason}), yet the lock is still held, so a process it "
                f"started may hold it; find it with `fuser -v {self.path}`"
            )
        return message


def lock_path(state_dir: Path, profile: str) -> Path:
    return state_dir / "locks" / f"{profile}.lock"


def read_lock(state_dir: Path, profile: str) -> LockInfo | None:
    """What the profile's lock file says, without touching the lock; None when there is none or it is unreadable.

    Reading never takes the flock, so looking (``runbook runs``) cannot make a starting run fail.
    """
    try:
        return LockInfo.parse(lock_path(state_dir, profile).read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _read_holder(fd: int) -> LockInfo | None:
    try:
        return LockInfo.parse(_read_all(fd))
    except ValueError:
        return None


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _is_current_file(fd: int, path: Path) -> bool:
    """Does ``path`` still name the file open on ``fd`` (not unlinked or replaced since we opened it)?"""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks) from ``/proc/<pid>/stat``, or None when there is no such process.

    The command name (field 2) may hold spaces and parentheses, so fields are counted after the last ')'.
    """
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])  # fields 3 and 22 of the full line


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
