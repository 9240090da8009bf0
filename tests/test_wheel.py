"""The wheel an operator installs carries the runbook library, and works outside the repository.

Builds the wheel from this checkout, installs it into a fresh virtual environment in a temporary
folder, and uses the installed ``runbook`` from a folder that is no runbook home: the packaged
library validates, and the main job runs on the simulated cluster from the example home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv holding only the wheel built from this checkout (and its dependencies)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(root / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = (root / "dist").glob("runbook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (
        "engine/data/cluster-config.yaml",
        "engine/data/clusters/talos-staging.yaml",
        "engine/data/runbooks/cluster-create.md",
        "engine/data/schemas/steps/api.schema.json",
        "engine/data/pve-changes.yaml",
        "engine/data/ingest-effects.yaml",
        "engine/templates/plan.html.j2",
    ):
        assert shipped in names, f"the wheel lacks {shipped}"
    assert len([n for n in names if n.startswith("engine/data/runbooks/")]) == len(
        list((REPO / "runbooks").glob("*.md"))
    )
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    pip = subprocess.run(
        [
            str(root / "venv" / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    return root / "venv" / "bin"


def runbook(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RUNBOOK_HOME", "VIRTUAL_ENV")}
    env.update(XDG_STATE_HOME=str(cwd / "state"), HOME=str(cwd), PATH=f"{bin_dir}:{env.get('PATH', '')}")
    return subprocess.run(
        [str(bin_dir / "runbook"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_the_installed_package_is_the_wheel_not_this_checkout(installed: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [str(installed / "python"), "-c", "import engine; print(engine.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found.startswith(str(installed.parent)) and not found.startswith(str(REPO))


def test_the_packaged_library_validates_and_lists(installed: Path, tmp_path: Path) -> None:
    checked = runbook(installed, tmp_path, "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no problems" in checked.stdout
    assert "using the example home that ships with runbook" in checked.stderr
    listed = runbook(installed, tmp_path, "list", "--json")
    names = {r["name"] for r in json.loads(listed.stdout)["runbooks"]}
    assert {"cluster-create", "cluster-teardown", "vm-resize"} <= names


def test_a_simulated_cluster_create_runs_from_the_packaged_library(installed: Path, tmp_path: Path) -> None:
    created = runbook(installed, tmp_path, "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes")
    assert created.returncode == 0, created.stdout + created.stderr
    assert "succeeded" in created.stdout
    status = runbook(installed, tmp_path, "sim", "status")
    assert status.returncode == 0 and "stg-cp03" in status.stdout and "running" in status.stdout
    assert (tmp_path / "state" / "runbook" / "example" / "sim" / "state.json").is_file()  # never in site-packages


def test_the_example_home_refuses_to_touch_a_real_cluster(installed: Path, tmp_path: Path) -> None:
    refused = runbook(installed, tmp_path, "run", "cluster-create", "--profile", "talos-staging", "--yes")
    assert refused.returncode == 3
    assert "needs your own runbook home, not the example" in refused.stderr
    assert not (tmp_path / "state" / "runbook" / "example" / "runs").exists()
