"""``cluster-config.yaml``: the cluster, how to reach and trust it, and its conventions.

Loading checks the file against its schema and then the rules a schema cannot state (unique node
names, sane VMID ranges). The secret itself never lives here: only where to fetch it.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    fields = schemas.field_list(schemas.required_fields("cluster-config.schema.json"))
    if doc.data is None:
        return [Problem(doc.file, 1, None, f"the file is empty; the cluster config needs {fields} "
                                           "(see docs/profiles.md)")]
    if not isinstance(doc.data, dict):
        return [Problem(doc.file, doc.line_of(()), None, f"the cluster config is a YAML mapping ({fields}), "
                                                         f"but this file holds {schemas.describe(doc.data)}")]
    problems = list(doc.problems) + schemas.check(doc, "cluster-config.schema.json")
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
                problems.append(doc.problem(("cluster", "nodes", index, key),
                                            f"node {key} '{value}' is used twice (also nodes[{seen[value]}] on line "
                                            f"{doc.line_of(first)}); every node needs its own {key}"))
            else:
                seen[value] = index
    ranges = data["vmid_ranges"]
    for kind in ("templates", "vms"):
        if ranges[kind]["min"] > ranges[kind]["max"]:
            problems.append(doc.problem(("vmid_ranges", kind, "min"),
                                        f"min {ranges[kind]['min']} is above max {ranges[kind]['max']}; "
                                        "swap them or correct the one that is wrong"))
    t, v = ranges["templates"], ranges["vms"]
    if t["min"] <= v["max"] and v["min"] <= t["max"]:
        problems.append(doc.problem(("vmid_ranges", "vms"),
                                    f"the VM range {v['min']}-{v['max']} overlaps the template range "
                                    f"{t['min']}-{t['max']}; templates and VMs must never share VMIDs"))
    tls = data["tls"]
    if tls.get("insecure") is False and not (tls.get("ca_file") or tls.get("fingerprint")):
        problems.append(doc.problem(("tls",), "insecure: false says to verify the nodes' certificate, but not how: "
                                              "add ca_file (the cluster CA, /etc/pve/pve-root-ca.pem on a node) "
                                              "or fingerprint (SHA-256 of the node certificate)"))
    if tls.get("insecure") and (tls.get("ca_file") or tls.get("fingerprint")):
        problems.append(doc.problem(("tls", "insecure"), "insecure: true together with ca_file/fingerprint is "
                                                         "contradictory; remove insecure to verify the certificate"))
    return problems
