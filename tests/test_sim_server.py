"""The simulated cluster, driven by the real API executor over HTTPS, and its state file.

Why through ``ApiExecutor``: simulated runs use the same executor as real ones, so what matters is
what that executor sees (TLS verified, token accepted, PVE's refusals in PVE's words), not what
the fake holds in memory.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.executors.api import ApiExecutor, PollPolicy
from engine.load.config import load_config
from engine.load.home import Home
from engine.load.profiles import load_profiles
from engine.run.credentials import ApiToken
from engine.runbook.actions import ApiRequest, StepFailed
from engine.sim.server import TOKEN_ID, SimCluster, SimPve, state_path
from engine.sim.state import FORMAT, VERSION, SimState, SimStateError, load

FAST = PollPolicy(initial=0.01, factor=1.5, cap=0.05)


class SimTokens:
    """The token source the engine would build for a simulated run: the sim's own token."""

    def __init__(self, sim: SimCluster):
        self.sim = sim

    def get(self) -> ApiToken:
        return self.sim.token()


def start(home: Home, **options: Any) -> SimCluster:
    config = load_config(home)
    profiles, problems = load_profiles(home, config)
    assert problems == []
    return SimCluster.start(home, config, profiles, **options)


def executor(sim: SimCluster) -> ApiExecutor:
    return ApiExecutor(sim.endpoints(), SimTokens(sim), sim.verify(), poll=FAST, retries=0)


def call(api: ApiExecutor, method: str, path: str, **params: Any) -> Any:
    return api.execute(ApiRequest(method, path, params)).data


def vms(api: ApiExecutor) -> dict[int, dict[str, Any]]:
    return {vm["vmid"]: vm for vm in call(api, "GET", "/cluster/resources", type="vm")}


@pytest.fixture
def home(make_home: Callable[..., Home]) -> Home:
    """A copy of the repository's home (three nodes, profiles with templates 101 and 102)."""
    return make_home(runbooks=False)


@pytest.fixture
def sim(home: Home) -> Iterator[SimCluster]:
    cluster = start(home)
    yield cluster
    cluster.stop()


@pytest.fixture
def api(sim: SimCluster) -> Iterator[ApiExecutor]:
    with executor(sim) as client:
        yield client


def clone(api: ApiExecutor, newid: int = 1031, name: str = "stg-cp01") -> None:
    call(api, "POST", "/nodes/pve01/qemu/101/clone", newid=newid, name=name)


# ------------------------------------------------------------------ seeding


def test_seeds_the_config_nodes_storages_and_profile_templates(sim: SimCluster, api: ApiExecutor) -> None:
    nodes = call(api, "GET", "/nodes")
    assert [(n["node"], n["status"]) for n in nodes] == [("pve01", "online"), ("pve02", "online"), ("pve03", "online")]
    storages = {(s["node"], s["storage"]): s for s in call(api, "GET", "/cluster/resources", type="storage")}
    assert sorted({sid for _, sid in storages}) == ["local", "local-lvm"]
    assert storages[("pve02", "local")]["content"] == "iso,vztmpl,backup,import"
    assert storages[("pve03", "local-lvm")]["plugintype"] == "lvmthin"
    assert storages[("pve03", "local-lvm")]["shared"] == 0

    seeded = vms(api)
    assert sorted(seeded) == [101, 102]
    assert seeded[101]["name"] == "talos-v1.9.5-template"
    assert seeded[102]["name"] == "template-102"
    for vm in seeded.values():
        assert (vm["node"], vm["template"], vm["status"], vm["tags"]) == ("pve01", 1, "stopped", "template;talos")
        assert vm["maxdisk"] == 8 * 1024**3
    config = call(api, "GET", "/nodes/pve01/qemu/101/config")
    assert (config["template"], config["bios"], config["scsi0"]) == (1, "ovmf", "local-lvm:base-101-disk-0,size=8G")
    assert sim.endpoints() == [(node, sim.url) for node in ("pve01", "pve02", "pve03")]


