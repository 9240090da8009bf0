"""Cluster profiles (``clusters/*.yaml``): loading, and the rules between fields and between profiles.

The schema says what a profile may contain; the functions here say what a schema cannot: counts
that match their assignments, VMIDs inside the cluster's range and never shared between profiles,
a tag that identifies each cluster alone (teardown selects VMs by tags, so two clusters with the
same tags would destroy each other), distinct Flux paths, non-overlapping networks, known nodes and
unique addresses. Each rule is its own function returning located problems.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import schemas
from .config import ClusterConfig
from .home import Home
from .plan import Plan, PlanError, compute_plan
from .problems import InputError, Problem
from .yamlsource import YamlDoc, read_yaml_file


@dataclass(frozen=True)
class Profile:
    """A profile that passed its own checks (schema and single-profile rules)."""

    name: str
    data: dict[str, Any]
    doc: YamlDoc

    @property
    def file(self) -> str:
        return self.doc.file

    def plan(self, config: ClusterConfig, cluster_vms: Any = ()) -> Plan:
        return compute_plan(self.data, config.data, cluster_vms)


def read_profile(path: Path, home: Home) -> YamlDoc:
    return read_yaml_file(path, home.shown(path))


def profile_problems(doc: YamlDoc, expected_name: str, config: ClusterConfig | None) -> list[Problem]:
    """Problems of one profile on its own (and against the cluster config when it loaded)."""
    if not isinstance(doc.data, dict):
        return [Problem(doc.file, doc.line_of(()), None, "a profile must be a YAML mapping (name:, type:, nodes:, ...)")]
    problems = list(doc.problems) + schemas.check(doc, "cluster-profile.schema.json")
    if problems:
        return problems
    data = doc.data
    if data["name"] != expected_name:
        problems.append(doc.problem(("name",), f"name '{data['name']}' does not match the file name "
                                               f"'{expected_name}.yaml'; rename one so they agree"))
    problems += _assignment_counts(doc)
    problems += _addresses(doc)
    if config is not None:
        problems += _nodes_known(doc, config)
        problems += _template_in_range(doc, config)
        if not problems:
            problems += _plannable(doc, config)
    return problems


def load_profile(home: Home, name: str, config: ClusterConfig) -> Profile:
    """Load one profile by name, checked on its own and against the other profiles."""
    path = home.clusters_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in home.profile_paths()) or "none"
        raise InputError(Problem(home.shown(path), None, None, f"no profile named '{name}' (profiles: {known})"))
    profiles, problems = load_profiles(home, config)
    mine = [p for p in problems if p.file == home.shown(path)]
    if mine:
        raise InputError(mine)
    return next(p for p in profiles if p.name == name)


def load_profiles(home: Home, config: ClusterConfig | None) -> tuple[list[Profile], list[Problem]]:
    """Every profile in the home that passes its own checks, and every problem found in any of them."""
    profiles: list[Profile] = []
    problems: list[Problem] = []
    for path in home.profile_paths():
        try:
            doc = read_profile(path, home)
        except InputError as exc:
            problems += exc.problems
            continue
        own = profile_problems(doc, path.stem, config)
        problems += own
        if not own:
            profiles.append(Profile(doc.data["name"], doc.data, doc))
    if config is not None:
        problems += cross_profile_problems(profiles, config)
    return profiles, problems


def _assignment_counts(doc: YamlDoc) -> list[Problem]:
    problems = []
    for group, spec in doc.data["nodes"].items():
        assignments = spec.get("assignments") or []
        if assignments and len(assignments) != spec["count"]:
            problems.append(doc.problem(("nodes", group, "count"),
                                        f"count is {spec['count']} but {len(assignments)} assignments are given; "
                                        "give one assignment per VM, or none"))
        for key in ("name", "vmid"):
            seen: dict[Any, int] = {}
            for index, item in enumerate(assignments):
                if key in item and item[key] in seen:
                    problems.append(doc.problem(("nodes", group, "assignments", index, key),
                                                f"{key} {item[key]} is already given to assignments[{seen[item[key]]}]"))
                elif key in item:
                    seen[item[key]] = index
    return problems


def _addresses(doc: YamlDoc) -> list[Problem]:
    """IPs parse, CIDRs parse, and a profile's pod and service networks are apart."""
    problems = []
    for path, value in _ip_fields(doc.data):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            problems.append(doc.problem(path, f"'{value}' is not a valid IP address"))
    endpoint = doc.data["network"].get("api_endpoint")
    if endpoint is not None and _looks_numeric(endpoint):
        try:
            ipaddress.ip_address(endpoint)
        except ValueError:
            problems.append(doc.problem(("network", "api_endpoint"), f"'{endpoint}' is not a valid IP address"))
    nets = {}
    for key in ("pod_cidr", "service_cidr"):
        try:
            nets[key] = ipaddress.ip_network(doc.data["network"][key], strict=True)
        except ValueError as exc:
            problems.append(doc.problem(("network", key), f"'{doc.data['network'][key]}' is not a valid CIDR ({exc})"))
    if len(nets) == 2 and nets["pod_cidr"].version == nets["service_cidr"].version \
            and nets["pod_cidr"].overlaps(nets["service_cidr"]):
        problems.append(doc.problem(("network", "service_cidr"),
                                    f"service_cidr {nets['service_cidr']} overlaps pod_cidr {nets['pod_cidr']}"))
    seen: dict[str, str] = {}
    for path, value in _ip_fields(doc.data):
        label = ".".join(str(p) for p in path)
        if value in seen:
            problems.append(doc.problem(path, f"IP {value} is also used by {seen[value]}"))
        else:
            seen[value] = label
    return problems


