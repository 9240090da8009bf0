"""Faults during a run: each one injected into a real run (the CLI as a process, fakepve over verified
HTTPS behind per-node relays, a real sshd, a real pass store, the fake talosctl), then the cause is
removed and the run is resumed. docs/reliability.md describes each behaviour tested here.

The runbook ``fault-create`` (written into each test's home) pauses twice, so a test can inject its
fault at a known moment: before the clones (``pause_clone``) and before the VMs are configured
(``pause_configure``); each pause waits for a file named go1 / go2 in the work folder.

For every fault the test checks: the exit code, that the message says what happened and what to do,
that nothing was done twice, and that ``runbook resume`` finishes the run once the cause is gone.
Every output and journal is scanned for the token secret, as in test_run_e2e.py.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import PASS_PATH, SECRET, TOKEN_ID, LiveCluster, seed_cluster, write_home
from tests.support.fake_talosctl import install
from tests.support.fakepve_server import EXTRA_HOSTS, HOST, FakePveServer, closed_port_url
from tests.support.relay import Relay

STAGING = ("stg-cp01", "stg-cp02", "stg-cp03")
PROFILE = ("--profile", "talos-staging")
CLI_TIMEOUT = 90
GIB = 1024**3

FAULT_RUNBOOK = """\
---
name: fault-create
format: 2
description: Create the profile's VMs, pausing where a test injects a fault (tests only).
requires: [profile]
parameters:
  workdir:
    type: string
    description: Folder for the pause files (paused1/go1, paused2/go2).
---

## VMs in use

```api {id: existing, extract: '[.[] | .vmid]', timeout: 2}
GET /cluster/resources
type: vm
```

## Pause before the clones

```local {id: pause_clone}
touch {{ workdir }}/paused1
for i in $(seq 600); do [ -e {{ workdir }}/go1 ] && break; sleep 0.05; done
```

## Clone each VM, straight onto its node

```api {id: clone, foreach: plan.vms, as: vm, check: "vm.vmid in steps.existing", timeout: 2}
POST /nodes/pve01/qemu/{{ profile.template }}/clone
newid: "{{ vm.vmid }}"
name: "{{ vm.name }}"
full: 1
target: "{{ vm.node }}"
```

## Pause before configuring

```local {id: pause_configure}
touch {{ workdir }}/paused2
for i in $(seq 600); do [ -e {{ workdir }}/go2 ] && break; sleep 0.05; done
```

## Read the nodes

```api {id: nodes, timeout: 1}
GET /nodes
```

## Size and tag each VM (newest first)

A held lock is retried three times (0.2, 0.4, 0.8 s apart) before the step fails.

```api {id: configure, foreach: "plan.vms | reverse | list", as: vm, retries: 3, timeout: 2}
PUT /nodes/{{ vm.node }}/qemu/{{ vm.vmid }}/config
cores: "{{ vm.cores }}"
memory: "{{ vm.memory }}"
tags: "{{ vm.tags | join(';') }}"
```

## Start each VM

```api {id: start, foreach: plan.vms, as: vm, check: "false", timeout: 2}
POST /nodes/{{ vm.node }}/qemu/{{ vm.vmid }}/status/start
```

## Look at a node

```ssh {id: node_check, node: pve02, timeout: 10}
echo "node check: $(hostname >/dev/null && echo ok)"
```

## Ask Talos

```talosctl {id: health, timeout: 3}
--nodes {{ plan.controlplanes[0].ip }} health --wait-timeout 1m
```

## Done

