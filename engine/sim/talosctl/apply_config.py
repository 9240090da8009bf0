"""Simulates ``talosctl apply-config``: a machine config installs a node in maintenance mode."""

from __future__ import annotations

import hashlib
import ipaddress
import time
from typing import Any

import yaml

from ..state import SimVm
from .base import Call, Command, Fail, host_of, image_version, ip_key
from .configdocs import (
    apply_patches,
    config_addresses,
    config_cluster_id,
    config_kubernetes_version,
    config_vips,
    load_config_docs,
    v1alpha1_doc,
    validate_machine_config,
)


def apply_config(call: Call) -> None:
    what = "applying new configuration"
    file = call.args.get("file")
    if not file:
        raise Fail("error: no filename specified: use --file (simulation: interactive apply-config is not simulated)")
    path = call.path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Fail(f"failed to read configuration from {file!r}: open {file}: no such file or directory") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise Fail(f"failed to read configuration from {file!r}: {exc}") from None
    docs = load_config_docs(text, file)
    docs = apply_patches(docs, call.args.get("config-patch") or [], call)
    config = v1alpha1_doc(docs)
    problems = validate_machine_config(config)
    if problems:
        detail = "".join(f"\n\t* {p}" for p in problems)
        raise Fail(
            f"error {what}: rpc error: code = InvalidArgument desc = configuration validation failed: "
            f"{len(problems)} error{'s' if len(problems) > 1 else ''} occurred:{detail}"
        )
    if call.args.get("insecure"):
        targets = [(ip, vm, None) for ip, vm in call.insecure_targets(what)]
    else:
        cluster_id, connected = call.connect(what)
        targets = [(ip, vm, rec) for ip, vm, rec in connected]
    dry_run = call.args.get("dry-run")
    for ip, vm, record in targets:
        addresses = config_addresses(config)
        if addresses and not any(_in_network(ip, address) for address in addresses):
            raise Fail(
                f"error {what}: simulation: the machine config gives this node the address(es) "
                f"{', '.join(addresses)}, but it was sent to {ip}; it would come up at another address "
                "(a patch for another node?)"
            )
        if record is not None:
            if record["role"] != config["machine"]["type"]:
                raise Fail(
                    f"error {what}: rpc error: code = InvalidArgument desc = configuration validation "
                    f"failed: 1 error occurred:\n\t* machine type can't be changed from "
                    f"{record['role']!r} to {config['machine']['type']!r}"
                )
            if record["cluster_id"] != config_cluster_id(config):
                raise Fail(
                    f"error {what}: simulation: the config belongs to another cluster (other secrets) "
                    f"than the one {ip} is installed in; reset the node first"
                )
        if dry_run:
            call.out("Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\n")
            continue
        _install(call, ip, vm, config, docs)
        call.out("Applied configuration without a reboot\n" if record is not None else "")


def _install(call: Call, ip: str, vm: SimVm, config: dict[str, Any], docs: list[Any]) -> None:
    """Record node ``ip`` as installed with this config (and its cluster, if new)."""
    machine = config["machine"]
    cluster_section = config["cluster"]
    cluster_id = config_cluster_id(config)
    endpoint = str(cluster_section["controlPlane"]["endpoint"])
    endpoint_host = host_of(endpoint)
    image = str((machine.get("install") or {}).get("image") or f"ghcr.io/siderolabs/installer:{call.x.version}")
    kube = config_kubernetes_version(config)
    cluster = call.world.clusters.setdefault(
        cluster_id,
        {
            "name": str(cluster_section.get("clusterName") or "cluster"),
            "endpoint": endpoint,
            "ca": machine["ca"]["crt"],
            "vips": [],
            "bootstrapped_on": None,
            "kubernetes_version": kube,
            "healthy": False,
        },
    )
    vips = set(cluster.get("vips", [])) | set(config_vips(config))
    if not call.x.vm_lookup(endpoint_host) and endpoint_host not in call.world.nodes:
        vips.add(endpoint_host)  # the endpoint is no node: a VIP or load balancer the cluster answers on
    cluster["vips"] = sorted(vips, key=ip_key)
    hostname = (machine.get("network") or {}).get("hostname") or _default_hostname(ip)
    previous = call.world.nodes.get(ip, {})
    call.world.nodes[ip] = {
        "vmid": vm.vmid,
        "vm_uid": vm.uid,
        "vm_name": vm.name,
        "role": machine["type"],
        "cluster_id": cluster_id,
        "cluster_name": cluster["name"],
        "hostname": hostname,
        "talos_version": previous.get("talos_version") or image_version(image) or call.x.version,
        "install_image": previous.get("install_image") or image,
        "config_sha256": hashlib.sha256(yaml.safe_dump_all(docs, sort_keys=True).encode()).hexdigest(),
        "addresses": config_addresses(config),
        "upgrades": previous.get("upgrades", []),
        "installed_at": previous.get("installed_at") or int(time.time()),
    }
    cluster["healthy"] = False


def _in_network(ip: str, address: str) -> bool:
    try:
        return ipaddress.ip_interface(address).ip == ipaddress.ip_address(ip)
    except ValueError:
        return True  # not an IP: nothing to compare


def _default_hostname(ip: str) -> str:
    digest = hashlib.sha256(ip.encode()).hexdigest()
    return f"talos-{digest[:3]}-{digest[3:6]}"


COMMANDS = {
    ("apply-config",): Command(
        apply_config,
        {
            "file": ("str", "f"),
            "insecure": ("bool", "i"),
            "mode": ("str", "m"),
            "dry-run": ("bool", None),
            "config-patch": ("array", "p"),
            "timeout": ("str", None),
            "cert-fingerprint": ("array", None),
        },
        0,
        0,
    ),
}