def test_a_shared_default_storage_is_seeded_shared_and_clones_can_target_any_node(
    make_home: Callable[..., Home],
) -> None:
    text = (Path(__file__).resolve().parent.parent / "cluster-config.yaml").read_text(encoding="utf-8")
    shared = text.replace("storage: local-lvm\n  shared_storage: false", "storage: ceph-vm\n  shared_storage: true")
    assert shared != text
    with start(make_home({"cluster-config.yaml": shared}, runbooks=False)) as sim, executor(sim) as api:
        storages = [s for s in call(api, "GET", "/cluster/resources", type="storage") if s["storage"] == "ceph-vm"]
        assert [(s["node"], s["shared"]) for s in storages] == [("pve01", 1), ("pve02", 1), ("pve03", 1)]
        assert call(api, "GET", "/nodes/pve01/qemu/102/config")["scsi0"].startswith("ceph-vm:base-102-disk-0,")
        call(api, "POST", "/nodes/pve01/qemu/102/clone", newid=1201, full=1, storage="ceph-vm", target="pve03")
        assert vms(api)[1201]["node"] == "pve03"


# ------------------------------------------------------------------ migrate


def test_clone_then_migrate_moves_the_vm(api: ApiExecutor) -> None:
    clone(api)
    assert vms(api)[1031]["node"] == "pve01"
    task = api.execute(ApiRequest("POST", "/nodes/pve01/qemu/1031/migrate", {"target": "pve02"})).data
    assert task["exitstatus"] == "OK"
    assert ":qmigrate:1031:" in task["upid"]
    assert vms(api)[1031]["node"] == "pve02"
    assert call(api, "GET", "/nodes/pve02/qemu/1031/config")["name"] == "stg-cp01"
    listed = call(api, "GET", "/nodes/pve01/tasks", vmid=1031)
    assert [(t["type"], t["status"]) for t in listed] == [("qmigrate", "OK")]
    log = [line["t"] for line in call(api, "GET", f"/nodes/pve01/tasks/{task['upid']}/log")]
    assert log == ["starting migration of VM 1031 to node 'pve02'", "migration finished successfully", "TASK OK"]


@pytest.mark.parametrize(
    ("vmid", "params", "running", "words"),
    [
        (1031, {"target": "pve09"}, False, "HTTP 500 no such cluster node 'pve09'"),
        (1031, {"target": "pve01"}, False, "target: target is local node."),
        (1031, {"target": "pve02"}, True, "HTTP 500 can't migrate running VM without --online"),
        (101, {"target": "pve02"}, False, "HTTP 500 can't migrate VM 101: it is a template"),
    ],
    ids=["unknown-target", "same-node", "running-not-online", "template"],
)
def test_migrate_refusals_use_pves_words_and_move_nothing(
    api: ApiExecutor, vmid: int, params: dict[str, str], running: bool, words: str
) -> None:
    clone(api)
    if running:
        call(api, "POST", "/nodes/pve01/qemu/1031/status/start")
    with pytest.raises(StepFailed) as refused:
        api.execute(ApiRequest("POST", f"/nodes/pve01/qemu/{vmid}/migrate", params))
    assert words in refused.value.message
    assert vms(api)[vmid]["node"] == "pve01"


def test_a_running_vm_migrates_online_and_keeps_running(api: ApiExecutor) -> None:
    clone(api)
    call(api, "POST", "/nodes/pve01/qemu/1031/status/start")
    call(api, "POST", "/nodes/pve01/qemu/1031/migrate", target="pve03", online=1)
    moved = vms(api)[1031]
    assert (moved["node"], moved["status"]) == ("pve03", "running")


def test_with_a_time_scale_the_migration_takes_its_time(home: Home) -> None:
    with start(home, time_scale=0.01) as sim, executor(sim) as api:
        clone(api)
        began = time.monotonic()
        call(api, "POST", "/nodes/pve01/qemu/1031/migrate", target="pve02")
        assert time.monotonic() - began >= SimPve.migrate_secs * 0.01
        assert vms(api)[1031]["node"] == "pve02"


# ------------------------------------------------------------------ persistence


