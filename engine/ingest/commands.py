"""The commands ingest knows by name: which run on a Proxmox VE node, and which mark a line as a command.

Reading the shell itself is ``engine/shell/parse.py``; these are ingest's own vocabulary: a node
command becomes an ``ssh`` step (``classify``), and a line of prose that starts with one of
``COMMAND_WORDS`` is taken for a command on pages without code fences (``convert``, ``extract``).
"""

from __future__ import annotations

# Commands that run on a Proxmox VE node (so their steps are ``ssh`` steps).
NODE_COMMANDS = frozenset(
    {
        "qm",
        "pct",
        "pveum",
        "pvesm",
        "pvecm",
        "pveceph",
        "pvenode",
        "pvesh",
        "pvesr",
        "pveam",
        "pvesubscription",
        "pveversion",
        "pvereport",
        "pve-firewall",
        "ha-manager",
        "vzdump",
        "qmrestore",
        "qemu-img",
        "pveperf",
        "pvedaemon",
        "pveproxy",
        "proxmox-backup-client",
    }
)
# First words that mark a line of text as a command (for pages without code fences).
COMMAND_WORDS = frozenset(
    NODE_COMMANDS
    | {
        "curl",
        "wget",
        "ssh",
        "scp",
        "rsync",
        "talosctl",
        "kubectl",
        "helm",
        "flux",
        "jq",
        "yq",
        "echo",
        "sudo",
        "export",
        "cd",
        "mkdir",
        "cp",
        "mv",
        "rm",
        "cat",
        "ls",
        "sleep",
        "xz",
        "unxz",
        "gunzip",
        "tar",
        "sed",
        "awk",
        "grep",
        "chmod",
        "ansible-playbook",
        "ansible",
        "task",
        "pass",
        "systemctl",
        "journalctl",
        "apt",
        "apt-get",
        "ping",
        "openssl",
        "virt-customize",
        "git",
        "ip",
        "printf",
        "test",
        "source",
        "set",
    }
)
