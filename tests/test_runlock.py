"""The profile lock: one run per profile, held by the kernel for the life of the process, stale ones reclaimed."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.run.runlock import LockHeld, LockInfo, LockUnverifiable, ProcessIdentity, ProfileLock, lock_path, read_lock
from tests.conftest import REPO

HOLDER = """
import sys, time
from pathlib import Path
from engine.run.runlock import ProfileLock
ProfileLock(Path(sys.argv[1]), "prod", "20261128-142233-child-0001").acquire()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def child_holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the 'prod' lock, as another run would."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "locked\n"
    yield child
    child.kill()
    child.wait()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process, whose pid a stale lock file may happen to name."""
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def write_lock(state: Path, process: ProcessIdentity, run_id: str = "20261127-090000-old-beef") -> None:
    path = lock_path(state, "prod")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(LockInfo(run_id, "2026-11-27T09:00:00+00:00", process).as_json())


def identity_of(pid: int) -> ProcessIdentity:
    """What ProcessIdentity.current() would say inside process ``pid``."""
    here = ProcessIdentity.current()
    stat = Path(f"/proc/{pid}/stat").read_text()
    return ProcessIdentity(pid, here.host, int(stat[stat.rindex(")") + 2 :].split()[19]), here.boot_id)


def test_the_lock_file_names_its_holder_and_goes_away_on_release(tmp_path: Path) -> None:
    with ProfileLock(tmp_path, "prod", "20261128-142233-mine-0001") as lock:
        assert lock.held and lock.note is None
        data = json.loads(lock.path.read_text())
        assert data["pid"] == os.getpid() and data["run_id"] == "20261128-142233-mine-0001"
        assert set(data) == {"pid", "host", "run_id", "started", "process_start", "boot_id"}
        assert read_lock(tmp_path, "prod") == LockInfo.parse(lock.path.read_bytes())
    assert not lock.held and not lock.path.exists() and read_lock(tmp_path, "prod") is None
    lock.release()  # twice is harmless
    with ProfileLock(tmp_path, "prod", "20261128-142234-again-0002"):
        pass


def test_a_second_acquire_in_the_same_process_is_refused_with_the_holders_details(tmp_path: Path) -> None:
    with ProfileLock(tmp_path, "prod", "20261128-142233-first-0001"):
        with pytest.raises(LockHeld) as caught:
            ProfileLock(tmp_path, "prod", "20261128-142240-second-0002").acquire()
        message = str(caught.value)
        for part in (
            "20261128-142233-first-0001",
            f"pid {os.getpid()}",
            os.uname().nodename,
            "since 20",
            "runbook runs show 20261128-142233-first-0001",
            "Wait",
        ):
            assert part in message
        assert not isinstance(caught.value, LockUnverifiable)
        with ProfileLock(tmp_path, "other-profile", "20261128-142240-second-0002"):
            pass  # other profiles are independent


def test_a_lock_held_by_another_process_blocks_until_it_is_killed(
    tmp_path: Path, child_holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(LockHeld, match=rf"run 20261128-142233-child-0001 \(pid {child_holder.pid} on "):
        ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001", force=True).acquire()  # force cannot break it
    child_holder.send_signal(signal.SIGKILL)
    child_holder.wait()
    assert lock_path(tmp_path, "prod").exists()  # SIGKILL left the file; the kernel dropped the flock
    lock = ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001")
    note = lock.acquire()
    assert note is not None and "20261128-142233-child-0001" in note and "no longer running" in note
    assert "runbook runs show 20261128-142233-child-0001" in note
    assert read_lock(tmp_path, "prod").run_id == "20261128-142300-mine-0001"  # type: ignore[union-attr]
    lock.release()


def test_a_killed_holder_not_yet_reaped_is_dead(tmp_path: Path, child_holder: subprocess.Popen[str]) -> None:
    child_holder.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child_holder.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001") as lock:
        assert lock.note is not None and "has exited" in lock.note


def test_a_stale_lock_file_of_a_dead_pid_is_reclaimed(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_lock(tmp_path, ProcessIdentity(gone.pid, os.uname().nodename, 12345, ProcessIdentity.current().boot_id))
    with ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001") as lock:
        assert lock.note is not None and f"pid {gone.pid} is no longer running" in lock.note


def test_a_reused_pid_is_told_apart_by_its_start_time(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    real = identity_of(sleeper.pid)
    assert real.liveness().alive is True
    write_lock(tmp_path, ProcessIdentity(real.pid, real.host, (real.process_start or 0) - 1, real.boot_id))
    with ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001") as lock:
        assert lock.note is not None and "now belongs to another process" in lock.note


def test_a_lock_file_from_before_a_reboot_is_reclaimed(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    real = identity_of(sleeper.pid)
    write_lock(tmp_path, ProcessIdentity(real.pid, real.host, real.process_start, "another-boot"))
    with ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001") as lock:
        assert lock.note is not None and "restarted" in lock.note


def test_a_live_claimant_without_the_flock_needs_force(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """Both the kernel and the recorded process must say 'dead': a filesystem without flock still gets a check."""
    write_lock(tmp_path, identity_of(sleeper.pid))
    with pytest.raises(LockUnverifiable, match=rf"pid {sleeper.pid} is still running.*force"):
        ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001").acquire()
    assert read_lock(tmp_path, "prod").run_id == "20261127-090000-old-beef"  # type: ignore[union-attr]
    with ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001", force=True) as lock:
        assert lock.note is not None and lock.note.startswith("forced")


def test_a_lock_from_another_host_cannot_be_checked_and_needs_force(tmp_path: Path) -> None:
    write_lock(tmp_path, ProcessIdentity(4242, "elsewhere.example.net", 99, "their-boot"))
    with pytest.raises(LockUnverifiable) as caught:
        ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001").acquire()
    message = str(caught.value)
    for part in (
        "20261127-090000-old-beef",
        "pid 4242 on elsewhere.example.net",
        "since 2026-11-27T09:00:00",
        "cannot check",
        "--force",
        "runbook runs show 20261127-090000-old-beef",
    ):
        assert part in message
    with ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001", force=True) as lock:
        assert lock.note is not None and "elsewhere.example.net" in lock.note


def test_an_unreadable_lock_file_is_replaced_with_a_note(tmp_path: Path) -> None:
    path = lock_path(tmp_path, "prod")
    path.parent.mkdir(parents=True)
    path.write_text('{"run_id": "2026')
    with ProfileLock(tmp_path, "prod", "20261128-142300-mine-0001") as lock:
        assert lock.note is not None and "unreadable" in lock.note


def test_profile_names_that_are_not_file_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot name a lock file"):
        ProfileLock(tmp_path, "../escape", "20261128-142300-mine-0001")


def test_losing_the_race_with_a_release_retries_on_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder unlinks and closes between our open and our flock: the flock we get is on an orphaned inode."""
    first = ProfileLock(tmp_path, "prod", "20261128-142233-first-0001")
    first.acquire()
    real_flock = fcntl.flock
    calls: list[int] = []

    def release_in_between(fd: int, operation: int) -> None:
        if not calls:
            first.release()
        calls.append(fd)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", release_in_between)
    with ProfileLock(tmp_path, "prod", "20261128-142240-second-0002") as second:
        assert len(calls) == 2  # the orphaned inode was dropped and the path opened again
        assert read_lock(tmp_path, "prod").run_id == "20261128-142240-second-0002"  # type: ignore[union-attr]
        monkeypatch.setattr(fcntl, "flock", real_flock)
        with pytest.raises(LockHeld):
            ProfileLock(tmp_path, "prod", "20261128-142250-third-0003").acquire()
    assert not second.held


def test_a_held_lock_naming_a_dead_process_points_at_who_really_holds_it(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with ProfileLock(tmp_path, "prod", "20261128-142233-first-0001") as lock:
        write_lock(tmp_path, ProcessIdentity(gone.pid, os.uname().nodename, None, None))
        with pytest.raises(LockHeld, match=rf"no longer running.*fuser -v {lock.path}"):
            ProfileLock(tmp_path, "prod", "20261128-142240-second-0002").acquire()
