"""``cluster-config.yaml``: the cluster, how to reach and trust it, and its conventions.

Loading checks the file against its schema and then the rules a schema cannot state (unique node
names, sane VMID ranges, one way to trust every node's certificate). The secret itself never lives
here: only where to fetch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import schemas
from .home import Home
from .problems import InputError, Problem
from .yamlsource import YamlDoc, read_yaml_file


@dataclass(frozen=True)
class ClusterConfig:
    """The validated cluster config, with line information kept for later rules."""

    data: dict[str, Any]
    doc: YamlDoc

    @property
    def file(self) -> str:
        return self.doc.file

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return list(self.data["cluster"]["nodes"])

    @property
    def node_names(self) -> list[str]:
        return [str(n["name"]) for n in self.nodes]

    def vmid_range(self, kind: str) -> tuple[int, int]:
        span = self.data["vmid_ranges"][kind]
        return int(span["min"]), int(span["max"])


def load_config(home: Home) -> ClusterConfig:
    """Load and check the home's cluster config; raises ``InputError`` with every problem."""
    doc = read_yaml_file(home.config_path, home.shown(home.config_path))
    problems = config_problems(doc)
    if problems:
        raise InputError(problems)
    return ClusterConfig(doc.data, doc)


def config_problems(doc: YamlDoc) -> list[Problem]:
    """Every problem in a loaded config document: YAML structure, schema, then cross-field rules."""
    problems = schemas.check_document(doc, "cluster-config.schema.json", "the cluster config")
    if problems:
        return problems
    data = doc.data
    # Hosts are unique even on different ports: SSH steps reach a node by its host alone, so two
    # nodes sharing one would run each other's commands (qm acts on the local node's VMs).
    for key in ("name", "host"):
        seen: dict[str, int] = {}
        for index, node in enumerate(data["cluster"]["nodes"]):
            value = str(node[key])
            if value in seen:
                first = ("cluster", "nodes", seen[value])
                problems.append(
                    doc.problem(
                        ("cluster", "nodes", index, key),
                        f"node {key} '{value}' is used twice (also nodes[{seen[value]}] on line "
                        f"{doc.line_of(first)}); every node needs its own {key}",
                    )
                )
            else:
                seen[value] = index
    ranges = data["vmid_ranges"]
    for kind in ("templates", "vms"):
        if ranges[kind]["min"] > ranges[kind]["max"]:
            problems.append(
                doc.problem(
                    ("vmid_ranges", kind, "min"),
                    f"min {ranges[kind]['min']} is above max {ranges[kind]['max']}; "
                    "swap them or correct the one that is wrong",
                )
            )
    t, v = ranges["templates"], ranges["vms"]
    if t["min"] <= v["max"] and v["min"] <= t["max"]:
        problems.append(
            doc.problem(
                ("vmid_ranges", "vms"),
                f"the VM range {v['min']}-{v['max']} overlaps the template range "
                f"{t['min']}-{t['max']}; templates and VMs must never share VMIDs",
            )
        )
    problems += _tls_problems(doc, data)
    return problems


def _tls_problems(doc: YamlDoc, data: dict[str, Any]) -> list[Problem]:
    """The ``tls`` section and the nodes' own fingerprints must say exactly one way to trust the nodes.

    Pinning (``tls.fingerprint`` or a node's ``fingerprint``) covers every node or none: a node
    left out would have nothing to check its certificate against. ``ca_file`` together with a
    fingerprint is refused rather than one silently winning: whoever wrote both may believe both
    are checked, and a refusal is the simpler rule to state and to trust.
    """
    tls = data["tls"]
    nodes = data["cluster"]["nodes"]
    own = [str(node["name"]) for node in nodes if node.get("fingerprint")]
    pinned = bool(tls.get("fingerprint")) or bool(own)
    pins = _pins_named(bool(tls.get("fingerprint")), own)
    if tls.get("insecure") is True:
        if not (tls.get("ca_file") or pinned):
            return []
        what = (f"ca_file and {pins}" if tls.get("ca_file") else pins) if own else "ca_file/fingerprint"
        return [
            doc.problem(
                ("tls", "insecure"),
                f"insecure: true together with {what} is contradictory; remove insecure to verify the certificate",
            )
        ]
    if tls.get("ca_file") and pinned:
        return [
            doc.problem(
                ("tls", "ca_file"),
                f"ca_file and {pins} are both given, but a node's certificate is checked one way "
                "only: remove ca_file to pin every node by its fingerprint, or remove the "
                "fingerprint(s) to verify every node with the cluster CA",
            )
        ]
    if pinned and not tls.get("fingerprint"):
        pinned_by_own = (
            f"node {own[0]} is pinned by its own"
            if len(own) == 1
            else f"nodes {', '.join(own)} are pinned by their own"
        )
        return [
            doc.problem(
                ("cluster", "nodes", index),
                f"node {node['name']} has no fingerprint, while {pinned_by_own}: when pinning, every "
                f"node needs one. Add fingerprint: to {node['name']} (on that node: 'openssl x509 "
                "-noout -fingerprint -sha256 -in /etc/pve/local/pve-ssl.pem'), or set tls.fingerprint "
                "for the nodes without one of their own",
            )
            for index, node in enumerate(nodes)
            if not node.get("fingerprint")
        ]
    if pinned or tls.get("ca_file"):
        return []
    if tls.get("insecure") is False:
        return [
            doc.problem(
                ("tls",),
                "insecure: false says to verify the nodes' certificate, but not how: "
                "add ca_file (the cluster CA, /etc/pve/pve-root-ca.pem on a node) "
                "or fingerprint (SHA-256 of the node certificate)",
            )
        ]
    return [
        doc.problem(
            ("tls",),
            "say how to verify the nodes' certificate: ca_file (the cluster CA, "
            "/etc/pve/pve-root-ca.pem on a node), fingerprint (SHA-256 of the node "
            "certificate), or insecure: true",
        )
    ]


def _pins_named(cluster_wide: bool, own: list[str]) -> str:
    """``tls.fingerprint`` and/or ``the fingerprint of node pve01`` / ``the fingerprints of nodes pve01, pve02``."""
    named = []
    if cluster_wide:
        named.append("tls.fingerprint")
    if own:
        named.append(
            f"the fingerprint of node {own[0]}" if len(own) == 1 else f"the fingerprints of nodes {', '.join(own)}"
        )
    return " and ".join(named)


def config_warnings(config: ClusterConfig, home: Home) -> list[Problem]:
    """What is not wrong in the file but will stop real runs: a ``tls.ca_file`` that is not there.

    Not an error: a home used only with ``--simulate``, or before the CA is copied, is usable.
    """
    ca_file = (config.data.get("tls") or {}).get("ca_file")
    if not ca_file:
        return []
    path = Path(str(ca_file)).expanduser()
    path = path if path.is_absolute() else home.root / path
    if path.is_file():
        return []
    return [
        config.doc.problem(
            ("tls", "ca_file"),
            f"{ca_file} does not exist here: a run against the cluster stops before its first request. "
            f"Copy the cluster CA from a node (`scp root@NODE:/etc/pve/pve-root-ca.pem {path}`), or fix "
            "the path (a --simulate run does not need it)",
        )
    ]
