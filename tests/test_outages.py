"""API outages mid-wave: the run rides them out (docs/reliability.md, "API outages").

The shipped ``cluster-create`` runs (the CLI as a process) against the simulated cluster in a
process of its own (``tests/support/pve_process.py``), each node behind a real TCP relay
(``tests/support/relay.py``). While the VMs are being cloned, migrated or started, every relay goes
down for a few seconds: new connections are refused and open ones are cut (as a pveproxy restart
or a network blip does), then it comes back. The run must finish on its own, with every VM made
exactly once and each change made once, and the outage must show on the progress line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from engine.run.journal import read_journal
from tests.support.pve_process import PveProcess
from tests.support.relay import Relay
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = Path(sys.executable).parent / "runbook"
SECRET = "outage-3c9e71d2a5b84f06-wave-8d2f"
TOKEN_ID = "root@pam!runbook"
TIME_SCALE = 0.05  # real seconds per PVE second
#: PVE seconds per task type: a clone holds its VM's lock for 1.5 s, a start takes 0.5 s (a migration 1 s).
TASK_SECS = {"qmclone": 30.0, "qmstart": 10.0}
OUTAGE = 2.5  # seconds every node's API is gone
VMS = ("dev-cp01", "dev-w01", "dev-w02", "dev-w03")


class Wave:
    """A cluster in its own process, its nodes behind relays, and a home whose config points at them."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True)
        shutil.copy(REPO / "cluster-config.yaml", self.home / "cluster-config.yaml")
        shutil.copytree(REPO / "clusters", self.home / "clusters")
        profile = self.home / "clusters" / "dev-generic.yaml"  # spread over the nodes: clones are migrated
        profile.write_text(profile.read_text().replace("placement: pack", "placement: spread"))
        (self.home / "runbooks").mkdir()
        for name in ("cluster-create", "talos-cluster-bootstrap"):  # create runs bootstrap's Talos sequence
            shutil.copy(REPO / "runbooks" / f"{name}.md", self.home / "runbooks" / f"{name}.md")
        self.fake = PveProcess.start(root / "pve", self.home, SECRET, time_scale=TIME_SCALE, listeners=3)
        self.relays: list[Relay] = []
        try:
            self.fake.call("set_task_secs", TASK_SECS)
            for url in self.fake.urls:
                host, port = url.split("//")[1].rsplit(":", 1)
                self.relays.append(Relay(host, (host, int(port))))
            config = yaml.safe_load((self.home / "cluster-config.yaml").read_text())
            config["cluster"]["nodes"] = [
                dict(node, host=relay.host, port=relay.port)
                for node, relay in zip(config["cluster"]["nodes"], self.relays)
            ]
            config["tls"] = {"ca_file": self.fake.certfile}
            config["limits"] = {"api_outage_window": 30}
            (self.home / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        except BaseException:
            self.stop()
            raise
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "PROXMOX_"))}
        self.env.update(RUNBOOK_HOME=str(self.home), PROXMOX_API_TOKEN=f"{TOKEN_ID}={SECRET}", NO_COLOR="1")

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(RUNBOOK), "run", "cluster-create", "--profile", "dev-generic"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def posted(self, suffix: str) -> int:
        """How many POSTs whose path ends with ``suffix`` the cluster answered so far."""
        return sum(1 for o in self.fake.outcomes() if o["method"] == "POST" and o["path"].endswith(suffix))

    def outage(self) -> None:
        for relay in self.relays:
            relay.down()
        time.sleep(OUTAGE)
        for relay in self.relays:
            relay.up()

    def changes(self) -> tuple[Counter[tuple[str, ...]], list[str]]:
        """Each change the cluster carried out, by method and path (and a clone's new VMID); and every
        refused or failed one."""
        tasks = {t["upid"]: t for t in self.fake.tasks()}
        done: Counter[tuple[str, ...]] = Counter()
        failed = []
        for outcome in self.fake.outcomes():
            if outcome["method"] == "GET":
                continue
            key: tuple[str, ...] = (outcome["method"], outcome["path"].removeprefix("/api2/json"))
            if key[1].endswith("/clone"):
                key += (str(outcome["params"].get("newid")),)
            exitstatus = tasks.get(outcome["upid"], {}).get("exitstatus") if outcome["upid"] else "OK"
            if 200 <= outcome["status"] < 300 and exitstatus == "OK":
                done[key] += 1
            else:
                failed.append(f"{key}: {outcome['status']} {outcome['reason']} {exitstatus}")
        return done, failed

    def stop(self) -> None:
        for relay in self.relays:
            relay.close()
        self.fake.stop()


