"""Simulates ``talosctl version``: the client's and the nodes' Talos versions."""

from __future__ import annotations

import hashlib

from .base import Call, Command


def version(call: Call) -> None:
    client = (
        f"Client:\n\tTag:         {call.x.version}\n\tSHA:         {_sha(call.x.version)}\n"
        f"\tBuilt:       \n\tGo version:  go1.23.7\n\tOS/Arch:     linux/amd64\n"
    )
    if call.args.get("short"):
        client = f"Client:\nTalos {call.x.version}\n"
    call.out(client)
    if call.args.get("client"):
        return
    if call.args.get("insecure"):
        servers = [(ip, None) for ip, _vm in call.insecure_targets("getting version")]
    else:
        _cluster, targets = call.connect("getting version")
        servers = [(ip, rec) for ip, _vm, rec in targets]
    call.out("Server:\n")
    for ip, record in servers:
        version = record["talos_version"] if record else call.x.version
        if call.args.get("short"):
            call.out(f"\tNODE:        {ip}\n\tTag:         {version}\n")
            continue
        call.out(
            f"\tNODE:        {ip}\n\tTag:         {version}\n\tSHA:         {_sha(version)}\n\tBuilt:       \n"
            f"\tGo version:  go1.23.7\n\tOS/Arch:     linux/amd64\n\tEnabled:     RBAC\n"
        )


def _sha(version: str) -> str:
    return hashlib.sha1(version.encode()).hexdigest()[:8]


COMMANDS = {
    ("version",): Command(
        version, {"client": ("bool", None), "short": ("bool", None), "insecure": ("bool", "i")}, 0, 0
    ),
}
