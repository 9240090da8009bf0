"""Cluster profiles (``clusters/*.yaml``): loading, and the rules between fields and between profiles.

The schema says what a profile may contain; the functions here say what a schema cannot: counts
that match their assignments, VMIDs inside the cluster's range and never shared between profiles,
a tag that identifies each cluster alone (teardown selects VMs by tags, so two clusters with the
same tags would destroy each other), distinct Flux paths, non-overlapping networks, known nodes and
unique addresses. Each rule is its own function returning located problems.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import schemas
from .config import ClusterConfig
from .home import Home
from .placement import Plan, PlanError, compute_plan
from .problems import InputError, Problem, no_such
from .yamlsource import YamlDoc, dotted, read_yaml_file


@dataclass(frozen=True)
class Profile:
    """A profile that passed its own checks (schema and single-profile rules)."""

    name: str
    data: dict[str, Any]
    doc: YamlDoc

    @property
    def file(self) -> str:
        return self.doc.file

    def plan(
        self,
        config: ClusterConfig,
        cluster_vms: Any = (),
        *,
        offline: Iterable[str] = (),
        placed: Mapping[str, str] | None = None,
    ) -> Plan:
        """Where each VM of this profile goes (see ``compute_plan`` for ``offline`` and ``placed``)."""
        return compute_plan(self.data, config.data, cluster_vms, offline=offline, placed=placed)


def read_profile(path: Path, home: Home) -> YamlDoc:
    return read_yaml_file(path, home.shown(path))


def profile_problems(doc: YamlDoc, expected_name: str, config: ClusterConfig | None) -> list[Problem]:
    """Problems of one profile on its own (and against the cluster config when it loaded)."""
    problems = schemas.check_document(doc, "cluster-profile.schema.json", "a profile")
    if problems:
        return problems
    data = doc.data
    if data["name"] != expected_name:
        problems.append(
            doc.problem(
                ("name",),
                f"name '{data['name']}' does not match the file name '{expected_name}.yaml'; rename one so they agree",
            )
        )
    assignments = _assignment_counts(doc)
    problems += assignments + _addresses(doc)
    if config is not None:
        problems += _nodes_known(doc, config)
        problems += _template_in_range(doc, config)
        if not assignments:  # the plan would only repeat a duplicate name or VMID
            problems += _plannable(doc, config)
    return problems


def load_profile(home: Home, name: str, config: ClusterConfig) -> Profile:
    """Load one profile by name, checked on its own and against the other profiles."""
    path = home.clusters_dir / f"{name}.yaml"
    if not path.is_file():
        known = [p.stem for p in home.profile_paths()]
        raise InputError(Problem(home.shown(path), None, None, no_such("profile", name, known, "runbook profiles")))
    profiles, problems = load_profiles(home, config)
    mine = [p for p in problems if p.file == home.shown(path)]
    if mine:
        raise InputError(sorted(mine, key=lambda p: (p.line or 0, p.field or "", p.message)))
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
            problems.append(
                doc.problem(
                    ("nodes", group, "count"),
                    f"count is {spec['count']} but {len(assignments)} assignments are given; "
                    "give one assignment per VM, or none",
                )
            )
        for key in ("name", "vmid"):
            seen: dict[Any, int] = {}
            for index, item in enumerate(assignments):
                if key in item and item[key] in seen:
                    first = seen[item[key]]
                    problems.append(
                        doc.problem(
                            ("nodes", group, "assignments", index, key),
                            f"{key} {item[key]} is already given to assignments[{first}] "
                            f"(line {doc.line_of(('nodes', group, 'assignments', first))}); "
                            f"every VM needs its own {key}",
                        )
                    )
                elif key in item:
                    seen[item[key]] = index
    return problems


def _addresses(doc: YamlDoc) -> list[Problem]:
    """IPs parse, CIDRs parse, and a profile's pod and service networks are apart."""
    problems = []
    for path, value in _ip_fields(doc.data):
        if (reason := _bad_ip(value)) is not None:
            problems.append(doc.problem(path, reason))
    network = doc.data.get("network") or {}
    endpoint = network.get("api_endpoint")
    if endpoint is not None and _looks_numeric(endpoint) and (reason := _bad_ip(endpoint)) is not None:
        problems.append(doc.problem(("network", "api_endpoint"), reason))
    nets = {}
    for key in ("pod_cidr", "service_cidr"):
        if key not in network:
            continue  # a generic profile needs no Kubernetes networks
        value = str(network[key])
        try:
            nets[key] = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            problems.append(doc.problem(("network", key), _bad_cidr(value, exc)))
    if (
        len(nets) == 2
        and nets["pod_cidr"].version == nets["service_cidr"].version
        and nets["pod_cidr"].overlaps(nets["service_cidr"])
    ):
        problems.append(
            doc.problem(
                ("network", "service_cidr"),
                f"service_cidr {nets['service_cidr']} overlaps pod_cidr {nets['pod_cidr']} "
                f"(line {doc.line_of(('network', 'pod_cidr'))}): pods and services need "
                "separate networks",
            )
        )
    seen: dict[str, tuple[Any, ...]] = {}
    for path, value in _ip_fields(doc.data):
        if value in seen:
            other = seen[value]
            why = (
                "the VIP moves between control planes, so no VM may have its address"
                if path[:2] == ("talos", "vip")
                else "every VM needs its own address"
            )
            problems.append(
                doc.problem(path, f"IP {value} is also used by {dotted(other)} (line {doc.line_of(other)}); {why}")
            )
        else:
            seen[value] = path
    return problems