def _looks_numeric(value: str) -> bool:
    return all(c.isdigit() or c in ".:" for c in value) or ":" in value


def _ip_fields(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """(path, value) of every field that must hold a unique IP address: node IPs and the VIP."""
    out: list[tuple[tuple[Any, ...], str]] = []
    for group, spec in data["nodes"].items():
        for index, item in enumerate(spec.get("assignments") or []):
            if "ip" in item:
                out.append((("nodes", group, "assignments", index, "ip"), str(item["ip"])))
    vip = (data.get("talos") or {}).get("vip")
    if vip:
        out.append((("talos", "vip", "ip"), str(vip["ip"])))
    return out


def _nodes_known(doc: YamlDoc, config: ClusterConfig) -> list[Problem]:
    known = config.node_names
    problems = []
    for group, spec in doc.data["nodes"].items():
        for index, item in enumerate(spec.get("assignments") or []):
            if "node" in item and item["node"] not in known:
                problems.append(doc.problem(("nodes", group, "assignments", index, "node"),
                                            f"node '{item['node']}' is not in {config.file} "
                                            f"(nodes: {', '.join(known)})"))
    return problems


def _template_in_range(doc: YamlDoc, config: ClusterConfig) -> list[Problem]:
    low, high = config.vmid_range("templates")
    template = doc.data["template"]
    if not low <= template <= high:
        return [doc.problem(("template",), f"template VMID {template} is outside vmid_ranges.templates "
                                           f"({low}-{high}) of {config.file}")]
    return []


def _plannable(doc: YamlDoc, config: ClusterConfig) -> list[Problem]:
    """The static plan (no cluster state) must exist: every VMID inside vmid_ranges.vms, every VM placed."""
    try:
        compute_plan(doc.data, config.data)
    except PlanError as exc:
        return [doc.problem(exc.field, exc.message)]
    return []


def cross_profile_problems(profiles: list[Profile], config: ClusterConfig) -> list[Problem]:
    """Rules between profiles: VMIDs, identifying tags, Flux paths, networks and IPs never shared."""
    problems: list[Problem] = []
    plans = {p.name: compute_plan(p.data, config.data) for p in profiles}
    for i, first in enumerate(profiles):
        for second in profiles[i + 1:]:
            problems += _pair(first, second, plans)
    for profile in profiles:
        others = set().union(*(set(p.data["tags"]) for p in profiles if p is not profile))
        if others and not set(profile.data["tags"]) - others:
            problems.append(profile.doc.problem(("tags",), "every tag here is also used by another profile, so its VMs "
                                                           "cannot be told apart (teardown selects VMs by tag); add a tag "
                                                           "only this profile has, such as its name"))
    return problems


def _pair(first: Profile, second: Profile, plans: dict[str, Plan]) -> list[Problem]:
    """Problems between two profiles, reported on the second (the later file) naming the first."""
    problems = []
    where = f"profile '{first.name}' ({first.file})"
    mine = {vm.vmid: vm for vm in plans[second.name].vms}
    theirs = {vm.vmid: vm for vm in plans[first.name].vms}
    shared = sorted(set(mine) & set(theirs))
    if shared:
        vm = mine[shared[0]]
        field = _vm_field(second, vm.group, vm.index)
        ids = ", ".join(str(v) for v in shared)
        problems.append(second.doc.problem(field, f"VMID{'s' if len(shared) > 1 else ''} {ids} also planned by {where}"))
    first_flux, second_flux = first.data.get("flux"), second.data.get("flux")
    if first_flux and second_flux \
            and _norm_path(first_flux["path"]) == _norm_path(second_flux["path"]):
        problems.append(second.doc.problem(("flux", "path"), f"Flux path '{second_flux['path']}' is also used by {where}; "
                                                             "two clusters reconciling one path fight over it"))
    for key in ("pod_cidr", "service_cidr"):
        mine_net = ipaddress.ip_network(second.data["network"][key])
        for other_key in ("pod_cidr", "service_cidr"):
            theirs_net = ipaddress.ip_network(first.data["network"][other_key])
            if mine_net.version == theirs_net.version and mine_net.overlaps(theirs_net):
                problems.append(second.doc.problem(("network", key), f"{key} {mine_net} overlaps {other_key} "
                                                                     f"{theirs_net} of {where}"))
    their_ips = {value: path for path, value in _ip_fields(first.data)}
    for path, value in _ip_fields(second.data):
        if value in their_ips:
            problems.append(second.doc.problem(path, f"IP {value} is also used by {where} "
                                                     f"at {'.'.join(str(p) for p in their_ips[value])}"))
    return problems


def _vm_field(profile: Profile, group: str, index: int) -> tuple[Any, ...]:
    spec = profile.data["nodes"][group]
    if spec.get("assignments"):
        return ("nodes", group, "assignments", index - 1, "vmid")
    return ("nodes", group, "start_vmid") if "start_vmid" in spec else ("nodes", group)


def _norm_path(path: str) -> str:
    return "/".join(part for part in str(path).split("/") if part not in ("", "."))
