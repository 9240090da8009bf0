"""What the simulated PVE adds to fakepve's storage for the library's storage and backup runbooks.

A mixin of ``SimPve`` (``engine.sim.server``), on fakepve's own models (its storages' ``volumes``
and ``files``, its VMs' configs, its tasks), never a model of its own:

- ``/cluster/backup``: the scheduled backup jobs (PVE's ``jobs.cfg``), listed, read, created,
  changed and removed with PVE's checks; kept in ``backup_jobs`` (saved as the nodes'
  ``/etc/pve/jobs.cfg`` in the state's ``files`` section). Nothing runs them: there is no clock.
- ISO images put on a node through its shell (``wget -O /var/lib/vz/template/iso/X.iso URL``, the
  reference's upload) are content ``iso`` of the storage whose folder that is, on that node only for
  a storage that is not shared; removing the volume through the API removes the file.
- Detaching a disk of a stopped VM (``PUT .../config`` with ``delete=scsi1``) leaves it as the next
  ``unusedN`` entry, as PVE does; deleting an ``unusedN`` entry destroys its volume.
- A backup deleted through a node that cannot see it (a storage that is not shared, another node's
  disk) is not removed: PVE's archive removal ignores a file that is not there.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from fakepve.qemu import DRIVE_KEY, is_cdrom, join_drive, split_drive
from fakepve.routing import die, param_error, split_list

#: The options of a vzdump job that the simulation keeps (PVE's jobs.cfg keeps every vzdump option).
JOB_OPTIONS = (
    "schedule",
    "storage",
    "vmid",
    "all",
    "exclude",
    "node",
    "mode",
    "compress",
    "enabled",
    "comment",
    "notes-template",
    "mailto",
    "mailnotification",
    "remove",
    "prune-backups",
    "repeat-missed",
)
#: The folder of a dir-type storage where its ISO images are (PVE::Storage::Plugin's iso subdir).
ISO_DIR = "template/iso"
_ISO_NAME = re.compile(r"[^/]+\.(?:iso|img)")


class StorageSimMixin:
    """Backup jobs, ISO images from the node shell, detached disks; see the module doc."""

    # Provided by FakePve / SimPve.
    storages: dict[str, dict[str, Any]]
    vms: list[Any]

    def _init_storage_sim(self) -> None:
        #: Backup job id -> its options (``jobs.cfg``).
        self.backup_jobs: dict[str, dict[str, Any]] = {}
        #: The simulated nodes' files (``engine.sim.nodefiles.NodeFiles.data``), when the node shell runs.
        self.node_files: dict[str, dict[str, dict[str, Any]]] | None = None

    def _routes_storage_sim(self) -> list[tuple[str, str, Any]]:
        jobs = "/cluster/backup"
        return [
            ("GET", jobs, self._sim_jobs),
            ("POST", jobs, self._sim_job_create),
            ("GET", jobs + "/{id}", self._sim_job_read),
            ("PUT", jobs + "/{id}", self._sim_job_update),
            ("DELETE", jobs + "/{id}", self._sim_job_delete),
        ]

    # ------------------------------------------------------------ backup jobs

    async def _sim_jobs(self, values: dict[str, Any], user: str) -> list[dict[str, Any]]:
        return [self._job_view(job_id) for job_id in sorted(self.backup_jobs)]

    def _job_view(self, job_id: str) -> dict[str, Any]:
        return {"id": job_id, "type": "vzdump", **self.backup_jobs[job_id]}

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self.backup_jobs.get(job_id)
        if job is None:
            raise die(f"job '{job_id}' does not exist")
        return job

    async def _sim_job_read(self, values: dict[str, Any], user: str) -> dict[str, Any]:
        self._job(str(values["id"]))
        return self._job_view(str(values["id"]))

    async def _sim_job_create(self, values: dict[str, Any], user: str) -> None:
        """PVE::API2::Backup create_job: an id (``backup-`` and 12 hex digits unless given), a schedule,
        the VMs (``vmid``, or ``all`` with ``exclude``), a storage that exists."""
        job_id = str(values.get("id") or f"backup-{secrets.token_hex(6)}")
        if job_id in self.backup_jobs:
            raise die(f"Job '{job_id}' already exists")
        options = {k: values[k] for k in JOB_OPTIONS if values.get(k) is not None}
        if not options.get("schedule"):
            raise param_error(schedule="property is missing")
        self._check_job(options)
        options.setdefault("enabled", 1)
        self.backup_jobs[job_id] = options

    async def _sim_job_update(self, values: dict[str, Any], user: str) -> None:
        job_id = str(values["id"])
        job = dict(self._job(job_id))
        for key in split_list(values.get("delete")):
            if key == "schedule":
                raise param_error(delete="cannot delete 'schedule'")
            job.pop(key, None)
        job.update({k: values[k] for k in JOB_OPTIONS if values.get(k) is not None})
        self._check_job(job)
        self.backup_jobs[job_id] = job

    async def _sim_job_delete(self, values: dict[str, Any], user: str) -> None:
        self._job(str(values["id"]))
        del self.backup_jobs[str(values["id"])]

    def _check_job(self, job: dict[str, Any]) -> None:
        if job.get("vmid") and job.get("all"):
            raise param_error(all="option conflicts with option 'vmid'")
        if not job.get("vmid") and not job.get("all"):
            raise param_error(vmid="you need to specify 'vmid' or 'all' (pools are not simulated)")
        storage = job.get("storage")
        if storage and storage not in self.storages:
            raise param_error(storage=f"storage '{storage}' does not exist")
        if storage and "backup" not in split_list(self.storages[storage].get("content")):
            raise param_error(storage=f"storage '{storage}' does not support backups")

    # ------------------------------------------------------------ ISO images on the nodes' disks

    def _iso_files(self, name: str) -> dict[str, dict[str, Any]]:
        """``iso/NAME`` -> volume for the ISO files the node shell put in the storage's ISO folder."""
        store = self.storages[name]
        files_based = store.get("type", "dir") in ("dir", "nfs", "cifs", "cephfs", "btrfs")
        if self.node_files is None or not files_based or "iso" not in split_list(store.get("content")):
            return {}
        folder = f"{self._base_path(name)}/{ISO_DIR}/"  # type: ignore[attr-defined]
        found: dict[str, dict[str, Any]] = {}
        for node, paths in list(self.node_files.items()):
            for path, record in list(paths.items()):
                rest = path[len(folder) :]
                if path.startswith(folder) and _ISO_NAME.fullmatch(rest) and record.get("type", "file") == "file":
                    volume = found.setdefault(
                        f"iso/{rest}",
                        {"content": "iso", "format": "iso", "size": int(record.get("size") or 0), "ctime": 0},
                    )
                    volume.setdefault("nodes", []).append(node)
        return found

    def _volumes(self, name: str) -> dict[str, Any]:
        volumes = super()._volumes(name)  # type: ignore[misc]
        for volname, volume in self._iso_files(name).items():
            volumes.setdefault(volname, volume)
        return volumes

    async def _content_delete(self, v: dict[str, Any], user: str) -> Any:
        """fakepve's removal, on the node the request names: a file on another node's disk stays (PVE
        ignores an archive that is not there), and an ISO the node shell wrote is removed from its disk."""
        sid, volname, volid, _store, vtype, owner, _fmt = self._volume_target(v)  # type: ignore[attr-defined]
        volume = self._volumes(sid).get(volname)
        node = str(v["node"])
        if volume is not None and not self._visible_on(sid, volume, node):  # type: ignore[attr-defined]
            if vtype == "backup" and owner:
                self.require(user, "/storage/" + sid, "Datastore.AllocateSpace")  # type: ignore[attr-defined]
                self.require(user, f"/vms/{owner}", "VM.Backup")  # type: ignore[attr-defined]
            else:
                self.require(user, "/storage/" + sid, "Datastore.Allocate")  # type: ignore[attr-defined]

            async def nothing() -> str:
                return f"Removed volume '{volid}'"

            return await self.task(node, "imgdel", sid, user, nothing, lock=False)  # type: ignore[attr-defined]
        if volume is not None and volume.get("nodes") and self.node_files is not None:
            self.node_files.get(node, {}).pop(f"{self._base_path(sid)}/{ISO_DIR}/{volname[4:]}", None)  # type: ignore[attr-defined]
        return await super()._content_delete(v, user)  # type: ignore[misc]

    # ------------------------------------------------------------ detached disks

    async def _apply_config(self, vm: Any, user: str, p: dict[str, Any]) -> None:
        """fakepve's config change, then PVE's handling of disks: a disk deleted from a stopped VM is
        kept as the next ``unusedN`` (without ``force``); an ``unusedN`` deleted destroys its volume."""
        deletes = [k for k in str(p.get("delete") or "").split(",") if k]
        force = str(p.get("force") or "0") in ("1", "true")
        p = {k: self._allocated(vm, k, x) for k, x in p.items() if k != "force"}
        before = dict(vm.config)
        running = vm.status == "running"
        await super()._apply_config(vm, user, p)  # type: ignore[misc]
        if running:
            return  # pending: PVE applies it at the next stop
        for key in deletes:
            if key not in before or key in vm.config:
                continue
            volume, props = split_drive(str(before[key]))
            if re.fullmatch(r"unused\d+", key) or (DRIVE_KEY.match(key) and force):
                if not is_cdrom(volume, props) and ":" in str(volume) and not self._in_snapshot(vm, volume):
                    self._qm_free(volume)  # type: ignore[attr-defined]
            elif DRIVE_KEY.match(key) and not is_cdrom(volume, props) and ":" in str(volume):
                vm.config[self._next_unused(vm)] = volume

    def _allocated(self, vm: Any, key: str, value: Any) -> Any:
        """A new disk ``STORAGE:SIZE_GIB`` allocated as PVE does (``vm-VMID-disk-N``); any other value as is."""
        if not DRIVE_KEY.match(key):
            return value
        volume, props = split_drive(str(value))
        found = re.fullmatch(r"([A-Za-z][A-Za-z0-9_.-]*):([0-9]+(?:\.[0-9]+)?)", str(volume))
        if found is None or is_cdrom(volume, props) or found.group(1) not in self.storages:
            return value
        size = int(float(found.group(2)) * 1024**3)
        volid, _fmt = self._qm_alloc(found.group(1), vm.vmid, props.pop("format", None), size)  # type: ignore[attr-defined]
        return join_drive(volid, {**props, "size": f"{found.group(2)}G"})

    @staticmethod
    def _next_unused(vm: Any) -> str:
        n = 0
        while f"unused{n}" in vm.config:
            n += 1
        return f"unused{n}"

    @staticmethod
    def _in_snapshot(vm: Any, volume: str) -> bool:
        """A volume a snapshot still references is kept (PVE: "volume is used by snapshot")."""
        return any(
            str(value).split(",")[0] == volume
            for snap in (vm.snapshots or {}).values()
            for value in (snap or {}).values()
            if isinstance(value, str)
        )