def _bad_ip(value: str) -> str | None:
    """Why ``value`` is not an IP address, or None when it is one."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if "/" in value:
            return f"'{value}' is a network, not an address: write the address without /{value.split('/', 1)[1]}"
        parts = value.split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            return f"'{value}' is not a valid IP address: each of the four numbers is 0 to 255"
        return f"'{value}' is not a valid IP address (write it like 10.20.0.31)"
    return None


def _bad_cidr(value: str, exc: ValueError) -> str:
    """Why ``value`` is not a network in CIDR form, with the fix when there is an obvious one."""
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        address, slash, prefix = value.partition("/")
        if not slash:
            return f"'{value}' has no prefix length: write the network with its size, like {value}/16"
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:
            return f"'{value}' is not a network in CIDR form like 10.244.0.0/16 ({exc})"
        return (
            f"'{value}' has prefix length /{prefix}, but an IPv{version} prefix is 0 to {32 if version == 4 else 128}"
        )
    return f"'{value}' has host bits set: write the network address, {loose}"


def _looks_numeric(value: str) -> bool:
    return all(c.isdigit() or c in ".:/" for c in value) or ":" in value


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


def _networks(data: dict[str, Any]) -> dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The profile's pod and service networks that it names (a generic profile may name none)."""
    network = data.get("network") or {}
    return {key: ipaddress.ip_network(network[key]) for key in ("pod_cidr", "service_cidr") if key in network}


