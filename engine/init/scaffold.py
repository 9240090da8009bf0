"""``runbook init DIR``: a new home from what the package ships, never over anything already there.

The home gets ``cluster-config.yaml`` (the shipped example, or one written from a live cluster),
``clusters/`` with the example profile, and ``runbooks/`` with the shipped library and its manifest
(``library.py``). Every file is checked before the first is written: a folder that already holds
any of them is refused whole, so an init never half-overwrites a home.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import exitcodes
from ..errors import RunbookError
from ..load.home import CONFIG_NAME, Home
from ..resources import data_path
from . import library

#: The example profile a new home starts with: generic VMs, no Talos, nothing pinned to node names.
EXAMPLE_PROFILE = "dev-generic.yaml"


class InitError(RunbookError):
    """The home cannot be made where asked; the message names the path and what to do."""

    exit_code = exitcodes.PROBLEMS


def check_target(root: Path) -> None:
    """Refuse a target that is a file, or a folder already holding a home's parts."""
    if root.exists() and not root.is_dir():
        raise InitError(f"{root} exists and is not a folder; choose another path for the new home")
    taken = [name for name in (CONFIG_NAME, "clusters", "runbooks") if (root / name).exists()]
    if taken:
        raise InitError(
            f"{root} already holds {', '.join(taken)}; runbook init never overwrites. Choose an empty or new "
            "folder, or keep this home up to date with 'runbook library status' and 'runbook library update'"
        )


def make_home(root: Path, config_text: str | None = None, profile_text: str | None = None) -> Home:
    """Write a new home at ``root``; ``config_text``/``profile_text`` replace the shipped examples."""
    check_target(root)
    source = data_path()
    try:
        root.mkdir(parents=True, exist_ok=True)
        home = Home(root.resolve())
        if config_text is None:
            shutil.copyfile(source / CONFIG_NAME, home.config_path)
        else:
            home.config_path.write_text(config_text, encoding="utf-8")
        home.clusters_dir.mkdir()
        profile = home.clusters_dir / EXAMPLE_PROFILE
        if profile_text is None:
            shutil.copyfile(source / "clusters" / EXAMPLE_PROFILE, profile)
        else:
            profile.write_text(profile_text, encoding="utf-8")
        home.runbooks_dir.mkdir()
        library.install(home)
        ignore = home.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text(
                "# run records, locks and the simulated cluster: this machine's, never committed\n.runbook/\n",
                encoding="utf-8",
            )
    except OSError as exc:
        raise InitError(f"cannot write the new home at {root}: {exc}") from None
    return home
