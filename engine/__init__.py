"""runbook: a markdown-driven procedure engine for Proxmox VE clusters running Talos Linux.

The package is organised along the way data flows: parse (``parser``) -> load context (``config``,
``profiles``) -> plan (``plan``) -> validate (``validate``); the CLI (``cli``) only wires them.
"""

__version__ = "0.1.0"