```local {id: done}
echo "created {{ plan.vms | length }} VMs"
```
"""


# ------------------------------------------------------------------ fixtures

# ``services`` (a real sshd for the three nodes' hosts, a real pass store) comes from conftest.py.


class Faulty(LiveCluster):
    """A LiveCluster whose nodes sit behind relays, with the pause files of ``fault-create``."""

    relays: list[Relay]
    work: Path
    ssh_config: Path

    def go(self, which: int) -> None:
        (self.work / f"go{which}").touch()

    def paused(self, which: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.work / f"paused{which}").exists():
                return
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"the run ended (exit {process.returncode}) before pause {which}:\n{out}{err}")
            time.sleep(0.02)
        raise AssertionError(f"pause {which} not reached within {timeout}s")

    def start_run(self, *extra: str) -> subprocess.Popen[str]:
        return self.start("run", "fault-create", *PROFILE, "--param", f"workdir={self.work}", "--json", *extra)

    def finish(self, process: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
        """Wait for a run started with ``start_run``: exit code, final JSON report, stderr."""
        out, err = process.communicate(timeout=CLI_TIMEOUT)
        self.outputs += [out, err]
        return process.returncode, json.loads(out.splitlines()[-1]), err

    def resume(self, run_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("resume", run_id, "--json", *extra, timeout=CLI_TIMEOUT)

    def vms(self) -> dict[str, tuple]:
        def read() -> dict[str, tuple]:
            return {
                vm.name: (vm.vmid, vm.node, str(vm.config.get("cores")), vm.config.get("tags"), vm.status)
                for vm in self.pve.pve.vms
                if not vm.template
            }

        return self.pve.do(read)

    def requests(self) -> list[tuple[str, str, Any]]:
        return self.pve.do(lambda: list(self.pve.pve.requests))

    def clones(self) -> list[str]:
        return [p for m, p, _ in self.requests() if m == "POST" and p.endswith("/clone")]

    def complete(self) -> None:
        """The run's end state: three VMs on their planned nodes, sized, tagged and running."""
        assert self.vms() == {
            name: (1031 + i, node, "4", "talos;kubernetes;staging;controlplane", "running")
            for i, (name, node) in enumerate(zip(STAGING, ("pve01", "pve02", "pve03")))
        }


