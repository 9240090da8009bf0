"""Simulates ``talosctl machineconfig patch``: patches a machine config file."""

from __future__ import annotations

import yaml

from .base import Call, Command, Fail, write_file
from .configdocs import apply_patches, load_config_docs


def patch(call: Call) -> None:
    source = call.args.positional[0]
    try:
        text = call.path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise Fail(f"open {source}: {exc.strerror.lower() if exc.strerror else exc}") from None
    docs = apply_patches(load_config_docs(text, source), call.args.get("patch") or [], call)
    result = yaml.safe_dump_all(docs, sort_keys=False, indent=4)
    output = call.args.get("output")
    if output and output != "-":
        write_file(call.path(output), result, 0o600)
    else:
        call.out(result)


COMMANDS = {
    ("machineconfig", "patch"): Command(patch, {"patch": ("array", "p"), "output": ("str", "o")}, 1, 1),
}