def test_a_restart_in_the_same_home_restores_the_cluster(home: Home) -> None:
    with start(home) as sim, executor(sim) as api:
        clone(api)
        clone(api, 1032, "stg-cp02")
        call(api, "POST", "/nodes/pve01/qemu/1032/migrate", target="pve03")
        call(api, "POST", "/nodes/pve03/qemu/1032/status/start")
        call(api, "PUT", "/nodes/pve01/qemu/1031/config", tags="talos;kubernetes;staging", cores=4)
        call(api, "POST", "/nodes/pve03/qemu/1032/config", memory=8192)  # running: goes to pending
        sim.set_section("talos", {"10.20.0.31": {"stage": "maintenance"}})
        sim.set_section("files", {"pve01": {"/var/lib/vz/import/talos.raw": {"size": 5, "source": "https://x"}}})
        before = call(api, "GET", "/cluster/resources")
        pending = call(api, "GET", "/nodes/pve03/qemu/1032/pending")
        first_token, first_cert = sim.token(), Path(sim.certfile).read_bytes()
    assert load(state_path(home)) is not None

    with start(home) as sim, executor(sim) as api:
        after = call(api, "GET", "/cluster/resources")
        assert without_uptime(after) == without_uptime(before)
        assert call(api, "GET", "/nodes/pve03/qemu/1032/pending") == pending
        assert call(api, "GET", "/nodes/pve01/qemu/1031/config")["tags"] == "talos;kubernetes;staging"
        assert sim.section("talos") == {"10.20.0.31": {"stage": "maintenance"}}
        assert sim.section("files")["pve01"]["/var/lib/vz/import/talos.raw"]["size"] == 5
        assert sim.token().secret != first_token.secret
        assert Path(sim.certfile).read_bytes() != first_cert


def without_uptime(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A restart restarts the clock of running VMs; everything else must be identical."""
    return [{k: v for k, v in item.items() if k != "uptime"} for item in resources]


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("{not json", "it is not valid JSON"),
        ("", "it is not valid JSON"),
        ("[]", "the file should be a JSON object"),
        ('{"format": "other"}', "it is not a runbook simulated-cluster state"),
        (json.dumps({"format": FORMAT, "version": 99}), "format version 99, but this runbook reads version 1"),
        (
            json.dumps(dict(SimState().to_json(), vms=[{"vmid": "101"}])),
            "vms[0].vmid is a string, but should be a whole",
        ),
        (json.dumps(dict(SimState().to_json(), files={"pve01": []})), "files.pve01 should be a JSON object"),
    ],
    ids=["broken", "empty", "list", "foreign", "newer", "bad-field", "bad-files"],
)
def test_a_damaged_state_file_is_refused_naming_the_file_and_the_way_out(home: Home, text: str, what: str) -> None:
    path = state_path(home)
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    threads = threading.active_count()
    with pytest.raises(SimStateError) as refused:
        start(home)
    message = str(refused.value)
    assert message.startswith(f"{path}:")
    assert what in message
    assert "run `runbook sim reset`" in message
    assert threading.active_count() == threads  # refused before anything was started


def test_the_token_is_never_written_under_the_sim_folder(home: Home) -> None:
    sim = start(home)
    secret = sim.token().secret.reveal()
    with executor(sim) as api:
        clone(api)
    sim.stop()
    sim.stop()  # a second stop does nothing
    files = [p for p in (home.state_dir / "sim").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["pve-ssl.crt", "pve-ssl.key", "state.json"]
    assert all(secret.encode() not in p.read_bytes() for p in files)
    assert sim.token().token_id == TOKEN_ID
    assert secret not in repr(sim.token())


def test_tls_is_verified_against_this_runs_certificate_only(sim: SimCluster) -> None:
    with ApiExecutor(sim.endpoints(), SimTokens(sim), ssl.create_default_context(), retries=0) as api:
        with pytest.raises(StepFailed, match="TLS certificate does not verify"):
            call(api, "GET", "/version")


def test_save_is_atomic_and_load_of_nothing_is_none(tmp_path: Path) -> None:
    path = tmp_path / "sim" / "state.json"
    assert load(path) is None
    SimState(talos={"a": 1}).save(path)
    SimState(talos={"a": 2}).save(path)
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]
    loaded = load(path)
    assert loaded is not None and loaded.talos == {"a": 2}
    assert json.loads(path.read_text())["version"] == VERSION


def test_sections_must_be_json_in_the_owners_shape(sim: SimCluster) -> None:
    with pytest.raises(TypeError):
        sim.set_section("talos", {"when": object()})
    with pytest.raises(TypeError):
        sim.set_section("files", {"pve01": ["not", "a", "mapping"]})
    data = {"pve02": {"/tmp/x": {"size": 1, "source": "echo"}}}
    sim.set_section("files", data)
    sim.section("files")["pve02"].clear()  # a copy: the owner's changes count only through set_section
    assert sim.state().files == data