@pytest.fixture
def cluster(tmp_path: Path, services: tuple) -> Iterator[Faulty]:
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # a relay cutting connections is expected
    sshd, store = services
    (tmp_path / "pve").mkdir()
    with FakePveServer(tmp_path / "pve", SECRET) as pve:
        seed_cluster(pve)

        def sizes() -> None:  # the templates' disks as volumes with a size, so clones fill the storage
            volumes = pve.pve.storages["local-lvm"].setdefault("volumes", {})
            for vmid in (101, 102):
                volumes[f"base-{vmid}-disk-0"] = {"content": "images", "format": "raw", "size": 4 * GIB, "vmid": vmid}

        pve.do(sizes)
        relays = [Relay(host, (HOST, pve.port)) for host in (HOST, *EXTRA_HOSTS)]
        try:
            home = write_home(tmp_path / "home", pve, sshd, node_urls=[r.url for r in relays])
            (home / "runbooks" / "fault-create.md").write_text(FAULT_RUNBOOK)
            ssh_config = tmp_path / "ssh_config"  # a copy the tests may break (a node whose sshd refuses)
            ssh_config.write_text(sshd.ssh_config.read_text())
            ssh_config.chmod(0o600)
            config = yaml.safe_load((home / "cluster-config.yaml").read_text())
            config["credentials"]["ssh_config"] = str(ssh_config)
            (home / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            test = Faulty(home, pve, sshd, store, install(tmp_path / "talos"))
            test.relays, test.work, test.ssh_config = relays, tmp_path / "work", ssh_config
            test.work.mkdir()
            yield test
            assert SECRET not in test.every_byte(), "the API token leaked into an output or a journal"
        finally:
            for relay in relays:
                relay.close()


def through_pause(
    cluster: Faulty, which: int, fault: Callable[[], None], *extra: str
) -> tuple[int, dict[str, Any], str]:
    """Run fault-create, inject ``fault`` at pause ``which`` (the other pause passes), and wait for the end."""
    cluster.go(3 - which)
    process = cluster.start_run(*extra)
    try:
        cluster.paused(which, process)
        fault()
        cluster.go(which)
        return cluster.finish(process)
    finally:
        if process.poll() is None:
            process.kill()
            cluster.outputs += list(process.communicate())


def resumed_ok(cluster: Faulty, run_id: str, *extra: str) -> dict[str, Any]:
    result = cluster.resume(run_id, *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["status"] == "succeeded"
    cluster.complete()
    return report


def step_status(report: dict[str, Any]) -> dict[tuple[str, str | None], str]:
    return {(s["step"], s["item"]): s["status"] for s in report["steps"]}


# ------------------------------------------------------------------ the network


def test_a_dropped_post_is_not_sent_again_and_the_run_stops_saying_to_check(cluster: Faulty) -> None:
    code, report, _ = through_pause(cluster, 1, lambda: cluster.pve.do(cluster.pve.pve.flaky_network, drop_rate=1.0))
    assert code == 5
    message = report["message"]
    assert (
        "step 'clone[stg-cp01]' failed: POST /nodes/pve01/qemu/101/clone was sent to pve01, but no answer "
        "came back" in message
    )
    assert "It may or may not have been carried out, so it is not sent again: check the cluster" in message
    assert f"runbook resume {report['run_id']}" in message
    assert cluster.vms() == {}  # fakepve dropped it before carrying it out
    cluster.pve.do(cluster.pve.pve.flaky_network)  # the network is back
    resumed_ok(cluster, report["run_id"])
    assert len(cluster.clones()) == 3


def test_dropped_reads_and_writes_are_retried_and_the_run_ends_as_a_clean_one(tmp_path: Path, services: tuple) -> None:
    """A lossy network (a third of the requests dropped, seeded): GETs and PUTs are sent again after a
    pause, a POST that got no answer stops the step; resuming (as often as it takes) ends the run with
    each VM cloned once."""
    sshd, store = services
    (tmp_path / "pve").mkdir()
    with FakePveServer(tmp_path / "pve", SECRET, seed=7) as pve:
        seed_cluster(pve)
        home = write_home(tmp_path / "home", pve, sshd)
        (home / "runbooks" / "fault-create.md").write_text(FAULT_RUNBOOK)
        cluster = LiveCluster(home, pve, sshd, store, install(tmp_path / "talos"))
        work = tmp_path / "work"
        work.mkdir()
        for go in ("go1", "go2"):
            (work / go).touch()
        pve.do(pve.pve.flaky_network, drop_rate=0.3, seed=7)
        result = cluster.run(
            "run", "fault-create", *PROFILE, "--param", f"workdir={work}", "--json", timeout=CLI_TIMEOUT
        )
        outcomes = [result.returncode]
        run_id = json.loads(result.stdout.splitlines()[-1])["run_id"] if result.stdout.strip() else None
        for _ in range(20):
            if outcomes[-1] == 0:
                break
            if run_id is None:  # the plan's GET got no answer four times: nothing ran, start again
                assert "cannot read the cluster to plan" in result.stderr, result.stderr
                result = cluster.run(
                    "run", "fault-create", *PROFILE, "--param", f"workdir={work}", "--json", timeout=CLI_TIMEOUT
                )
                run_id = json.loads(result.stdout.splitlines()[-1])["run_id"] if result.stdout.strip() else None
            else:
                message = json.loads(result.stdout.splitlines()[-1])["message"]
                assert re.search(r"no answer came back|no answer from pve0\d after 4 attempts", message), message
                result = cluster.run("resume", run_id, "--json", timeout=CLI_TIMEOUT)
            outcomes.append(result.returncode)
        assert outcomes[-1] == 0, (outcomes, result.stdout[-2000:], result.stderr)
        assert len(outcomes) > 1, "the seeded drops should have stopped the run at least once"
        assert "trying again in" in "".join(cluster.outputs), "no dropped request was retried"
        names = pve.do(lambda: sorted(vm.name for vm in pve.pve.vms if not vm.template))
        assert names == list(STAGING)
        clones = pve.do(lambda: [b for m, p, b in pve.pve.requests if m == "POST" and p.endswith("/clone")])
        assert len(clones) == 3, "a clone was sent twice"
        assert SECRET not in cluster.every_byte()


def test_a_hung_read_is_sent_again_then_stops_the_run_and_resume_finishes(cluster: Faulty) -> None:
    def hang() -> None:
        cluster.pve.do(cluster.pve.pve.flaky_network, hang_rate=1.0, hang_secs=2)

    started = time.monotonic()
    code, report, _ = through_pause(cluster, 2, hang)
    took = time.monotonic() - started
    assert code == 5
    message = report["message"]
    # A GET changes nothing: sent four times, each waited for up to the step's timeout (1 s).
    assert "step 'nodes' failed: GET /nodes: no answer from pve01 after 4 attempts (last: ReadTimeout" in message
    assert "Check the network to the nodes and that pveproxy is healthy" in message
    assert took < 20, f"a 1 s step timeout took {took:.0f} s to end the run"
    cluster.pve.do(cluster.pve.pve.flaky_network)
    resumed_ok(cluster, report["run_id"])


def test_a_hung_post_is_not_repeated(cluster: Faulty) -> None:
    code, report, _ = through_pause(
        cluster, 1, lambda: cluster.pve.do(cluster.pve.pve.flaky_network, hang_rate=1.0, hang_secs=3)
    )
    assert code == 5
    assert (
        "POST /nodes/pve01/qemu/101/clone was sent to pve01, but no answer came back (ReadTimeout" in report["message"]
    )
    assert "It may or may not have been carried out" in report["message"]
    cluster.pve.do(cluster.pve.pve.flaky_network)
    # As the message says: check the cluster before running the step again. Here the hung request was
    # never carried out (the client gave up on it); the resume's check finds no VM and clones it.
    time.sleep(3.5)
    assert cluster.vms() == {}
    report = resumed_ok(cluster, report["run_id"])
    assert step_status(report)[("clone", "name=stg-cp01")] == "succeeded"
    assert len(cluster.clones()) == 3  # hung requests are not logged by fakepve: one clone each got through


# ------------------------------------------------------------------ nodes and the cluster


def test_a_node_that_dies_mid_run_is_failed_over_and_its_own_vm_stops_the_run(cluster: Faulty) -> None:
    """pve01, the node the run talks to, dies after the clones: requests go to pve02 instead; the VMs on
    pve03 and pve02 are configured through it; the one on pve01 cannot be (595), which stops the run
    naming the node. Once pve01 is back, resume finishes."""

    def pve01_dies() -> None:
        cluster.relays[0].down()
        cluster.pve.do(cluster.pve.pve.set_node_offline, "pve01")

    code, report, _ = through_pause(cluster, 2, pve01_dies)
    assert code == 5
    status = step_status(report)
    assert status[("configure", "name=stg-cp03")] == "succeeded"
    assert status[("configure", "name=stg-cp02")] == "succeeded"
    message = report["message"]
    assert (
        "step 'configure[stg-cp01]' failed: PUT /nodes/pve01/qemu/1031/config on pve02: 595 No route to "
        "host: pve02 could not reach the node named in the path. Check that node is up and in the cluster "
        "(`pvecm status`)" in message
    )
    cluster.relays[0].up()
    cluster.pve.do(cluster.pve.pve.set_node_offline, "pve01", False)
    resumed_ok(cluster, report["run_id"])


def test_lost_quorum_stops_before_any_change_and_resume_finishes(cluster: Faulty) -> None:
    code, report, _ = through_pause(cluster, 1, lambda: cluster.pve.do(cluster.pve.pve.lose_quorum))
    assert code == 5
    message = report["message"]
    assert (
        "step 'clone[stg-cp01]' failed: POST /nodes/pve01/qemu/101/clone on pve01: HTTP 500 cluster not "
        "ready - no quorum?" in message
    )
    assert "lost quorum" in message and "pvecm status" in message and "nothing was changed" in message
    assert cluster.vms() == {}
    cluster.pve.do(cluster.pve.pve.regain_quorum)
    resumed_ok(cluster, report["run_id"])


def test_a_backup_lock_is_retried_then_stops_and_resume_finishes(cluster: Faulty) -> None:
    code, report, _ = through_pause(cluster, 2, lambda: cluster.pve.do(cluster.pve.pve.snapshot_lock, 1032, "backup"))
    assert code == 5
    message = report["message"]
    assert (
        "step 'configure[stg-cp02]' failed: PUT /nodes/pve02/qemu/1032/config on pve01: HTTP 500 VM is "
        "locked (backup)" in message
    )
    assert "backup" in message and "qm unlock 1032" in message
    puts = [p for m, p, _ in cluster.requests() if m == "PUT" and p.endswith("/1032/config")]
    assert len(puts) >= 4, "a held lock is retried (retries: 3) before the step fails"
    cluster.pve.do(cluster.pve.pve.unlock, 1032)
    resumed_ok(cluster, report["run_id"])


def test_a_backup_that_ends_while_the_step_retries_lets_the_run_go_on(cluster: Faulty) -> None:
    def backup() -> None:
        cluster.pve.pve.time_scale = 0.05  # the backup holds the lock for 10 PVE s: half a second
        cluster.pve.call(cluster.pve.pve.backup(1032, secs=10))

    code, report, _ = through_pause(cluster, 2, backup)
    assert code == 0, report["message"]
    cluster.complete()
    puts = [p for m, p, _ in cluster.requests() if m == "PUT" and p.endswith("/1032/config")]
    assert len(puts) >= 2, "the first attempt should have met the backup's lock"


def test_a_task_error_stops_the_run_with_the_task_log_and_resume_finishes(cluster: Faulty) -> None:
    def fail_start() -> None:
        cluster.pve.do(cluster.pve.pve.fail, "POST", "/qemu/1032/status/start", error="qemu_exited_code", times=1)

    code, report, _ = through_pause(cluster, 2, fail_start)
    assert code == 5
    message = report["message"]
    assert "step 'start[stg-cp02]' failed: task qmstart on pve02 failed: QEMU exited with code" in message
    assert "last lines of its log:" in message and "TASK ERROR: QEMU exited with code" in message
    assert f"Fix the cause, then continue where it stopped: runbook resume {report['run_id']}" in message
    report = resumed_ok(cluster, report["run_id"])
    assert step_status(report)[("start", "name=stg-cp01")] == "succeeded"  # finished before: not redone
    starts = [p for m, p, _ in cluster.requests() if m == "POST" and p.endswith("/status/start")]
    assert sorted(starts) == sorted(
        f"/api2/json/nodes/{n}/qemu/{v}/status/start"
        for n, v in (("pve01", 1031), ("pve02", 1032), ("pve02", 1032), ("pve03", 1033))
    )


def test_a_token_revoked_mid_run_is_a_401_naming_the_token_and_resume_finishes(cluster: Faulty) -> None:
    saved: dict[str, str] = {}

    def revoke() -> None:
        saved.update(cluster.pve.pve.apitokens)
        cluster.pve.pve.apitokens.clear()

    code, report, _ = through_pause(cluster, 2, lambda: cluster.pve.do(revoke))
    assert code == 5
    message = report["message"]
    assert f"the API rejected token {TOKEN_ID} from pass entry '{PASS_PATH}' (401 authentication failure)" in message
    assert "pveum user token list" in message and "create a new token" in message
    cluster.pve.do(cluster.pve.pve.apitokens.update, saved)
    resumed_ok(cluster, report["run_id"])


def test_a_full_storage_fails_the_clone_task_and_resume_finishes_once_there_is_room(cluster: Faulty) -> None:
    def fill() -> None:  # room for one 4 GiB clone, not two
        cluster.pve.do(cluster.pve.pve.storages["local-lvm"].__setitem__, "avail", 5 * GIB)

    code, report, _ = through_pause(cluster, 1, fill)
    assert code == 5
    message = report["message"]
    assert (
        "step 'clone[stg-cp02]' failed: task qmclone on pve01 failed: clone failed: unable to write to "
        "storage 'local-lvm': No space left on device" in message
    )
    assert "storage is full" in message
    assert sorted(cluster.vms()) == ["stg-cp01"], "the failed clone left a VM behind"
    cluster.pve.do(cluster.pve.pve.storages["local-lvm"].__setitem__, "avail", 100 * GIB)
    report = resumed_ok(cluster, report["run_id"])
    assert step_status(report)[("clone", "name=stg-cp01")] == "succeeded"


# ------------------------------------------------------------------ TLS


def test_a_certificate_that_stops_verifying_mid_run_stops_the_run_without_sending(
    cluster: Faulty, tmp_path: Path
) -> None:
    """Something answers at pve01's address with another certificate (a machine in the middle, or a
    renewed certificate): nothing is sent to it, the step stops naming the node and the setting to
    check, and no other node is tried in its place. Once the real node answers again, resume finishes."""
    (tmp_path / "mitm").mkdir()
    with FakePveServer(tmp_path / "mitm", "not-the-secret") as mitm:
        code, report, _ = through_pause(cluster, 2, lambda: cluster.relays[0].switch((HOST, mitm.port)))
        assert code == 5
        message = report["message"]
        assert (
            f"step 'nodes' failed: GET /nodes: the certificate of node pve01 ({cluster.relays[0].url}) does not "
            "verify (TLS certificate does not verify" in message
        )
        assert "tls.ca_file" in message and "/etc/pve/pve-root-ca.pem" in message
        assert "Nothing was sent, and no other node was tried in its place" in message
        assert mitm.do(lambda: list(mitm.pve.requests)) == [], "a request reached the impostor"
        configured = [p for m, p, _ in cluster.requests() if m == "PUT"]
        assert configured == [], "another node was tried in its place"
    cluster.relays[0].switch((HOST, cluster.pve.port))
    resumed_ok(cluster, report["run_id"])


def test_a_pinned_fingerprint_that_does_not_match_stops_naming_both(cluster: Faulty, tmp_path: Path) -> None:
    config_path = cluster.home / "cluster-config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["tls"] = {"fingerprint": cluster.pve.fingerprint}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp_path / "mitm").mkdir()
    with FakePveServer(tmp_path / "mitm", "not-the-secret") as mitm:
        cluster.relays[0].switch((HOST, mitm.port))
        cluster.go(1)
        cluster.go(2)
        result = cluster.run("run", "fault-create", *PROFILE, "--param", f"workdir={cluster.work}", timeout=CLI_TIMEOUT)
        assert result.returncode == 10, "refused on the first read, before any run existed"
        assert (
            f"the certificate of node pve01 ({cluster.relays[0].url}) has SHA-256 fingerprint "
            f"{mitm.fingerprint}, but tls.fingerprint in cluster-config.yaml is {cluster.pve.fingerprint}. "
            "Nothing was sent." in result.stderr
        )
        assert mitm.do(lambda: list(mitm.pve.requests)) == []
    cluster.relays[0].switch((HOST, cluster.pve.port))
    again = cluster.run("run", "fault-create", *PROFILE, "--param", f"workdir={cluster.work}", timeout=CLI_TIMEOUT)
    assert again.returncode == 0, again.stderr
    cluster.complete()


# ------------------------------------------------------------------ programs


def test_a_hung_talosctl_is_killed_at_the_timeout_and_resume_finishes(cluster: Faulty) -> None:
    cluster.talos.respond(["--nodes"], stderr="waiting for the node to answer\n", hang=True)
    code, report, _ = through_pause(cluster, 1, lambda: None)
    assert code == 5
    message = report["message"]
    assert (
        "step 'health' failed: `talosctl --nodes 10.20.0.31 health --wait-timeout 1m` timed out after 3 s and "
        "was killed" in message
    )
    assert "Is the node up and reachable on the Talos API (port 50000)" in message
    assert "waiting for the node to answer" in message
    (call,) = cluster.talos.calls()
    assert not Path(f"/proc/{call['pid']}").exists() or "State:\tZ" in Path(f"/proc/{call['pid']}/status").read_text()
    cluster.talos.state.write_text(json.dumps({"rules": []}))  # Talos answers again
    report = resumed_ok(cluster, report["run_id"])
    assert step_status(report)[("health", None)] == "succeeded"


def test_an_ssh_host_that_refuses_stops_the_run_and_resume_finishes(cluster: Faulty) -> None:
    good = cluster.ssh_config.read_text()

    def refuse() -> None:  # sshd on pve02's address stops listening
        port = closed_port_url().rsplit(":", 1)[1]
        cluster.ssh_config.write_text(re.sub(r"Port \d+", f"Port {port}", good))

    code, report, _ = through_pause(cluster, 2, refuse)
    assert code == 5
    message = report["message"]
    assert (
        f"step 'node_check' failed: ssh to node pve02 ({cluster.sshd.user}@{EXTRA_HOSTS[0]}) failed: "
        "connection refused. Nothing accepts SSH connections there: is sshd running on the node" in message
    )
    assert "Try `ssh -F" in message
    cluster.ssh_config.write_text(good)
    report = resumed_ok(cluster, report["run_id"])
    assert step_status(report)[("node_check", None)] == "succeeded"
