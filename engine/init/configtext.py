"""The ``cluster-config.yaml`` that ``runbook init --from`` writes: what was read, and what was guessed.

Written from a template rather than dumped, so every value the cluster could not say for certain
carries a ``# GUESSED:`` comment saying what it was guessed from and what to check; the operator
reads those lines first. Strings are written as JSON strings (valid YAML), so no name a cluster
reports can change the file's structure. The text is checked with the same rules as
``runbook validate`` before it is written (``scaffold.make_home`` is only called with a text that
passed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .discover import Discovery

#: The VM conventions a config needs and a cluster cannot tell: the shipped example's.
FIXED_DEFAULTS = """  bios: ovmf
  machine: q35
  cpu: host
  scsi_controller: virtio-scsi-single
  guest_agent: true"""


@dataclass(frozen=True)
class Access:
    """How init reached the cluster, written back as the config's credentials and tls."""

    port: int
    pass_path: str | None
    token_env: str
    ca_file: str | None  # absolute path
    fingerprint: str | None  # the answering node's, confirmed by the operator or given
    ssh_user: str = "root"


def _q(value: Any) -> str:
    return json.dumps(value)


def vmid_ranges(discovery: Discovery) -> tuple[tuple[int, int], tuple[int, int], list[str]]:
    """(templates range, VMs range, notes): the example's 100-199 and 1000-1999 unless the cluster's
    templates sit elsewhere; the VM range never overlaps the templates'."""
    notes = []
    templates = [vm.vmid for vm in discovery.templates]
    low, high = 100, 199
    if templates and not all(low <= t <= high for t in templates):
        low, high = min(templates) // 100 * 100, max(templates) // 100 * 100 + 99
        notes.append(f"the templates' VMIDs ({', '.join(map(str, templates))}) decided it")
    vms = (1000, 1999)
    while vms[0] <= high and low <= vms[1]:
        vms = (vms[0] + 1000, vms[1] + 1000)
    return (low, high), vms, notes


def render(discovery: Discovery, access: Access) -> str:
    """The config text for ``discovery`` reached through ``access``."""
    out = [
        f"# Written by 'runbook init --from' from what cluster {discovery.name} reported. Lines marked GUESSED",
        "# are the engine's best guess: check each before a real run. Secrets never live here.",
        "cluster:",
        f"  name: {_q(discovery.name)}",
        "  nodes:",
    ]
    for node in discovery.nodes:
        fields = [f"name: {_q(node.name)}", f"host: {_q(node.host)}", f"port: {access.port}"]
        if node.cores:
            fields.append(f"cores: {node.cores}")
        if node.memory_mb:
            fields.append(f"memory: {node.memory_mb}")
        notes = []
        if node.host_guessed:
            notes.append("GUESSED: host is the address the cluster records for the node; use its name if DNS has one")
        if not node.online:
            notes.append("the node was not online: its bridges were not read")
        out.append(f"    - {{{', '.join(fields)}}}" + (f"  # {'; '.join(notes)}" if notes else ""))
    out += ["", "credentials:"]
    out.append("  # `pass` entry: line 1 the token id (user@realm!tokenid), line 2 the secret.")
    if access.pass_path:
        out.append(f"  pass_path: {_q(access.pass_path)}")
    else:  # runbooks that store a token (api-token-bootstrap) need an entry named
        out.append(f"  pass_path: {_q(f'proxmox/{discovery.name}/runbook-token')}  # GUESSED: no --pass-path was given")
    out.append("  # When this variable is set (CI, automation) it is used instead of pass: user@realm!tokenid=secret")
    out.append(f"  token_env: {access.token_env}")
    out.append(f"  ssh_user: {_q(access.ssh_user)}  # GUESSED: the user SSH steps log in as on the nodes")
    out += ["", "tls:"]
    if access.ca_file:
        out.append(
            "  # The cluster CA (on a node: /etc/pve/pve-root-ca.pem): every node's certificate is checked with it."
        )
        out.append(f"  ca_file: {_q(access.ca_file)}")
    else:
        out.append("  # The certificate fingerprint you confirmed for the node that answered. Each node has its own")
        out.append(
            "  # certificate: a node whose fingerprint differs is refused (nothing is sent) until you give it its"
        )
        out.append("  # own `fingerprint:` in cluster.nodes (on it: openssl x509 -noout -fingerprint -sha256 -in")
        out.append(
            "  # /etc/pve/local/pve-ssl.pem), or replace this with ca_file: (the cluster CA, /etc/pve/pve-root-ca.pem)."
        )
        out.append(f"  fingerprint: {_q(access.fingerprint)}")
    out += ["", "defaults:", *_storage(discovery), *_bridge(discovery), FIXED_DEFAULTS]
    (t_low, t_high), (v_low, v_high), notes = vmid_ranges(discovery)
    out += ["", "vmid_ranges:"]
    guess = f"  # GUESSED: {'; '.join(notes)}" if notes else "  # GUESSED: the example's ranges"
    out.append(f"  templates: {{min: {t_low}, max: {t_high}}}{guess}")
    in_use = [vmid for vmid in discovery.vmids if v_low <= vmid <= v_high]
    used = f"; in use there now: {_short(in_use)}" if in_use else "; none in use there now"
    out.append(f"  vms: {{min: {v_low}, max: {v_high}}}  # GUESSED: clear of the templates' range{used}")
    out += ["", *_templates(discovery)]
    return "\n".join(out) + "\n"


def _storage(discovery: Discovery) -> list[str]:
    storages = discovery.image_storages()
    online = [node.name for node in discovery.nodes if node.online]
    everywhere = [s for s in storages if s[1] or set(online) <= set(s[2])]
    if not everywhere:
        return [
            '  storage: "local-lvm"  # GUESSED: no storage for VM disks was seen on every node; name one',
            "  shared_storage: false",
        ]
    name, shared, _ = everywhere[0]
    seen = ", ".join(f"{s[0]} ({'shared' if s[1] else 'local: ' + ', '.join(s[2])})" for s in storages)
    return [
        f"  storage: {_q(name)}  # GUESSED from the storages holding VM disks: {seen}",
        f"  shared_storage: {'true' if shared else 'false'}",
    ]


def _bridge(discovery: Discovery) -> list[str]:
    bridges = discovery.common_bridges()
    if not bridges:
        return ['  network_bridge: "vmbr0"  # GUESSED: no bridge was found on every online node; name one']
    note = f"  # GUESSED: bridges on every node: {', '.join(bridges)}" if len(bridges) > 1 else ""
    return [f"  network_bridge: {_q(bridges[0])}{note}"]


def _templates(discovery: Discovery) -> list[str]:
    templates = discovery.templates
    lines = ["# Templates on the cluster (VMID, name, node, tags):"]
    lines += [f"#   {vm.vmid} {vm.name} on {vm.node} [{';'.join(vm.tags)}]" for vm in templates] or ["#   none"]
    common = sorted(set(templates[0].tags).intersection(*(vm.tags for vm in templates[1:]))) if templates else []
    if common:
        lines += ["tags:", f"  templates: {_q(common)}  # GUESSED: the tags every template above carries"]
    return lines


def _short(vmids: list[int]) -> str:
    return ", ".join(map(str, vmids[:12])) + (f" and {len(vmids) - 12} more" if len(vmids) > 12 else "")
