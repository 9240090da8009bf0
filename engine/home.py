"""Finding the runbook home: the folder holding ``cluster-config.yaml``, ``clusters/`` and ``runbooks/``.

Operators keep their own home (their cluster, their profiles, their runbooks) outside this
repository, so the engine never assumes where it is installed: ``--home``, then ``RUNBOOK_HOME``,
then the current folder and its parents.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "cluster-config.yaml"


class HomeError(Exception):
    """No usable runbook home; the message says where we looked and how to point at one."""


@dataclass(frozen=True)
class Home:
    """A runbook home and the paths inside it."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def clusters_dir(self) -> Path:
        return self.root / "clusters"

    @property
    def runbooks_dir(self) -> Path:
        return self.root / "runbooks"

    @property
    def state_dir(self) -> Path:
        """Run records, locks and the simulated cluster; never committed."""
        return self.root / ".runbook"

    def shown(self, path: Path) -> str:
        """``path`` as the user should read it: relative to the home when inside it."""
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    def runbook_paths(self) -> list[Path]:
        return sorted(self.runbooks_dir.glob("*.md")) if self.runbooks_dir.is_dir() else []

    def profile_paths(self) -> list[Path]:
        if not self.clusters_dir.is_dir():
            return []
        return sorted([*self.clusters_dir.glob("*.yaml"), *self.clusters_dir.glob("*.yml")])


def find_home(explicit: str | None, env: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Home:
    """Locate the home from ``--home``, ``RUNBOOK_HOME`` or the current folder upward."""
    for source, value in (("--home", explicit), ("RUNBOOK_HOME", env.get("RUNBOOK_HOME"))):
        if value:
            root = Path(value).expanduser()
            if not root.is_dir():
                raise HomeError(f"{source} points at {root}, which is not a folder")
            if not (root / CONFIG_NAME).is_file():
                raise HomeError(f"{source} points at {root}, which is not a runbook home: it has no {CONFIG_NAME}. "
                                f"A home holds {CONFIG_NAME}, clusters/ and runbooks/")
            return Home(root.resolve())
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_NAME).is_file():
            return Home(folder)
    raise HomeError(f"no runbook home found: neither {start} nor any folder above it has a {CONFIG_NAME}. "
                    "Run from inside a home, pass --home DIR, or set RUNBOOK_HOME")
