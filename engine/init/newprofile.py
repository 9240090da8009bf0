"""``runbook profiles new NAME``: a first profile from a few answers, checked as ``validate`` checks one.

The answers (flags, or questions on a terminal) become the profile's data; its text is checked with
``profile_problems`` and ``cross_profile_problems`` against the home's config and its other profiles
(names, VMIDs and addresses no other profile uses) before it is written, so a profile this command
writes is one ``runbook validate`` accepts. Defaults come from the home: the first VMIDs after every
other profile's, the template the other profiles use.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..load.config import ClusterConfig
from ..load.home import Home
from ..load.problems import InputError, Problem
from ..load.profiles import Profile, cross_profile_problems, load_profiles, profile_problems
from ..load.yamlsource import load_yaml
from ..resources import data_path
from ..runbook.validate import validate_home

#: What a Talos profile starts from when not told: the shipped example's versions and Image Factory schematic.
TALOS_EXAMPLE = "talos-staging.yaml"


@dataclass
class Answers:
    """What the operator said (or the defaults stood for); ``None`` is "not given"."""

    name: str
    type: str = "generic"
    description: str = ""
    controlplanes: int | None = None
    workers: int | None = None
    cores: int = 2
    memory: int = 4096
    disk: str = "32G"
    placement: str = "spread"
    template: int | None = None
    start_vmid: int | None = None
    tags: list[str] = field(default_factory=list)
    first_ip: str | None = None
    gateway: str | None = None
    prefix_length: int | None = None
    nameservers: list[str] = field(default_factory=list)
    vip: str | None = None


def defaults(home: Home, config: ClusterConfig) -> tuple[int, int | None]:
    """(first free VMID after every profile's plan, the template the home's profiles use or None)."""
    profiles, _ = load_profiles(home, config)
    low, _high = config.vmid_range("vms")
    planned = [vm.vmid for profile in profiles for vm in profile.plan(config).vms if vm.vmid]
    start = max(low, (max(planned) // 10 + 1) * 10 + 1) if planned else low + 1
    templates = [int(p.data["template"]) for p in profiles]
    return start, (templates[0] if templates else None)


def build(answers: Answers) -> dict[str, Any]:
    """The profile's data, in the order the shipped profiles use."""
    talos = answers.type == "talos"
    controlplanes = answers.controlplanes if answers.controlplanes is not None else (3 if talos else 1)
    workers = answers.workers if answers.workers is not None else (0 if talos else 2)
    start = answers.start_vmid
    data: dict[str, Any] = {"name": answers.name}
    data["description"] = (
        answers.description or f"{answers.name}: {controlplanes} control plane(s), {workers} worker(s)"
    )
    data["type"] = answers.type
    if talos:
        data["talos"] = _talos(answers)
    network = _network(answers, controlplanes)
    if network:
        data["network"] = network
    ips = _addresses(answers.first_ip, controlplanes + workers)
    groups = {}
    for group, count, prefix, offset in (
        ("controlplane", controlplanes, f"{answers.name}-cp", 0),
        ("workers", workers, f"{answers.name}-w", max(10, controlplanes)),
    ):
        spec: dict[str, Any] = {
            "count": count,
            "name_prefix": prefix,
            "cores": answers.cores,
            "memory": answers.memory,
            "disk": answers.disk,
        }
        if start is not None:
            spec["start_vmid"] = start + offset
        spec["placement"] = answers.placement
        if ips:
            first = 0 if group == "controlplane" else controlplanes
            spec["assignments"] = [
                {"name": f"{prefix}{index + 1:02d}", "ip": ips[first + index]} for index in range(count)
            ]
        groups[group] = spec
    data["nodes"] = groups
    data["template"] = answers.template
    data["tags"] = answers.tags or [answers.name]
    return data


def _talos(answers: Answers) -> dict[str, Any]:
    example = yaml.safe_load((data_path() / "clusters" / TALOS_EXAMPLE).read_text(encoding="utf-8"))["talos"]
    return {
        "version": example["version"],
        "kubernetes_version": example["kubernetes_version"],
        "config_dir": f"~/.config/runbook/talos/{answers.name}",
        "secrets_file": "secrets.yaml",
        "patches_dir": "patches",
        "factory": example["factory"],
        "vip": {"interface": "eth0", "ip": answers.vip},
    }


def _network(answers: Answers, controlplanes: int) -> dict[str, Any]:
    network: dict[str, Any] = {}
    if answers.type == "talos":
        network["api_endpoint"] = answers.vip
        network["pod_cidr"] = "10.244.0.0/16"
        network["service_cidr"] = "10.96.0.0/12"
    if answers.gateway:
        network["gateway"] = answers.gateway
    if answers.prefix_length:
        network["prefix_length"] = answers.prefix_length
    if answers.nameservers:
        network["nameservers"] = answers.nameservers
    elif answers.type == "talos" and answers.gateway:
        network["nameservers"] = [answers.gateway]
    return network


def _addresses(first: str | None, count: int) -> list[str]:
    """``count`` consecutive addresses from ``first`` (a bad address is left for the checks to name)."""
    if not first:
        return []
    try:
        start = ipaddress.ip_address(first)
    except ValueError:
        return [first] * count  # the profile checks say what is wrong with it, on its line
    return [str(start + offset) for offset in range(count)]


def render(data: dict[str, Any]) -> str:
    header = "# Written by 'runbook profiles new'; check it with 'runbook validate' after any edit.\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


def check(home: Home, config: ClusterConfig, name: str, text: str) -> list[Problem]:
    """The problems ``runbook validate`` would find in this profile, alone and beside the home's others."""
    shown = home.shown(home.clusters_dir / f"{name}.yaml")
    doc = load_yaml(text, shown)
    problems = profile_problems(doc, name, config)
    if problems:
        return problems
    others, _ = load_profiles(home, config)
    return [p for p in cross_profile_problems([*others, Profile(name, doc.data, doc)], config) if p.file == shown]


def write(home: Home, config: ClusterConfig, answers: Answers) -> tuple[Path, dict[str, Any]]:
    """Write ``clusters/NAME.yaml`` once it passes every check; refuses to overwrite."""
    path = home.clusters_dir / f"{answers.name}.yaml"
    if path.exists():
        raise InputError(
            Problem(home.shown(path), None, None, "exists already; choose another name, or edit that file")
        )
    data = build(answers)
    text = render(data)
    problems = check(home, config, answers.name, text)
    if problems:
        note = "not written: change the answers these name (runbook profiles new --help lists the flags)"
        raise InputError([*problems, Problem(home.shown(path), None, None, note)])
    home.clusters_dir.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    # validate also renders every runbook with every profile: what a runbook needs of a profile (a
    # Talos bootstrap needs its gateway...) is only found that way. A profile it refuses is taken back.
    mine = [
        p
        for p in validate_home(home).problems
        if p.file == home.shown(path) or f"(with profile {answers.name})" in p.message
    ]
    if mine:
        path.unlink()
        note = "not written: the runbooks above need more of this profile (runbook profiles new --help lists the flags)"
        raise InputError([*mine, Problem(home.shown(path), None, None, note)])
    return path, data
