"""Simulates ``talosctl config endpoint|node|info``: edits and shows the talosconfig."""

from __future__ import annotations

import yaml

from .base import Call, Command, write_file


def _edit_talosconfig(call: Call, key: str) -> None:
    data, name, context = call.talosconfig()
    context[key] = list(call.args.positional)
    data["contexts"][name] = context
    write_file(call.talosconfig_path(), yaml.safe_dump(data, sort_keys=False, indent=4), 0o600)


def endpoint(call: Call) -> None:
    _edit_talosconfig(call, "endpoints")


def node(call: Call) -> None:
    _edit_talosconfig(call, "nodes")


def info(call: Call) -> None:
    _data, name, context = call.talosconfig()
    call.out(
        f"Current context:     {name}\nNodes:               {', '.join(context.get('nodes') or []) or 'not defined'}\n"
        f"Endpoints:           {', '.join(context.get('endpoints') or []) or 'not defined'}\n"
    )


COMMANDS = {
    ("config", "endpoint"): Command(endpoint, {}, 0, 99),
    ("config", "node"): Command(node, {}, 0, 99),
    ("config", "info"): Command(info, {"output": ("str", "o")}, 0, 0),
}
