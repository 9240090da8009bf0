"""Simulates ``talosctl reset``: nodes go back to maintenance mode."""

from __future__ import annotations

from .base import Call, Command


def reset(call: Call) -> None:
    what = "executing reset"
    if call.args.get("insecure"):
        for ip, _vm in call.insecure_targets(what):
            call.out(f"watching nodes: [{ip}]\n    * {ip}: events check condition met\n")
        return
    _cluster, targets = call.connect(what)
    for ip, _vm, _record in targets:
        call.world.forget_node(ip)
        call.out(f"watching nodes: [{ip}]\n    * {ip}: events check condition met\n")


COMMANDS = {
    ("reset",): Command(
        reset,
        {
            "graceful": ("bool", None),
            "reboot": ("bool", None),
            "system-labels-to-wipe": ("list", None),
            "user-disks-to-wipe": ("list", None),
            "wait": ("bool", None),
            "wipe-mode": ("str", None),
            "insecure": ("bool", None),
            "timeout": ("str", None),
        },
        0,
        0,
    ),
}
