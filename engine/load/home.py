"""Finding the runbook home: the folder holding ``cluster-config.yaml``, ``clusters/`` and ``runbooks/``.

Operators keep their own home (their cluster, their profiles, their runbooks) outside this
repository, so the engine never assumes where it is installed: ``--home``, then ``RUNBOOK_HOME``,
then the current folder and its parents. Where none is found, the example home that ships inside
the package (the repository's own config, profiles and runbook library) serves what cannot harm a
cluster: reading the library, validating it, and runs on the simulated cluster. Its cluster is
fictional, so the CLI refuses to contact a real one from it, and its state (runs, the simulated
cluster) lives in the user's state folder, since the package folder may be read-only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import exitcodes
from ..errors import RunbookError

CONFIG_NAME = "cluster-config.yaml"


class HomeError(RunbookError):
    """No usable runbook home; the message says where we looked and how to point at one."""

    exit_code = exitcodes.NO_HOME


@dataclass(frozen=True)
class Home:
    """A runbook home and the paths inside it."""

    root: Path
    #: Where run records live when not in ``root/.runbook`` (the example home's package folder may be read-only).
    state_root: Path | None = None

    @property
    def example(self) -> bool:
        """Whether this is the example home shipped inside the package, not an operator's own."""
        return self.state_root is not None

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
        return self.state_root or self.root / ".runbook"

    def shown(self, path: Path) -> str:
        """``path`` as the user should read it: relative to the home when inside it."""
        for candidate in (path, path.resolve()):  # the example home's files may be links into a checkout
            try:
                return str(candidate.relative_to(self.root))
            except ValueError:
                continue
        return str(path)

    def runbook_paths(self) -> list[Path]:
        return sorted(self.runbooks_dir.glob("*.md")) if self.runbooks_dir.is_dir() else []

    def profile_paths(self) -> list[Path]:
        if not self.clusters_dir.is_dir():
            return []
        return sorted([*self.clusters_dir.glob("*.yaml"), *self.clusters_dir.glob("*.yml")])


def example_home(env: Mapping[str, str] = os.environ) -> Home:
    """The example home shipped in the package; its state goes to ``$XDG_STATE_HOME/runbook/example``."""
    from ..resources import data_path

    state = Path(env.get("XDG_STATE_HOME") or Path("~/.local/state").expanduser()) / "runbook" / "example"
    return Home(data_path(), state_root=state)


def find_home(
    explicit: str | None, env: Mapping[str, str] = os.environ, cwd: Path | None = None, fallback: bool = True
) -> Home:
    """Locate the home from ``--home``, ``RUNBOOK_HOME`` or the current folder upward.

    With none of them, the example home when ``fallback`` (a home named explicitly that is not one
    is always an error: the operator meant that folder).
    """
    for source, value in (("--home", explicit), ("RUNBOOK_HOME", env.get("RUNBOOK_HOME"))):
        if value:
            root = Path(value).expanduser()
            if not root.is_dir():
                raise HomeError(f"{source} points at {root}, which is not a folder")
            if not (root / CONFIG_NAME).is_file():
                raise HomeError(
                    f"{source} points at {root}, which is not a runbook home: it has no {CONFIG_NAME}. "
                    f"A home holds {CONFIG_NAME}, clusters/ and runbooks/"
                )
            return Home(root.resolve())
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_NAME).is_file():
            return Home(folder)
    if fallback:
        return example_home(env)
    raise HomeError(
        f"no runbook home found: neither {start} nor any folder above it has a {CONFIG_NAME}. "
        "Run from inside a home, pass --home DIR, or set RUNBOOK_HOME"
    )
