"""Simulates ``talosctl kubeconfig``: writes an admin kubeconfig for the cluster."""

from __future__ import annotations

from typing import Any

import yaml

from .base import Call, Command, Fail, NotSimulated, fake_pem, write_file


def kubeconfig(call: Call) -> None:
    what = "retrieving kubeconfig"
    if not call.args.positional:
        raise NotSimulated(
            "simulation: talosctl kubeconfig without a path would merge into ~/.kube/config; "
            "give it a path (the simulation never touches your own kubeconfig)"
        )
    cluster_id, ip, _vm, record = call.single(what)
    if record["role"] != "controlplane":
        raise Fail(
            f"error {what}: rpc error: code = Unimplemented desc = kubeconfig is only available on control plane nodes"
        )
    cluster = call.world.clusters[cluster_id]
    target = call.path(call.args.positional[0])
    if target.is_dir():
        target = target / "kubeconfig"
    name = cluster["name"]
    context_name = call.args.get("force-context-name") or f"admin@{name}"
    entry = _kubeconfig(name, context_name, cluster["endpoint"], cluster["ca"])
    if target.exists() and not call.args.get("force") and call.args.get("merge", True):
        try:
            existing = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise Fail(f"error {what}: error merging kubeconfig: {' '.join(str(exc).split())}") from None
        for section, key in (("clusters", "name"), ("users", "name"), ("contexts", "name")):
            kept = [
                item for item in existing.get(section) or [] if item.get(key) not in {e[key] for e in entry[section]}
            ]
            existing[section] = kept + entry[section]
        existing["current-context"] = context_name
        existing.setdefault("apiVersion", "v1")
        existing.setdefault("kind", "Config")
        entry = existing
    write_file(target, yaml.safe_dump(entry, sort_keys=False), 0o600)


def _kubeconfig(name: str, context: str, server: str, ca: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [
            {
                "name": context,
                "user": {
                    "client-certificate-data": fake_pem("CERTIFICATE"),
                    "client-key-data": fake_pem("EC PRIVATE KEY"),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": name, "namespace": "default", "user": context}}],
        "current-context": context,
    }


COMMANDS = {
    ("kubeconfig",): Command(
        kubeconfig, {"force": ("bool", "f"), "merge": ("bool", "m"), "force-context-name": ("str", None)}, 0, 1
    ),
}
