"""The simulated Proxmox VE cluster: fakepve served in-process over real HTTPS.

Simulation replaces the far end, never the engine: the real ``ApiExecutor`` talks to this server
with TLS verified against its certificate and a real API token, exactly as it talks to a cluster.
Each start makes a fresh self-signed certificate (fakepve's are valid for 30 days, so none is
reused) and a fresh random token that only this process knows: nothing secret is ever written,
and a token left in a terminal's scrollback opens nothing after the run.

The cluster outlives the process through ``engine.sim.state``: ``start`` rebuilds the fake from
``<home>/.runbook/sim/state.json`` when there is one, else seeds it from ``cluster-config.yaml``
and the profiles; ``save``/``stop`` write it back. Task history is not kept (tasks finish before
their response at the default ``time_scale`` 0), nor are containers, pools or HA state: the
shipped runbooks use none of them.

Threads: FakePve's ``start``/``stop`` are coroutines, so the fake runs on its own event loop in a
daemon thread (the pattern of docs/fakepve-notes.md, section 1). Requests are handled on that
loop, so anything that reads or changes the fake from another thread must run there too:
``SimCluster.do(fn, ...)``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from fakepve import FakePve, PveError, settle
from fakepve.certs import make_cert

from engine.config import ClusterConfig
from engine.credentials import ApiToken
from engine.home import Home
from engine.profiles import Profile
from engine.secrets import Secret
from engine.sim.state import SimNode, SimState, SimStorage, SimVm, load

__all__ = ["HOST", "TOKEN_ID", "SimCluster", "SimPve", "sim_dir", "state_path"]

HOST = "127.0.0.1"
TOKEN_ID = "root@pam!runbook-sim"
#: Seconds to wait for anything run on the fake's loop.
LOOP_TIMEOUT = 30.0
#: Size of a seeded template's system disk; clones copy it.
TEMPLATE_DISK = "8G"
#: Keys of a fakepve storage entry that ``SimStorage`` has fields for; the rest go to its options.
STORAGE_FIELDS = ("type", "content", "shared", "nodes", "volumes")

Section = Literal["talos", "files"]
T = TypeVar("T")


def sim_dir(home: Home) -> Path:
    """Where the simulated cluster keeps its state and its current certificate."""
    return home.state_dir / "sim"


def state_path(home: Home) -> Path:
    return sim_dir(home) / "state.json"


class SimPve(FakePve):
    """FakePve with a migrate that moves the VM.

    fakepve answers ``POST .../migrate`` with a no-op task, so a runbook that clones on one node
    and migrates to another would see its VM stay put. This route makes PVE's immediate checks,
    in qemu-server's order, then runs fakepve's own migration (lock ``migrate``, then the VM is on
    the target node when the ``qmigrate`` task ends; the task is listed on the source node).
    """

    #: PVE seconds a migration takes; real seconds are this times ``time_scale`` (0: instant).
    migrate_secs = 20.0

    def _routes_runbook_sim(self) -> list[tuple[str, str, Callable[[dict[str, Any], str], Awaitable[Any]]]]:
        return [("POST", "/nodes/{node}/qemu/{vmid}/migrate", self._sim_migrate),
                ("PUT", "/nodes/{node}/qemu/{vmid}/resize", self._sim_resize)]

    async def _sim_resize(self, values: dict[str, Any], user: str) -> str:
        """Grow a disk as PVE does: ``+N`` adds, ``N`` sets; shrinking is refused; the disk's
        ``size=`` in the config changes when the ``resize`` task ends (fakepve's own route changes nothing)."""
        vm = self.find(values["node"], values["vmid"])
        self._check_lock(vm)
        disk = str(values["disk"])
        entry = str(vm.config.get(disk, ""))
        if not entry:
            raise PveError(500, f"disk '{disk}' does not exist")
        current = _bytes(re.search(r"size=([0-9.]+[KMGT]?)", entry).group(1)) if "size=" in entry else 0
        text = str(values["size"])
        wanted = current + _bytes(text[1:]) if text.startswith("+") else _bytes(text)
        if wanted < current:
            raise PveError(500, "shrinking disks is not supported")
        new_entry = re.sub(r"size=[0-9.]+[KMGT]?", f"size={_human(wanted)}", entry) if "size=" in entry \
            else f"{entry},size={_human(wanted)}"

        async def body() -> None:
            vm.config[disk] = new_entry

        return await self.task(vm.node, "resize", vm.vmid, user, body, vm=vm)

    async def _sim_migrate(self, values: dict[str, Any], user: str) -> str:
        node, target = values["node"], values["target"]
        if target == node:
            raise PveError(400, "Parameter verification failed.", {"target": "target is local node."})
        self.need_quorum()
        if target not in self.nodes:
            raise PveError(500, f"no such cluster node '{target}'")
        vm = self.find(node, values["vmid"])
        self._check_lock(vm)
        if vm.template:
            # PVE has no one message for this; it fails the task when linked clones use the base disks.
            raise PveError(500, f"can't migrate VM {vm.vmid}: it is a template, and its base disks stay "
                                f"on {node} for the linked clones made from it")
        if vm.status == "running" and not values.get("online"):
            raise PveError(500, "can't migrate running VM without --online")
        return await self.migrate(vm.vmid, target, secs=self.migrate_secs, user=user)


_UNITS = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def _bytes(text: str) -> int:
    """``100G`` / ``512M`` / ``1.5T`` (no unit: bytes) in bytes."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGT]?)", text.strip())
    if not match:
        raise PveError(400, "Parameter verification failed.", {"size": f"unable to parse size '{text}'"})
    return int(float(match.group(1)) * _UNITS.get(match.group(2), 1))


def _human(size: int) -> str:
    """Bytes as PVE writes a disk size (the largest unit that divides it)."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


class SimCluster:
    """A running simulated cluster: its URL, certificate, token, and its state for saving.

    Create it with ``SimCluster.start``; ``stop`` saves and shuts it down. Every config node is
    served by the one server (``endpoints``), so the executor's failover sees a healthy cluster.
    """

    def __init__(self, pve: SimPve, state_file: Path, node_names: Sequence[str], certfile: str, keyfile: str,
                 token: ApiToken, sections: dict[Section, dict[str, Any]]):
        self._pve = pve
        self.state_file = state_file
        self.certfile = certfile
        # Kept in memory: verify() must trust this run's certificate even if another start rewrites the file.
        self._cert_pem = Path(certfile).read_text(encoding="ascii")
        self._node_names = list(node_names)
        self._token = token
        self._sections = sections
        self._sections_lock = threading.Lock()
        self._stopped = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="runbook-sim-pve", daemon=True)
        self._thread.start()
        try:
            self._call(pve.start(certfile, keyfile))
        except BaseException:
            self._halt()
            raise

    @classmethod
    def start(cls, home: Home, config: ClusterConfig, profiles: Sequence[Profile], *,
              time_scale: float = 0.0) -> SimCluster:
        """Serve the home's simulated cluster: restored from its state file, or seeded when there is none.

        ``time_scale`` is real seconds per PVE second: 0 (the default) finishes every task before
        its response; 0.01 makes a 20 s migration take 0.2 s. A damaged state file raises
        ``SimStateError`` before anything is started.
        """
        path = state_path(home)
        saved = load(path)
        folder = sim_dir(home)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        certfile, keyfile, _der = make_cert(str(folder), name="pve-ssl", hosts=(HOST,))
        pve = SimPve(host=HOST, port=0)
        pve.time_scale = time_scale
        secret = secrets.token_hex(32)
        pve.apitokens[TOKEN_ID] = secret
        if saved is None:
            _seed(pve, config, profiles)
            sections: dict[Section, dict[str, Any]] = {"talos": {}, "files": {}}
        else:
            _restore(pve, saved)
            sections = {"talos": saved.talos, "files": saved.files}
        token = ApiToken(TOKEN_ID, Secret(secret), "the simulated cluster")
        return cls(pve, path, config.node_names, certfile, keyfile, token, sections)

    # ------------------------------------------------------------ reaching it

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self._pve.port}"

    def endpoints(self) -> list[tuple[str, str]]:
        """``(node name, base URL)`` for every node of the config, all served by this one server."""
        return [(name, self.url) for name in self._node_names]

    def token(self) -> ApiToken:
        """The API token registered for this run (``root@pam!runbook-sim``), its secret masked."""
        return self._token

    def verify(self) -> ssl.SSLContext:
        """Trust exactly this run's certificate, host name checked, as a cluster CA would be."""
        return ssl.create_default_context(cadata=self._cert_pem)

    # -------------------------------------------------- for other sim modules

    @property
    def fake(self) -> SimPve:
        """The FakePve itself, for the other simulated pieces (shell, Talos).

        Read and change it only inside ``do(fn, ...)``: requests are handled on the fake's own
        loop, and a change made from another thread could land in the middle of one.
        """
        return self._pve

    def do(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the fake's loop, between requests, and return its result."""
        async def run() -> T:
            return fn(*args, **kwargs)
        return self._call(run())

    def section(self, name: Section) -> dict[str, Any]:
        """A copy of the ``talos`` or ``files`` section, for the module that owns it."""
        with self._sections_lock:
            return copy.deepcopy(self._sections[name])

    def set_section(self, name: Section, data: dict[str, Any]) -> None:
        """Replace the ``talos`` or ``files`` section (saved with the rest on the next ``save``).

        The value must be JSON, and ``files`` must map node -> {path: {...}}: checked here, so a
        wrong value fails its writer now, not a later save or the next start.
        """
        value = json.loads(json.dumps(data))
        if not isinstance(value, dict):
            raise TypeError(f"the {name} section is a JSON object, not {type(data).__name__}")
        if name == "files" and not all(isinstance(paths, dict) and all(isinstance(f, dict) for f in paths.values())
                                       for paths in value.values()):
            raise TypeError("the files section maps each node to {path: {size, source}}")
        with self._sections_lock:
            self._sections[name] = value

    # ------------------------------------------------------------ its state

    def state(self) -> SimState:
        """A snapshot of the whole simulated cluster, read on the fake's loop so no request is half done."""
        state = self.do(_snapshot, self._pve)
        with self._sections_lock:
            state.talos = copy.deepcopy(self._sections["talos"])
            state.files = copy.deepcopy(self._sections["files"])
        return state

    def save(self) -> None:
        """Write the state file (atomically); called after every step, so the next process sees this one."""
        self.state().save(self.state_file)

    def stop(self) -> None:
        """Save, then stop serving; the port is free and the thread gone afterwards. Calling it again does nothing.

        The server is stopped even when saving fails. Tasks still running (only at a
        ``time_scale`` above 0) are cancelled first, since aiohttp's graceful shutdown would wait
        for them; their VMs are saved as they were at that moment, as a node that crashed leaves them.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            self._call(settle())
            self.save()
        finally:
            try:
                self._call(_cancel_pending())
                self._call(self._pve.stop())
            finally:
                self._halt()

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the loop

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(LOOP_TIMEOUT)

    def _halt(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(LOOP_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()


async def _cancel_pending() -> None:
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not me:
            task.cancel()


# ---------------------------------------------------------------- seeding


def _seed(pve: FakePve, config: ClusterConfig, profiles: Sequence[Profile]) -> None:
    """A new cluster as cluster-config.yaml and the profiles describe it: nodes, storages, templates.

    fakepve's default node goes (the cluster is exactly the config's nodes); its ``local`` and
    ``local-lvm`` stay, ``local`` also taking ``import`` content as PVE 8.2+ does. A
    ``defaults.storage`` of another name is added: RBD when ``defaults.shared_storage`` (the usual
    shared storage), else LVM-thin. Shared is fakepve's ``shared`` key, whatever the type.
    """
    defaults = config.data["defaults"]
    pve.nodes.clear()
    for name in config.node_names:
        pve.add_node(name)
    pve.storages["local"]["content"] = "iso,vztmpl,backup,import"
    storage = str(defaults["storage"])
    if storage not in pve.storages:
        if defaults.get("shared_storage"):
            pve.add_ceph_storage(name=storage, pool=storage)
        else:
            pve.storages[storage] = {"type": "lvmthin", "vgname": "pve", "thinpool": storage, "active": 1,
                                     "content": "images,rootdir", "files": set()}
    if defaults.get("shared_storage"):
        pve.storages[storage]["shared"] = 1
    first = config.node_names[0]
    for profile in profiles:
        vmid = int(profile.data["template"])
        if pve.vm(vmid) is None:
            vm_config = _template_config(profile, config)
            pve.add_vm(vmid, vm_config["name"], node=first, template=True, config=vm_config)


def _template_config(profile: Profile, config: ClusterConfig) -> dict[str, Any]:
    """The config of a profile's template as the template runbooks leave it: a base disk on defaults.storage.

    No ``efidisk0``, though an OVMF template has one: fakepve takes ``maxdisk`` from the first
    disk key in sorted order, so ``/cluster/resources`` would report the 528 KiB EFI disk as the
    VM's size.
    """
    defaults = config.data["defaults"]
    vmid = int(profile.data["template"])
    talos = profile.data["type"] == "talos"
    tags = [str(tag) for tag in (config.data.get("tags") or {}).get("templates") or []]
    if talos and "talos" not in tags:
        tags.append("talos")
    storage = defaults["storage"]
    vm_config: dict[str, Any] = {
        "name": f"talos-{profile.data['talos']['version']}-template" if talos else f"template-{vmid}",
        "template": 1, "ostype": "l26", "cores": 2, "memory": 2048,
        "bios": defaults["bios"], "cpu": defaults["cpu"], "scsihw": defaults["scsi_controller"],
        "scsi0": f"{storage}:base-{vmid}-disk-0,size={TEMPLATE_DISK}", "boot": "order=scsi0",
        "net0": f"virtio,bridge={defaults['network_bridge']}", "agent": "1" if defaults["guest_agent"] else "0",
    }
    if defaults.get("machine"):
        vm_config["machine"] = defaults["machine"]
    if tags:
        vm_config["tags"] = ";".join(tags)
    return vm_config


# ------------------------------------------------------ state <-> fakepve


def _restore(pve: FakePve, state: SimState) -> None:
    """Rebuild the fake from a saved state, so ``/cluster/resources`` reads as it did before the restart."""
    pve.nodes.clear()
    for node in state.nodes:
        pve.add_node(node.name, online=node.online)
    pve.storages.clear()
    for store in state.storages:
        entry = dict(store.options, type=store.type, content=store.content, volumes=store.volumes,
                     files=set(store.options.get("files", ())))
        if store.shared:
            entry["shared"] = 1
        if store.nodes:
            entry["nodes"] = ",".join(store.nodes)
        pve.storages[store.id] = entry
    for saved in state.vms:
        vm = pve.add_vm(saved.vmid, saved.name, node=saved.node, status=saved.status, template=saved.template,
                        lock=saved.lock, config=saved.config, pending=saved.pending)
        vm.snapshots = saved.snapshots


def _snapshot(pve: FakePve) -> SimState:
    """The fake's nodes, storages and VMs as a ``SimState`` (deep copies: the fake keeps changing)."""
    nodes = [SimNode(name, bool(info.get("online", True))) for name, info in pve.nodes.items()]
    storages = []
    for sid, store in pve.storages.items():
        options = {key: sorted(value) if isinstance(value, set) else copy.deepcopy(value)
                   for key, value in store.items() if key not in STORAGE_FIELDS}
        storages.append(SimStorage(id=sid, type=str(store.get("type", "dir")), content=str(store.get("content", "")),
                                   shared=bool(store.get("shared")),
                                   nodes=[n for n in re.split(r"[\s,;]+", str(store.get("nodes") or "")) if n],
                                   volumes=copy.deepcopy(store.get("volumes", {})), options=options))
    vms = [SimVm(vmid=vm.vmid, name=vm.name, node=vm.node, status=vm.status, template=bool(vm.template),
                 config=copy.deepcopy(vm.config), pending=copy.deepcopy(vm.pending), lock=vm.lock,
                 snapshots=copy.deepcopy(vm.snapshots))
           for vm in pve.vms]
    return SimState(nodes=nodes, storages=storages, vms=vms)
