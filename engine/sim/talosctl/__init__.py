"""The simulated talosctl subcommands: ``COMMANDS`` maps a subcommand's path to its ``Command``."""

from __future__ import annotations

from . import (
    apply_config,
    bootstrap,
    config,
    etcd,
    gen,
    get,
    health,
    images,
    kubeconfig,
    machineconfig,
    reset,
    upgrade,
    upgrade_k8s,
    version,
)
from .base import Command

COMMANDS: dict[tuple[str, ...], Command] = {
    **apply_config.COMMANDS,
    **bootstrap.COMMANDS,
    **health.COMMANDS,
    **kubeconfig.COMMANDS,
    **version.COMMANDS,
    **get.COMMANDS,
    **etcd.COMMANDS,
    **upgrade.COMMANDS,
    **upgrade_k8s.COMMANDS,
    **reset.COMMANDS,
    **gen.COMMANDS,
    **machineconfig.COMMANDS,
    **images.COMMANDS,
    **config.COMMANDS,
}