@pytest.fixture
def wave(tmp_path: Path) -> Iterator[Wave]:
    made = Wave(tmp_path)
    yield made
    made.stop()


#: When to cut. A POST whose connection is cut may or may not have been carried out, so it is never sent
#: again and stops its step (test_faults.py): the cuts come while only reads, task polls and the requests
#: of items that will wait for the API are in flight, as a pveproxy restart between two waves does.
MOMENTS: dict[str, Callable[[Wave], bool]] = {
    # every clone sent and running (each holds its new VM's lock)
    "clones running": lambda wave: wave.posted("/clone") == len(VMS),
    # dev-w01 and dev-w02 migrating to their nodes, while dev-cp01 and dev-w03 (on the template's node) start
    "migrations": lambda wave: wave.posted("/migrate") == 2 and wave.posted("/status/start") == 2,
    # every VM starting
    "starts": lambda wave: wave.posted("/status/start") == len(VMS),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_an_api_outage_mid_wave_is_ridden_out_and_every_vm_is_made_once(wave: Wave, moment: str) -> None:
    reached = MOMENTS[moment]
    process = wave.start()
    try:
        wait_for(lambda: reached(wave) or process.poll() is not None, 60, moment)
        assert process.poll() is None, f"the run ended before the outage: {process.communicate()}"
        wave.outage()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    assert "API outage: no node answers (" in err, err
    assert "API answers again" in err, err
    state = wave.fake.state()
    made = sorted(vm["name"] for vm in state["vms"] if not vm["template"])
    assert made == sorted(VMS)
    assert all(vm["status"] == "running" and not vm["lock"] for vm in state["vms"] if not vm["template"])
    done, failed = wave.changes()
    assert not failed, failed
    assert set(done.values()) == {1}, f"a change was made twice: {done}"
    assert len([key for key in done if key[1].endswith("/clone")]) == len(VMS)
    run_id = next((wave.home / ".runbook" / "runs").iterdir()).name
    records, _ = read_journal(wave.home / ".runbook" / "runs" / run_id / "journal.jsonl")
    upids = [r for r in records if r["type"] == "task_started" and r["step"] == "clone"]
    assert len(upids) == len(VMS), "each clone's UPID is journaled"
    assert SECRET not in out + err


# ------------------------------------------------------------------ locks held when a run plans


def _finished(wave: Wave) -> None:
    process = wave.start()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err


def test_a_run_waits_for_the_task_holding_a_lock_and_stops_on_a_stale_one(wave: Wave) -> None:
    """A VM of the plan locked by a running backup is neither "already in place" nor "misplaced": the run
    follows the vzdump to its end, then plans and goes on. A lock no task holds stops the run before it
    changes anything, saying how to clear it."""
    _finished(wave)
    # 10 s holding lock 'backup': long enough that the run, started under a loaded machine's slow
    # interpreter start, still finds the lock held when it reads the cluster.
    wave.fake.call("backup", 1211, 200)
    started = time.monotonic()
    process = wave.start()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    assert time.monotonic() - started > 2, "the run did not wait for the backup"
    assert "VM 1211 (dev-w01) is locked (backup): waiting for task vzdump of 1211 on " in err, err
    assert not [vm for vm in wave.fake.state()["vms"] if vm["lock"]]

    wave.fake.call("snapshot_lock", 1212, "clone")  # as a clone interrupted on the node leaves it
    before = len(wave.fake.outcomes())
    process = wave.start()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 10, out + err  # no run was made: nothing to resume
    assert "VM 1212 (dev-w02) on pve0" in err and "holds lock 'clone', but no task runs on it" in err, err
    assert "`qm unlock 1212`" in err, err
    assert [o for o in wave.fake.outcomes()[before:] if o["method"] != "GET"] == []
