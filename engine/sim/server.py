"""The simulated Proxmox VE cluster: fakepve served in-process over real HTTPS.

Simulation replaces the far end, never the engine: the real ``ApiExecutor`` talks to this server
with TLS verified against its certificate and a real API token, exactly as it talks to a cluster.
Each start makes a fresh self-signed certificate (fakepve's are valid for 30 days, so none is
reused) and a fresh random token that only this process knows: nothing secret is ever written,
and a token left in a terminal's scrollback opens nothing after the run.

The cluster outlives the process through ``engine.sim.state``: ``start`` rebuilds the fake from
``<home>/.runbook/sim/state.json`` when there is one, else seeds it from ``cluster-config.yaml``
and the profiles; ``save``/``stop`` write it back. Backup archives are volumes of their storage
(with the VM's configuration, for a restore); users, roles, ACL entries and token ids are kept as
each node's ``/etc/pve/user.cfg`` in the state's ``files`` section, never a token's secret. Task
history is not kept (tasks finish before their response at the default ``time_scale`` 0), nor are
containers, pools or HA state: the shipped runbooks use none of them. Node sizes come from
``cluster-config.yaml`` at every start.

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
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import web
from fakepve import FakePve, FakeVm, PveError, TaskError, settle, shapes
from fakepve.certs import make_cert
from fakepve.lxc import format_size
from fakepve.qemu import DRIVE_KEY, drives_of, is_cdrom, join_drive, split_drive, volume_ref, with_mac
from fakepve.routing import die, param_error, split_list

from ..load.config import ClusterConfig
from ..load.home import Home
from ..load.profiles import Profile
from ..run.credentials import ApiToken
from ..run.secrets import Secret
from .pvestorage import StorageSimMixin
from .state import SimNode, SimState, SimStorage, SimVm, load

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


class SimPve(StorageSimMixin, FakePve):
    """FakePve with the routes the shipped runbooks need that fakepve answers without changing anything.

    fakepve answers these with a no-op task or a made-up value, so a runbook would see nothing
    happen (a VM that stays put, a backup that is never listed, a user that is never there).
    Each route makes PVE's immediate checks in PVE's words, and changes the cluster when its task
    ends, as PVE does:

    - ``POST .../migrate``: fakepve's own migration (lock ``migrate``, then the VM is on the target
      node when the ``qmigrate`` task ends; the task is listed on the source node);
      ``GET .../migrate``: PVE's precondition check (local disks, nodes lacking a storage);
    - ``PUT .../resize``: the disk (and its volume) grows;
    - ``POST /nodes/{node}/vzdump``: an archive ``backup/vzdump-qemu-VMID-DATE.vma.zst`` on the
      storage, holding the VM's configuration so that ``POST /nodes/{node}/qemu`` with
      ``archive`` restores it (new disks, new MACs with ``unique``); an archive on a storage
      that is not shared is on the node that wrote it only;
    - ``/access/users``, ``/access/roles``, ``/access/acl`` and API tokens: kept in ``access``,
      as ``/etc/pve/user.cfg`` keeps them (saved as that file in the state's ``files``
      section). A new token's secret is answered once and kept in this process only; ACL
      entries are recorded, not enforced;
    - storage usage per node (``/cluster/resources``, ``/nodes/{node}/storage``): what the
      volumes there take, not fakepve's constant 0; nodes have the CPUs and memory of
      cluster-config.yaml, and their running VMs' memory in use;
    - backup jobs (``/cluster/backup``), ISO images the node shell downloads, detached disks left as
      ``unusedN``: ``engine.sim.pvestorage``.
    """

    #: PVE seconds a migration, a backup and a restore take; real seconds are this times ``time_scale`` (0: instant).
    migrate_secs = 20.0
    backup_secs = 30.0
    restore_secs = 30.0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: Users (with their tokens' ids, never their secrets), custom roles and ACL entries.
        self.access: dict[str, Any] = default_access()
        #: Node name -> {"maxcpu", "maxmem"}: cluster-config.yaml's cores and memory (without them, fakepve's
        #: 4 CPUs and 8 GiB).
        self.node_sizes: dict[str, dict[str, int]] = {}
        self._init_storage_sim()

    # ------------------------------------------------------------ node sizes

    def _node_usage(self, name: str) -> dict[str, int]:
        """A node's CPUs and memory as cluster-config.yaml gives them; its memory in use is the host's
        own plus what its running VMs are configured with."""
        size = self.node_sizes.get(name)
        if not size:
            return {}
        running = sum(self._vm_usage(vm)["maxmem"] for vm in self.vms if vm.node == name and vm.status == "running")
        return {"maxcpu": size["maxcpu"], "maxmem": size["maxmem"], "mem": min(NODE_BASE_MEM + running, size["maxmem"])}

    def _sized(self, response: web.Response) -> web.Response:
        if response.status != 200:
            return response
        data = json.loads(response.text)["data"]
        for item in data:
            if item.get("type") == "node" and item.get("status") == "online":
                item.update(self._node_usage(item["node"]))
        return web.json_response({"data": data})

    async def _resources(self, request: web.Request) -> web.Response:
        return self._sized(await super()._resources(request))

    async def _nodes(self, request: web.Request) -> web.Response:
        return self._sized(await super()._nodes(request))

    def _routes_runbook_sim(self) -> list[tuple[str, str, Callable[[dict[str, Any], str], Awaitable[Any]]]]:
        vm = "/nodes/{node}/qemu/{vmid}"
        users, token = "/access/users", "/access/users/{userid}/token"
        return [
            ("POST", vm + "/migrate", self._sim_migrate),
            ("GET", vm + "/migrate", self._sim_migrate_check),
            ("PUT", vm + "/resize", self._sim_resize),
            ("POST", "/nodes/{node}/vzdump", self._sim_vzdump),
            ("GET", users, self._sim_users),
            ("POST", users, self._sim_user_create),
            ("GET", users + "/{userid}", self._sim_user_read),
            ("DELETE", users + "/{userid}", self._sim_user_delete),
            ("GET", token, self._sim_tokens),
            ("GET", token + "/{tokenid}", self._sim_token_read),
            ("POST", token + "/{tokenid}", self._sim_token_create),
            ("DELETE", token + "/{tokenid}", self._sim_token_delete),
            ("GET", "/access/roles", self._sim_roles),
            ("POST", "/access/roles", self._sim_role_create),
            ("GET", "/access/roles/{roleid}", self._sim_role_read),
            ("PUT", "/access/roles/{roleid}", self._sim_role_update),
            ("DELETE", "/access/roles/{roleid}", self._sim_role_delete),
            ("GET", "/access/acl", self._sim_acl),
            ("PUT", "/access/acl", self._sim_acl_update),
        ]

    async def _logged_task(
        self,
        node: str,
        kind: str,
        tid: Any,
        user: str,
        body: Callable[[Callable[[str], None]], Awaitable[str | None]],
        **options: Any,
    ) -> str:
        """fakepve's ``task``, with ``body(say)`` adding lines to the task's log as it goes (a failure
        then shows what came before it, as PVE's task logs do)."""
        index = len(self.tasklog)  # task() adds its record here before anything else can run

        async def run() -> str | None:
            return await body(self.tasklog[index]["log"].append)

        return await self.task(node, kind, tid, user, run, **options)

    # ------------------------------------------------------------ resize

    async def _sim_resize(self, values: dict[str, Any], user: str) -> str:
        """Grow a disk as PVE does: ``+N`` adds, ``N`` sets; shrinking is refused; the disk's
        ``size=`` in the config (and its volume) changes when the ``resize`` task ends (fakepve's own
        route changes nothing)."""
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
        new_entry = (
            re.sub(r"size=[0-9.]+[KMGT]?", f"size={_human(wanted)}", entry)
            if "size=" in entry
            else f"{entry},size={_human(wanted)}"
        )

        async def body() -> None:
            vm.config[disk] = new_entry
            volume = self._qm_volume(split_drive(entry)[0])
            if volume is not None:
                store = self.storages[volume_ref(split_drive(entry)[0])[0]]
                if "avail" in store:
                    store["avail"] -= wanted - int(volume.get("size") or 0)
                volume["size"] = wanted

        return await self.task(vm.node, "resize", vm.vmid, user, body, vm=vm)

    # ------------------------------------------------------------ migrate

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
            raise PveError(
                500,
                f"can't migrate VM {vm.vmid}: it is a template, and its base disks stay "
                f"on {node} for the linked clones made from it",
            )
        if vm.status == "running" and not values.get("online"):
            raise PveError(500, "can't migrate running VM without --online")
        return await self.migrate(vm.vmid, target, secs=self.migrate_secs, user=user)

    async def _sim_migrate_check(self, values: dict[str, Any], user: str) -> dict[str, Any]:
        """``GET .../migrate``, qemu-server's migrate_vm_precondition: the VM's disks on storage that is
        not shared (copied by a migration), and the nodes lacking a storage the VM uses."""
        node = values["node"]
        self.need_quorum()
        vm = self.find(node, values["vmid"])
        self._check_lock(vm)
        used: set[str] = set()
        local_disks = []
        for key, volume, props in drives_of(vm.config, skip_cdrom=True):
            sid = volume_ref(volume)[0]
            if sid is None:
                continue
            used.add(sid)
            if not self.storages.get(sid, {}).get("shared"):
                local_disks.append(
                    {"volid": volume, "size": _bytes(props.get("size", "0")), "drivename": key, "is_unused": 0}
                )
        not_allowed: dict[str, dict[str, Any]] = {}
        for other in sorted(self.nodes):
            missing = sorted(
                sid
                for sid in used
                if other != node and (sid not in self.storages or not self._storage_enabled(sid, other))
            )
            if missing:
                not_allowed[other] = {"unavailable_storages": missing}
        return {
            "running": 1 if vm.status == "running" else 0,
            "allowed_nodes": [n for n in sorted(self.nodes) if n != node and n not in not_allowed],
            "not_allowed_nodes": not_allowed,
            "local_disks": local_disks,
            "local_resources": [],
            "mapped-resources": [],
            "mapped-resource-info": {},
        }

    async def _qm_rollback(self, v: dict[str, Any], user: str) -> str:
        """fakepve's rollback, except that a snapshot with the VM's memory (``vmstate``) resumes the VM
        from it, as PVE does, whether or not ``start`` is given."""
        vm = self.find(v["node"], v["vmid"])
        if (vm.snapshots.get(v["snapname"]) or {}).get("vmstate") and not _flag(v.get("start")):
            v = dict(v, start=1)
        return await super()._qm_rollback(v, user)

    # ------------------------------------------------------------ backup and restore

    async def _sim_vzdump(self, values: dict[str, Any], user: str) -> str:
        """``POST /nodes/{node}/vzdump`` for the VMs of this node (the others are skipped, as PVE's
        job does): a ``vzdump`` task whose archives are listed on the storage when it ends."""
        node = values["node"]
        for other in ("all", "exclude", "pool"):
            if values.get(other) and values.get("vmid"):
                raise param_error(**{other: "option conflicts with option 'vmid'"})
        if "\n" in str(values.get("notes-template") or ""):
            raise param_error(**{"notes-template": "contains a line feed"})
        unsupported = [name for name in ("pool", "stop", "stdout", "dumpdir") if values.get(name)]
        if unsupported:
            raise PveError(
                501,
                f"simulation: vzdump --{unsupported[0]} is not simulated (simulated: vmid or "
                "all/exclude, storage, mode, compress, notes-template)",
            )
        every = bool(values.get("all") or values.get("exclude"))
        if not every and not values.get("vmid"):
            raise param_error(vmid="property is missing")
        self.need_quorum()
        if every:
            excluded = {int(x) for x in split_list(values.get("exclude"))}
            wanted = sorted(vm.vmid for vm in self.vms if vm.vmid not in excluded)
        else:
            wanted = sorted({int(x) for x in split_list(values["vmid"])})
        local = [v for v in wanted if self.vm(v) is None or self.vm(v).node == node]
        skipped = [v for v in wanted if v not in local]
        storage = str(values.get("storage") or "local")
        shown = " ".join(f"--{k} {values[k]}" for k in sorted(values) if k not in ("node", "vmid", "all"))
        log = [
            f"INFO: starting new backup job: vzdump {' '.join(map(str, local))}"
            f"{' --all 1' if every else ''} {shown}".rstrip()
        ]
        if skipped:
            log.append(f"INFO: skip external VMs: {', '.join(map(str, skipped))}")

        async def body(say: Callable[[str], None]) -> str:
            problem = self._backup_storage_problem(storage, node)
            if problem:
                raise TaskError(problem)
            errors = 0
            for vmid in local:
                try:
                    await self._backup_one(vmid, node, storage, values, say)
                except (TaskError, PveError) as exc:
                    say(f"ERROR: Backup of VM {vmid} failed - {getattr(exc, 'message', None) or exc}")
                    errors += 1
            if errors:
                say("INFO: Backup job finished with errors")
                raise TaskError("job errors")
            return "INFO: Backup job finished successfully"

        return await self._logged_task(node, "vzdump", local[0] if len(local) == 1 else "", user, body, log=log)

    def _backup_storage_problem(self, storage: str, node: str) -> str | None:
        """Why vzdump cannot write to ``storage`` on ``node`` (PVE::VZDump's words), or None."""
        store = self.storages.get(storage)
        if store is None:
            return f"could not get storage information for '{storage}': storage '{storage}' does not exist"
        if not self._storage_enabled(storage, node):
            return f"could not activate storage '{storage}': storage '{storage}' is not available on node '{node}'"
        if store.get("type", "dir") not in BACKUP_STORAGE_TYPES:
            return (
                f"could not get storage information for '{storage}': can't use storage type "
                f"'{store.get('type')}' for backup"
            )
        if "backup" not in split_list(store.get("content")):
            return (
                f"could not get storage information for '{storage}': can't use storage '{storage}' for "
                "backups - wrong content type"
            )
        return None

    async def _backup_one(
        self, vmid: int, node: str, storage: str, values: dict[str, Any], say: Callable[[str], None]
    ) -> None:
        vm = self.vm(vmid)
        if vm is None:
            raise TaskError(f"unable to find VM '{vmid}'")
        started = time.time()
        say(f"INFO: Starting Backup of VM {vmid} (qemu)")
        say(f"INFO: Backup started at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}")
        say(f"INFO: status = {vm.status}")
        self._check_lock(vm)
        say(f"INFO: VM Name: {vm.name}")
        mode = str(values.get("mode") or "snapshot") if vm.status == "running" else "stop"
        say(f"INFO: backup mode: {mode}")
        compress = str(values.get("compress") or "0")
        ext = ".vma" + {"0": "", "1": ".lzo", "lzo": ".lzo", "gzip": ".gz", "zstd": ".zst"}.get(compress, "")
        volname = f"backup/vzdump-qemu-{vmid}-{time.strftime('%Y_%m_%d-%H_%M_%S', time.localtime(started))}{ext}"
        store = self.storages[storage]
        say(f"INFO: creating vzdump archive '{self._volume_path(storage, volname, 'backup')}'")
        config = {k: copy.deepcopy(v) for k, v in vm.config.items() if k not in ("lock", "parent")}
        self._qm_lock(vm, "backup")
        try:
            await self.pause(self.backup_secs)
        finally:
            self._qm_lock(vm, None)
        disks = sum(_bytes(props.get("size", "0")) for _key, _vol, props in drives_of(config, skip_cdrom=True))
        size = max(disks // ARCHIVE_RATIO, 1024**2)
        if size > store.get("avail", size):
            raise TaskError(f"unable to write to storage '{storage}': No space left on device")
        if "avail" in store:
            store["avail"] -= size
        record: dict[str, Any] = {
            "content": "backup",
            "format": ext[1:],
            "size": size,
            "ctime": int(started),
            "vmid": vmid,
            "subtype": "qemu",
            "guest": {"name": vm.name, "config": config},
        }
        if not store.get("shared"):
            record["node"] = node
        store.setdefault("volumes", {})[volname] = record
        say(f"INFO: archive file size: {_human(size)}")
        template = str(values.get("notes-template") or "")
        if template:
            say("INFO: adding notes to backup")
            info = {"cluster": self.cluster_name, "guestname": vm.name, "node": node, "vmid": str(vmid)}
            notes = re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\"}.get(m.group(1), m.group(0)), template)
            record["notes"] = re.sub(r"\{\{(" + "|".join(info) + r")\}\}", lambda m: info[m.group(1)], notes)
        took = int(time.time() - started)
        say(f"INFO: Finished Backup of VM {vmid} ({took // 3600:02d}:{took // 60 % 60:02d}:{took % 60:02d})")
        say(f"INFO: Backup finished at {time.strftime('%Y-%m-%d %H:%M:%S')}")

    def _volume_node(self, volume: dict[str, Any]) -> str | None:
        """The node a volume of a storage that is not shared is on: the one that wrote it (a backup),
        else the node of the VM that owns it; None when unknown (files put there by hand)."""
        if volume.get("node"):
            return str(volume["node"])
        owner = self.vm(volume["vmid"]) if volume.get("vmid") is not None else None
        return owner.node if owner is not None else None

    def _visible_on(self, storage: str, volume: dict[str, Any], node: str) -> bool:
        if volume.get("nodes"):  # a file the node shell wrote: on those nodes' disks
            return bool(self.storages[storage].get("shared")) or node in volume["nodes"]
        return bool(self.storages[storage].get("shared")) or self._volume_node(volume) in (None, node)

    async def _content_list(self, v: dict[str, Any], user: str) -> list[dict[str, Any]]:
        """fakepve's content list, less what is on another node's disk for a storage that is not shared."""
        items = await super()._content_list(v, user)
        name, node = v["storage"], v["node"]
        volumes = self._volumes(name)
        shown = []
        for item in items:
            volume = volumes.get(item["volid"].split(":", 1)[1])
            if volume is not None and not self._visible_on(name, volume, node):
                continue
            if volume is not None and volume.get("subtype"):
                item["subtype"] = volume["subtype"]
            shown.append(item)
        return shown

    async def _qm_create(self, v: dict[str, Any], user: str) -> str:
        """``POST /nodes/{node}/qemu``: fakepve's create, or with ``archive`` a restore of a simulated backup."""
        if not v.get("archive"):
            return await super()._qm_create(v, user)
        return await self._sim_restore(v, user)

    async def _sim_restore(self, v: dict[str, Any], user: str) -> str:
        """qemu-server's restore of a vzdump archive: the checks PVE makes before its ``qmrestore`` task,
        then the archive's VM with new disks on ``storage`` (default: where they were), a new vmgenid,
        and with ``unique`` new MAC addresses and SMBIOS uuid. ``force`` replaces a stopped VM of this node."""
        node, vmid, archive = v["node"], int(v["vmid"]), str(v["archive"])
        emsg = f"unable to restore VM {vmid} -"
        self.need_quorum()
        sid, colon, volname = archive.partition(":")
        if not colon:
            raise die(f"can't find file '{archive}'")
        if sid not in self.storages:
            raise die(f"storage '{sid}' does not exist")
        kind = self._parse_volname(self.storages[sid], volname)[0]
        if kind != "backup":
            raise PveError(501, f"simulation: {archive} is a {kind} volume; only vzdump archives are restored")
        record = self._volumes(sid).get(volname)
        if record is None or not self._visible_on(sid, record, node):
            raise die(f"can't find file '{archive}'")
        guest = record.get("guest")
        if not isinstance(guest, dict) or not isinstance(guest.get("config"), dict):
            raise PveError(
                501, f"simulation: {archive} was not written by the simulated vzdump, so the VM in it is unknown"
            )
        target = v.get("storage")
        if target:
            self._qm_image_store(target, user)
        existing = self.guest(vmid)
        if existing is not None:
            what = "VM" if self.vm(vmid) is not None else "CT"
            if not v.get("force") or what == "CT" or existing.node != node:
                raise die(f"{emsg} {what} {vmid} already exists on node '{existing.node}'")
            self._qm_check_protection(existing, f"unable to restore VM {vmid}")
            if existing.status == "running":
                raise die(f"{emsg} vm is running")
            self._check_lock(existing)
            vm = existing
        else:
            vm = FakeVm(vmid, str(guest.get("name") or f"VM {vmid}"), node=node)
            self.vms.append(vm)
        self._qm_lock(vm, "create")
        unique = _flag(v.get("unique"))
        source = copy.deepcopy(guest["config"])

        async def body(say: Callable[[str], None]) -> None:
            say(
                f"restore vma archive: vma extract -v -r /var/tmp/vzdumptmp.fifo "
                f"{self._volume_path(sid, volname, 'backup')} /var/tmp/vzdumptmp"
            )
            say("CFG: size: 512 name: qemu-server.conf")
            made: list[str] = []
            try:
                await self.pause(self.restore_secs)
                if vm is existing:
                    for _key, volume, _props in drives_of(vm.config, skip_cdrom=True):
                        self._qm_free(volume)
                    for key in [k for k in vm.config if re.fullmatch(r"unused\d+", k)]:
                        self._qm_free(split_drive(vm.config[key])[0])
                config: dict[str, Any] = {}
                for key, value in source.items():
                    if re.fullmatch(r"unused\d+", key):
                        continue
                    if re.fullmatch(r"net\d+", key):
                        config[key] = with_mac(value, fresh=unique)
                        continue
                    volume, props = split_drive(value) if DRIVE_KEY.match(key) else (None, {})
                    old = volume_ref(volume)[0] if volume else None
                    if not DRIVE_KEY.match(key) or old is None or is_cdrom(volume, props):
                        config[key] = value
                        continue
                    dest = target or old
                    if dest not in self.storages:
                        raise TaskError(f"storage '{dest}' does not exist")
                    if "images" not in split_list(self.storages[dest].get("content")):
                        raise TaskError(f"storage '{dest}' does not support vm images")
                    size = _bytes(props.get("size", "0"))
                    volid, _fmt = self._qm_alloc(dest, vmid, None, size)
                    made.append(volid)
                    say(f"new volume ID is '{volid}'")
                    config[key] = join_drive(volid, dict(props, **({"size": format_size(size)} if size else {})))
                if str(config.get("vmgenid", "0")) != "0":
                    config["vmgenid"] = str(uuid.uuid4())
                if unique and config.get("smbios1"):
                    config["smbios1"] = re.sub(r"uuid=[0-9a-fA-F-]+", f"uuid={uuid.uuid4()}", str(config["smbios1"]))
                if config.get("template"):
                    for key, volume, props in drives_of(config, skip_cdrom=True):
                        config[key] = join_drive(self._qm_rename_volume(volume), props)
            except (PveError, TaskError) as exc:
                for volid in made:
                    self._qm_free(volid)
                if vm is not existing and vm in self.vms:
                    self.vms.remove(vm)
                else:
                    self._qm_lock(vm, None)
                raise TaskError(f"{emsg} {getattr(exc, 'message', None) or exc}") from exc
            vm.config, vm.pending, vm.snapshots = config, {}, {}
            vm.name = str(config.get("name") or f"VM {vmid}")
            vm.template = bool(config.get("template"))
            vm.status = vm.qmpstatus = "stopped"
            self._qm_lock(vm, None)
            say("rescan volumes...")
            if _flag(v.get("start")):
                vm.status = vm.qmpstatus = "running"
                vm.started_at = time.time()

        return await self._logged_task(node, "qmrestore", vmid, user, body, vm=vm, lock=False)

    # ------------------------------------------------------------ storage usage per node

    def _node_space(self, name: str, node: str) -> tuple[int, int, int]:
        """(total, used, avail) bytes of the storage as ``node`` sees it: for one that is not shared,
        what that node's volumes take."""
        store = self.storages[name]
        volumes = self._volumes(name)
        every = sum(int(vol.get("size") or 0) for vol in volumes.values())
        used = (
            every
            if store.get("shared")
            else sum(int(vol.get("size") or 0) for vol in volumes.values() if self._volume_node(vol) in (None, node))
        )
        total = (
            int(store["total"])
            if "total" in store
            else (int(store["avail"]) + every if "avail" in store else 100 * 1024**3)
        )
        return total, used, max(total - used, 0)

    def _status_item(self, name: str, node: str, formats: bool = False) -> dict[str, Any]:
        item = super()._status_item(name, node, formats)
        if item.get("active"):
            item["total"], item["used"], item["avail"] = self._node_space(name, node)
        return item

    def _storage_resource(self, node: str, name: str) -> dict[str, Any] | None:
        item = super()._storage_resource(node, name)
        if item is not None:
            item["maxdisk"], item["disk"], _avail = self._node_space(name, node)
        return item

    # ------------------------------------------------------------ access control (user.cfg)

    def _user(self, userid: str, failed: str = "") -> dict[str, Any]:
        """PVE::AccessControl::check_user_exist."""
        user = self.access["users"].get(userid)
        if user is None:
            raise die(f"{failed}no such user ('{userid}')")
        return user

    def _user_tokens(self, userid: str) -> dict[str, dict[str, Any]]:
        """The user's tokens; the API token of this run shows among root's, as an admin token would."""
        tokens = {tid: dict(info) for tid, info in (self.access["users"][userid].get("tokens") or {}).items()}
        for full in self.apitokens:
            owner, _, tid = full.partition("!")
            if owner == userid and tid not in tokens:
                tokens[tid] = {"privsep": 0, "comment": "runbook simulation: the API token of this run"}
        return tokens

    def _token(self, userid: str, tokenid: str, failed: str = "") -> dict[str, Any]:
        """PVE::AccessControl::check_token_exist."""
        self._user(userid, failed)
        token = self._user_tokens(userid).get(tokenid)
        if token is None:
            raise die(f"{failed}no such token '{tokenid}' for user '{userid}'")
        return token

    def _roles(self) -> dict[str, tuple[str, ...]]:
        """Every role: the built-in ones (special) and those created."""
        return {
            **{name: tuple(privs) for name, privs in shapes.ROLES.items()},
            **{name: tuple(privs) for name, privs in self.access["roles"].items()},
        }

    @staticmethod
    def _privileges(privs: Any, failed: str) -> set[str]:
        """PVE::AccessControl::add_role_privs: every privilege must exist."""
        wanted = set(split_list(privs))
        for priv in sorted(wanted):
            if priv not in shapes.PRIVILEGES:
                raise die(f"{failed}invalid privilege '{priv}'")
        return wanted

    async def _sim_users(self, values: dict[str, Any], user: str) -> list[dict[str, Any]]:
        out = []
        for userid in sorted(self.access["users"]):
            data = self.access["users"][userid]
            entry = {key: data[key] for key in USER_FIELDS if data.get(key) is not None}
            if values.get("enabled") is not None and bool(entry.get("enable")) != _flag(values["enabled"]):
                continue
            if _flag(values.get("full")):
                entry["groups"] = ""
                tokens = self._user_tokens(userid)
                if tokens:
                    entry["tokens"] = [{"tokenid": tid, **info} for tid, info in sorted(tokens.items())]
            realm = userid.rpartition("@")[2]
            if realm in REALMS:
                entry["realm-type"] = realm
            entry["userid"] = userid
            out.append(entry)
        return out

    async def _sim_user_create(self, values: dict[str, Any], user: str) -> None:
        userid, failed = str(values["userid"]), "create user failed: "
        if userid in self.access["users"]:
            raise die(f"{failed}user '{userid}' already exists")
        for group in split_list(values.get("groups")):
            raise die(f"{failed}no such group '{group}'")
        entry: dict[str, Any] = {"enable": 1 if values.get("enable") is None else int(_flag(values["enable"]))}
        if values.get("expire"):
            entry["expire"] = int(values["expire"])
        for key in ("firstname", "lastname", "email", "comment", "keys"):
            if values.get(key):
                entry[key] = str(values[key])
        self.access["users"][userid] = entry  # a password (pve realm) is not kept: the simulation keeps no secret

    async def _sim_user_read(self, values: dict[str, Any], user: str) -> dict[str, Any]:
        userid = str(values["userid"])
        data = self._user(userid)
        entry = {key: data[key] for key in USER_FIELDS if data.get(key) is not None}
        entry["groups"] = []
        tokens = self._user_tokens(userid)
        if tokens:
            entry["tokens"] = tokens
        return entry

    async def _sim_user_delete(self, values: dict[str, Any], user: str) -> None:
        userid = str(values["userid"])
        self._user(userid, "delete user failed: ")
        del self.access["users"][userid]
        self.access["acl"] = [
            e for e in self.access["acl"] if e["ugid"] != userid and not e["ugid"].startswith(userid + "!")
        ]
        for full in [t for t in self.apitokens if t.startswith(userid + "!")]:
            del self.apitokens[full]

    async def _sim_tokens(self, values: dict[str, Any], user: str) -> list[dict[str, Any]]:
        userid = str(values["userid"])
        self._user(userid)
        return [{"tokenid": tid, **info} for tid, info in sorted(self._user_tokens(userid).items())]

    async def _sim_token_read(self, values: dict[str, Any], user: str) -> dict[str, Any]:
        return self._token(str(values["userid"]), str(values["tokenid"]))

    async def _sim_token_create(self, values: dict[str, Any], user: str) -> dict[str, Any]:
        """A new token: its secret is answered this once (PVE: it cannot be read again) and kept only in
        this process's token table, never in the saved state."""
        userid, tokenid = str(values["userid"]), str(values["tokenid"])
        self._user(userid)
        if tokenid in self._user_tokens(userid):
            raise param_error(tokenid="Token already exists.")
        info: dict[str, Any] = {"privsep": 1 if values.get("privsep") is None else int(_flag(values["privsep"]))}
        if values.get("expire") is not None:
            info["expire"] = int(values["expire"])
        if values.get("comment"):
            info["comment"] = str(values["comment"])
        full = f"{userid}!{tokenid}"
        value = _new_token_value()
        self.access["users"][userid].setdefault("tokens", {})[tokenid] = info
        self.apitokens[full] = value
        return {"info": dict(info), "value": value, "full-tokenid": full}

    async def _sim_token_delete(self, values: dict[str, Any], user: str) -> None:
        userid, tokenid = str(values["userid"]), str(values["tokenid"])
        self._token(userid, tokenid)
        (self.access["users"][userid].get("tokens") or {}).pop(tokenid, None)
        self.apitokens.pop(f"{userid}!{tokenid}", None)

    async def _sim_roles(self, values: dict[str, Any], user: str) -> list[dict[str, Any]]:
        return [
            {"roleid": name, "privs": ",".join(sorted(privs)), "special": 0 if name in self.access["roles"] else 1}
            for name, privs in sorted(self._roles().items())
        ]

    async def _sim_role_create(self, values: dict[str, Any], user: str) -> None:
        roleid, failed = str(values["roleid"]), "create role failed: "
        if roleid in self._roles():
            raise die(f"{failed}role '{roleid}' already exists")
        self.access["roles"][roleid] = sorted(self._privileges(values.get("privs"), failed))

    async def _sim_role_read(self, values: dict[str, Any], user: str) -> dict[str, int]:
        roleid = str(values["roleid"])
        if roleid not in self._roles():
            raise die(f"role '{roleid}' does not exist")
        return dict.fromkeys(sorted(self._roles()[roleid]), 1)

    def _own_role(self, roleid: str, failed: str, done: str) -> None:
        """Refuse, in PVE's words, to change a built-in role or one that does not exist."""
        if roleid in shapes.ROLES:
            raise die(f"{failed}auto-generated role '{roleid}' cannot be {done}")
        if roleid not in self.access["roles"]:
            raise die(f"{failed}role '{roleid}' does not exist")

    async def _sim_role_update(self, values: dict[str, Any], user: str) -> None:
        roleid, failed = str(values["roleid"]), "update role failed: "
        self._own_role(roleid, failed, "modified")
        privs = self._privileges(values.get("privs"), failed)
        kept = set(self.access["roles"][roleid]) if _flag(values.get("append")) else set()
        self.access["roles"][roleid] = sorted(kept | privs)

    async def _sim_role_delete(self, values: dict[str, Any], user: str) -> None:
        roleid, failed = str(values["roleid"]), "delete role failed: "
        self._own_role(roleid, failed, "deleted")
        del self.access["roles"][roleid]
        self.access["acl"] = [e for e in self.access["acl"] if e["roleid"] != roleid]

    async def _sim_acl(self, values: dict[str, Any], user: str) -> list[dict[str, Any]]:
        return [
            dict(entry)
            for entry in sorted(self.access["acl"], key=lambda e: (e["path"], e["type"], e["ugid"], e["roleid"]))
        ]

    async def _sim_acl_update(self, values: dict[str, Any], user: str) -> None:
        """PVE::API2::ACL update_acl: every role, user and token must exist; ``delete`` removes entries."""
        users, groups, tokens = (split_list(values.get(k)) for k in ("users", "groups", "tokens"))
        if not (users or groups or tokens):
            raise param_error(
                **dict.fromkeys(("users", "groups", "tokens"), "either 'users', 'groups' or 'tokens' is required.")
            )
        raw = str(values.get("path", ""))
        path = "/" + "/".join(part for part in raw.split("/") if part)
        if not re.fullmatch(r"[\w./-]+", path) or (not values.get("delete") and not ACL_PATH.fullmatch(path)):
            raise param_error(path=f"invalid ACL path '{raw}'")
        propagate = 1 if values.get("propagate") is None else int(_flag(values["propagate"]))
        failed = "ACL update failed: "
        wanted: list[tuple[str, str, str]] = []
        for role in split_list(values.get("roles")):
            if role not in self._roles():
                raise die(f"{failed}role '{role}' does not exist")
            for group in groups:
                raise die(f"{failed}group '{group}' does not exist")
            for userid in users:
                self._user(userid, failed)
                wanted.append(("user", userid, role))
            for full in tokens:
                owner, _, tid = full.partition("!")
                self._token(owner, tid, failed)
                wanted.append(("token", full, role))
        acl = [
            e
            for e in self.access["acl"]
            if (e["path"], e["type"], e["ugid"], e["roleid"]) not in {(path, *w) for w in wanted}
        ]
        if not values.get("delete"):
            acl += [
                {"path": path, "type": kind, "ugid": ugid, "roleid": role, "propagate": propagate}
                for kind, ugid, role in wanted
            ]
        self.access["acl"] = acl


#: Memory a node uses for itself (fakepve's figure), before any VM.
NODE_BASE_MEM = 2 * 1024**3
#: Storage types vzdump writes to (PVE::VZDump::storage_info).
BACKUP_STORAGE_TYPES = ("dir", "nfs", "glusterfs", "cifs", "cephfs", "pbs", "btrfs")
#: A simulated archive is this much smaller than the VM's disks (mostly zeroes, which vma skips).
ARCHIVE_RATIO = 20
#: The file of each node where PVE keeps users, roles, ACLs and token ids (pmxcfs: the same on every node).
USER_CFG = "/etc/pve/user.cfg"
#: The file where PVE keeps the scheduled backup jobs (pmxcfs: the same on every node).
JOBS_CFG = "/etc/pve/jobs.cfg"
#: A disk left on ``defaults.storage`` by a VM deleted long ago: no VM config references it (the
#: orphan the storage runbooks find); its VMID has no VM.
ORPHAN_VMID = 1999
ORPHAN_SIZE = 4 * 1024**3
USER_FIELDS = ("enable", "expire", "firstname", "lastname", "email", "comment", "keys")
#: The realms of a new cluster, by their type.
REALMS = ("pam", "pve")
#: PVE::AccessControl::check_path.
ACL_PATH = re.compile(
    r"/|/access(/groups(/[\w.-]+)?|/realm(/[\w.-]+)?)?|/mapping(/[\w.-]+){0,2}|/nodes(/[\w.-]+)?"
    r"|/pool(/[\w.-]+){0,3}|/sdn(/[\w.-]+){0,4}|/storage(/[\w.-]+)?|/vms(/[1-9][0-9]{2,})?"
)


def default_access() -> dict[str, Any]:
    """user.cfg of a new cluster: root@pam, the built-in roles only, no ACL entry."""
    return {"users": {"root@pam": {"enable": 1, "expire": 0}}, "roles": {}, "acl": []}


def _flag(value: Any) -> bool:
    """A PVE boolean parameter as the schema check leaves it (1, "1", True, "yes"...)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _api_secret() -> str:
    """The secret of this run's API token: random, known to this process only."""
    return secrets.token_hex(32)


def _new_token_value() -> str:
    """The secret PVE makes for a new API token (a UUID), answered once."""
    return str(uuid.uuid4())


_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


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

    def __init__(
        self,
        pve: SimPve,
        state_file: Path,
        node_names: Sequence[str],
        certfile: str,
        keyfile: str,
        token: ApiToken,
        sections: dict[Section, dict[str, Any]],
    ):
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
    def start(
        cls, home: Home, config: ClusterConfig, profiles: Sequence[Profile], *, time_scale: float = 0.0
    ) -> SimCluster:
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
        secret = _api_secret()
        pve.apitokens[TOKEN_ID] = secret
        if saved is None:
            _seed(pve, config, profiles)
            sections: dict[Section, dict[str, Any]] = {"talos": {}, "files": {}}
        else:
            _restore(pve, saved)
            sections = {"talos": saved.talos, "files": saved.files}
        pve.node_sizes = {
            str(node["name"]): {"maxcpu": int(node["cores"]), "maxmem": int(node["memory"]) * 1024**2}
            for node in config.nodes
            if node.get("cores") and node.get("memory")
        }
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

    # ------------------------------------------------------------ on the fake's loop

    @property
    def fake(self) -> SimPve:
        """The FakePve itself, for what only the fake offers (a fault to inject, say).

        Read and change it only inside ``do(fn, ...)``.
        """
        return self._pve

    def do(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the fake's loop, between requests, and return its result.

        The fake is read and changed only this way: requests are handled on its own loop, and a
        change made from another thread could land in the middle of one.
        """

        async def run() -> T:
            return fn(*args, **kwargs)

        return self._call(run())

    # --------------------------- the PVE side, as the simulated nodes see it (``shell.VmOps``)

    def get_vm(self, vmid: int) -> SimVm | None:
        """The VM with this vmid, wherever it is (a copy); None when there is none."""
        return self.do(lambda: next((SimVm.copy_of(v) for v in self._pve.vms if v.vmid == vmid), None))

    def list_vms(self) -> list[SimVm]:
        """Every VM, templates included (copies)."""
        return self.do(lambda: [SimVm.copy_of(v) for v in self._pve.vms])

    def by_name(self, name: str) -> SimVm | None:
        """The VM (not a template) with this name (a copy); None when there is none."""
        return self.do(
            lambda: next((SimVm.copy_of(v) for v in self._pve.vms if v.name == name and not v.template), None)
        )

    def set_config(self, vmid: int, changes: Mapping[str, str | None]) -> None:
        """Set config keys of a VM (a None value deletes the key)."""

        def change() -> None:
            vm = next(v for v in self._pve.vms if v.vmid == vmid)
            for key, value in changes.items():
                if value is None:
                    vm.config.pop(key, None)
                else:
                    vm.config[key] = value

        self.do(change)

    def make_template(self, vmid: int) -> None:
        """Mark a VM as a template (its disks were already renamed through ``set_config``)."""

        def convert() -> None:
            vm = next(v for v in self._pve.vms if v.vmid == vmid)
            vm.template = True
            vm.config["template"] = 1

        self.do(convert)

    def node_status(self, node: str) -> str | None:
        """``"online"``, ``"offline"``, or None when the cluster has no such node."""

        def status() -> str | None:
            found = self._pve.nodes.get(node)
            if found is None:
                return None
            return "online" if found.get("online", True) else "offline"

        return self.do(status)

    def storage_exists(self, node: str, storage: str) -> bool:
        """Whether the storage is defined and enabled on that node."""

        def exists() -> bool:
            config = self._pve.storages.get(storage)
            if not config or config.get("disable"):
                return False
            nodes = config.get("nodes")
            return not nodes or node in (nodes.split(",") if isinstance(nodes, str) else nodes)

        return self.do(exists)

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
        if name == "files" and not all(
            isinstance(paths, dict) and all(isinstance(f, dict) for f in paths.values()) for paths in value.values()
        ):
            raise TypeError("the files section maps each node to {path: {size, source}}")
        with self._sections_lock:
            self._sections[name] = value

    # ------------------------------------------------------------ its state

    def state(self) -> SimState:
        """A snapshot of the whole simulated cluster, read on the fake's loop so no request is half done."""
        state, access, jobs = self.do(
            lambda: (_snapshot(self._pve), copy.deepcopy(self._pve.access), copy.deepcopy(self._pve.backup_jobs))
        )
        with self._sections_lock:
            state.talos = copy.deepcopy(self._sections["talos"])
            state.files = copy.deepcopy(self._sections["files"])
        _put_access(state.files, access, [node.name for node in state.nodes])
        _put_jobs(state.files, jobs, [node.name for node in state.nodes])
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
            pve.storages[storage] = {
                "type": "lvmthin",
                "vgname": "pve",
                "thinpool": storage,
                "active": 1,
                "content": "images,rootdir",
                "files": set(),
            }
    if defaults.get("shared_storage"):
        pve.storages[storage]["shared"] = 1
    orphan, _fmt = pve._qm_alloc(storage, ORPHAN_VMID, None, ORPHAN_SIZE)
    volume = pve.storages[storage]["volumes"][orphan.split(":", 1)[1]]
    if not pve.storages[storage].get("shared"):
        volume["node"] = config.node_names[-1]  # on the last node's disk only
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
        "template": 1,
        "ostype": "l26",
        "cores": 2,
        "memory": 2048,
        "bios": defaults["bios"],
        "cpu": defaults["cpu"],
        "scsihw": defaults["scsi_controller"],
        "scsi0": f"{storage}:base-{vmid}-disk-0,size={TEMPLATE_DISK}",
        "boot": "order=scsi0",
        # PVE gives every network card a MAC (its BC:24:11 prefix); the seed's is derived from the VMID.
        "net0": f"virtio=BC:24:11:{vmid >> 16 & 255:02X}:{vmid >> 8 & 255:02X}:{vmid & 255:02X},"
        f"bridge={defaults['network_bridge']}",
        "agent": "1" if defaults["guest_agent"] else "0",
    }
    if defaults.get("machine"):
        vm_config["machine"] = defaults["machine"]
    if tags:
        vm_config["tags"] = ";".join(tags)
    return vm_config


# ------------------------------------------------------ state <-> fakepve


def _restore(pve: SimPve, state: SimState) -> None:
    """Rebuild the fake from a saved state, so ``/cluster/resources`` reads as it did before the restart."""
    pve.nodes.clear()
    for node in state.nodes:
        pve.add_node(node.name, online=node.online)
    pve.storages.clear()
    for store in state.storages:
        entry = dict(
            store.options,
            type=store.type,
            content=store.content,
            volumes=store.volumes,
            files=set(store.options.get("files", ())),
        )
        if store.shared:
            entry["shared"] = 1
        if store.nodes:
            entry["nodes"] = ",".join(store.nodes)
        pve.storages[store.id] = entry
    pve.access = _get_access(state.files)
    pve.backup_jobs = _get_jobs(state.files)
    for saved in state.vms:
        vm = pve.add_vm(
            saved.vmid,
            saved.name,
            node=saved.node,
            status=saved.status,
            template=saved.template,
            lock=saved.lock,
            config=saved.config,
            pending=saved.pending,
        )
        vm.snapshots = saved.snapshots


def _user_cfg(access: dict[str, Any]) -> str:
    """The access model as PVE writes /etc/pve/user.cfg (for the file's size: the record keeps the model)."""
    lines = []
    for userid, user in sorted(access["users"].items()):
        fields = [str(user.get(key, "")) for key in USER_FIELDS]
        lines.append(f"user:{userid}:{':'.join(fields)}:")
        for tokenid, token in sorted((user.get("tokens") or {}).items()):
            lines.append(
                f"token:{userid}!{tokenid}:{token.get('expire', 0)}:{token.get('privsep', 1)}:"
                f"{token.get('comment', '')}:"
            )
    lines += [f"role:{roleid}:{','.join(privs)}:" for roleid, privs in sorted(access["roles"].items())]
    lines += [f"acl:{e['propagate']}:{e['path']}:{e['ugid']}:{e['roleid']}:" for e in access["acl"]]
    return "\n".join(lines) + "\n"


def _put_access(files: dict[str, dict[str, dict[str, Any]]], access: dict[str, Any], nodes: Sequence[str]) -> None:
    """Record the access model as each node's /etc/pve/user.cfg in the ``files`` section (a new
    cluster's, with nothing created, is left out). Never a secret: tokens are ids and settings."""
    for paths in files.values():
        if isinstance(paths.get(USER_CFG), dict) and "access" in paths[USER_CFG]:
            del paths[USER_CFG]
    if access == default_access():
        return
    size = len(_user_cfg(access).encode())
    for node in nodes:
        files.setdefault(node, {})[USER_CFG] = {
            "type": "file",
            "size": size,
            "access": copy.deepcopy(access),
            "source": "simulated PVE access control: users, roles, ACL entries, token ids (never a secret)",
        }


def _put_jobs(files: dict[str, dict[str, dict[str, Any]]], jobs: dict[str, Any], nodes: Sequence[str]) -> None:
    """Record the backup jobs as each node's /etc/pve/jobs.cfg in the ``files`` section (none: no file)."""
    for paths in files.values():
        if isinstance(paths.get(JOBS_CFG), dict) and "jobs" in paths[JOBS_CFG]:
            del paths[JOBS_CFG]
    if not jobs:
        return
    text = "".join(
        f"vzdump: {job_id}\n" + "".join(f"\t{key} {value}\n" for key, value in sorted(job.items())) + "\n"
        for job_id, job in sorted(jobs.items())
    )
    for node in nodes:
        files.setdefault(node, {})[JOBS_CFG] = {
            "type": "file",
            "size": len(text.encode()),
            "jobs": copy.deepcopy(jobs),
            "source": "simulated PVE backup jobs (jobs.cfg)",
        }


def _get_jobs(files: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The backup jobs saved by ``_put_jobs`` (none when there is no such file)."""
    for paths in files.values():
        jobs = (paths.get(JOBS_CFG) or {}).get("jobs")
        if isinstance(jobs, dict):
            return copy.deepcopy(jobs)
    return {}


def _get_access(files: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The access model saved by ``_put_access``, or a new cluster's."""
    for paths in files.values():
        access = (paths.get(USER_CFG) or {}).get("access")
        if isinstance(access, dict) and all(
            isinstance(access.get(k), t) for k, t in (("users", dict), ("roles", dict), ("acl", list))
        ):
            return copy.deepcopy(access)
    return default_access()


def _snapshot(pve: FakePve) -> SimState:
    """The fake's nodes, storages and VMs as a ``SimState`` (deep copies: the fake keeps changing)."""
    nodes = [SimNode(name, bool(info.get("online", True))) for name, info in pve.nodes.items()]
    storages = []
    for sid, store in pve.storages.items():
        options = {
            key: sorted(value) if isinstance(value, set) else copy.deepcopy(value)
            for key, value in store.items()
            if key not in STORAGE_FIELDS
        }
        storages.append(
            SimStorage(
                id=sid,
                type=str(store.get("type", "dir")),
                content=str(store.get("content", "")),
                shared=bool(store.get("shared")),
                nodes=[n for n in re.split(r"[\s,;]+", str(store.get("nodes") or "")) if n],
                volumes=copy.deepcopy(store.get("volumes", {})),
                options=options,
            )
        )
    vms = [SimVm.copy_of(vm) for vm in pve.vms]
    return SimState(nodes=nodes, storages=storages, vms=vms)
