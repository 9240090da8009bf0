"""What the simulated node commands share: a command's result, an exit, names and sizes."""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Exit(Exception):
    def __init__(self, code: int):
        self.code = code


@dataclass
class Out:
    status: int = 0
    out: str = ""
    err: str = ""


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{size} B"