def _address_fields(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Addresses that must not be shared with another profile: node IPs, the VIP and the API endpoint.

    Inside one profile the API endpoint may be the VIP (that is what a VIP is for), so it is only
    compared across profiles; host names compare without regard to case.
    """
    endpoint = (data.get("network") or {}).get("api_endpoint")
    extra = [(("network", "api_endpoint"), str(endpoint).lower())] if endpoint else []
    return _ip_fields(data) + extra


def _nodes_known(doc: YamlDoc, config: ClusterConfig) -> list[Problem]:
    known = config.node_names
    problems = []
    for group, spec in doc.data["nodes"].items():
        for index, item in enumerate(spec.get("assignments") or []):
            if "node" in item and item["node"] not in known:
                # Only a difference of case is a safe guess: pve09 is not a typo of pve03.
                guess = [k for k in known if k.lower() == str(item["node"]).lower()]
                problems.append(
                    doc.problem(
                        ("nodes", group, "assignments", index, "node"),
                        f"node '{item['node']}' is not in {config.file}"
                        + (f": did you mean '{guess[0]}'?" if guess else "")
                        + f" (nodes: {', '.join(known)})",
                    )
                )
    return problems


def _template_in_range(doc: YamlDoc, config: ClusterConfig) -> list[Problem]:
    low, high = config.vmid_range("templates")
    template = doc.data["template"]
    if not low <= template <= high:
        return [
            doc.problem(
                ("template",),
                f"template VMID {template} is outside vmid_ranges.templates "
                f"({low}-{high}) of {config.file}; give the VMID of a template "
                f"from {low} to {high}",
            )
        ]
    return []


def _plannable(doc: YamlDoc, config: ClusterConfig) -> list[Problem]:
    """The static plan (no cluster state) must exist: every VMID inside vmid_ranges.vms, every VM placed."""
    try:
        compute_plan(doc.data, config.data)
    except PlanError as exc:
        return [doc.problem(exc.field, exc.message)]
    return []


def cross_profile_problems(profiles: list[Profile], config: ClusterConfig) -> list[Problem]:
    """Rules between profiles: VMIDs, identifying tags, Flux paths, networks and IPs never shared.

    A clash is reported on both profiles, each naming the other, so checking any one file (a new
    profile, whatever its name sorts as) finds it.
    """
    problems: list[Problem] = []
    plans = {p.name: compute_plan(p.data, config.data) for p in profiles}
    for mine in profiles:
        for theirs in profiles:
            if theirs is not mine:
                problems += _clashes(mine, theirs, plans)
    for profile in profiles:
        others = set().union(*(set(p.data["tags"]) for p in profiles if p is not profile))
        if others and not set(profile.data["tags"]) - others:
            problems.append(
                profile.doc.problem(
                    ("tags",),
                    "every tag here is also used by another profile, so its VMs "
                    "cannot be told apart (teardown selects VMs by tag); add a tag "
                    "only this profile has, such as its name",
                )
            )
    return problems


def _clashes(mine: Profile, theirs: Profile, plans: dict[str, Plan]) -> list[Problem]:
    """What ``mine`` shares with ``theirs`` and must not, reported on ``mine`` naming ``theirs``."""
    problems = []
    where = f"profile '{theirs.name}' ({theirs.file})"
    my_vms = {vm.vmid: vm for vm in plans[mine.name].vms}
    their_vms = {vm.vmid: vm for vm in plans[theirs.name].vms}
    shared = sorted(set(my_vms) & set(their_vms))
    if shared:
        vm = my_vms[shared[0]]
        ids = ", ".join(str(v) for v in shared)
        problems.append(
            mine.doc.problem(
                _vm_field(mine, vm.group, vm.index),
                f"VMID{'s' if len(shared) > 1 else ''} {ids} also planned by {where}; "
                "one of the two profiles must use other VMIDs",
            )
        )
    my_flux, their_flux = mine.data.get("flux"), theirs.data.get("flux")
    if my_flux and their_flux and _norm_path(my_flux["path"]) == _norm_path(their_flux["path"]):
        problems.append(
            mine.doc.problem(
                ("flux", "path"),
                f"Flux path '{my_flux['path']}' is also used by {where}; "
                "two clusters reconciling one path fight over it",
            )
        )
    mine_nets, their_nets = _networks(mine.data), _networks(theirs.data)
    for key, my_net in mine_nets.items():
        for other_key, their_net in their_nets.items():
            if my_net.version == their_net.version and my_net.overlaps(their_net):
                problems.append(
                    mine.doc.problem(
                        ("network", key),
                        f"{key} {my_net} overlaps {other_key} "
                        f"{their_net} of {where}; one of the two "
                        "profiles must use another network",
                    )
                )
    their_addresses: dict[str, tuple[Any, ...]] = {}
    for path, value in _address_fields(theirs.data):
        their_addresses.setdefault(value, path)
    for path, value in _address_fields(mine.data):
        if value in their_addresses:
            problems.append(
                mine.doc.problem(
                    path,
                    f"{'IP' if _looks_numeric(value) else 'address'} {value} is also "
                    f"used by {where} at {dotted(their_addresses[value])}; "
                    "two clusters cannot share an address",
                )
            )
    return problems


def _vm_field(profile: Profile, group: str, index: int) -> tuple[Any, ...]:
    spec = profile.data["nodes"][group]
    if spec.get("assignments"):
        return ("nodes", group, "assignments", index - 1, "vmid")
    return ("nodes", group, "start_vmid") if "start_vmid" in spec else ("nodes", group)


def _norm_path(path: str) -> str:
    return "/".join(part for part in str(path).split("/") if part not in ("", "."))
