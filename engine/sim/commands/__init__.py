"""The simulated node shell's commands: ``COMMANDS`` maps a command's name to its handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import Out
from .builtins import (
    cd_command,
    echo_command,
    exit_command,
    export_command,
    false_command,
    hostname_command,
    set_command,
    true_command,
)
from .curl import curl_command
from .digest import digest_command
from .grep import grep_command
from .head_tail import head_tail_command
from .mkdir import mkdir_command
from .mv import mv_command
from .qm import qm_command
from .rm import rm_command
from .test import test_command
from .wget import wget_command
from .xz import xz_command

if TYPE_CHECKING:
    from ..shell import Run


COMMANDS: dict[str, Callable[[Run, list[str], str], Out]] = {
    "echo": echo_command,
    "true": true_command,
    ":": true_command,
    "false": false_command,
    "exit": exit_command,
    "export": export_command,
    "set": set_command,
    "cd": cd_command,
    "hostname": hostname_command,
    "test": test_command,
    "[": test_command,
    "rm": rm_command,
    "mkdir": mkdir_command,
    "mv": mv_command,
    "sha256sum": digest_command,
    "sha512sum": digest_command,
    "grep": grep_command,
    "head": head_tail_command,
    "tail": head_tail_command,
    "wget": wget_command,
    "curl": curl_command,
    "xz": xz_command,
    "unxz": xz_command,
    "qm": qm_command,
}
