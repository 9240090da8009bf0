"""What the package ships beside its code: the runbook library, the example home, the schemas.

They live in ``engine/data/`` and are read through ``importlib.resources`` only, so they are found
the same way from a wheel, a pipx install and a source checkout. In the repository, ``engine/data/``
holds links to the top-level ``runbooks/``, ``clusters/``, ``schemas/`` and ``cluster-config.yaml``
(the repository is itself a home, and those stay where an operator looks for them); building a
wheel copies what the links point at, so an installed ``runbook`` carries its library.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path


def data() -> Traversable:
    """The package's data folder (``engine/data``)."""
    return files(__package__) / "data"


def data_path() -> Path:
    """The data folder as a real path, which the example home and file globbing need.

    Packages installed from a wheel or a checkout are plain folders, so this costs nothing; a
    zipped install (which pip never makes) would be refused rather than half-read.
    """
    with as_file(data()) as path:
        if not (path / "cluster-config.yaml").is_file():
            raise RuntimeError(f"runbook is installed without its data (looked in {path}); reinstall the package")
        return Path(path)


def schema_dir() -> Path:
    """The JSON Schemas every document is checked against."""
    return data_path() / "schemas"
