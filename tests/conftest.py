"""Shared fixtures: the repository as a runbook home, throw-away homes built from it, and the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from engine.home import Home

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"


@pytest.fixture
def repo_home() -> Home:
    """The repository itself, which is a runbook home."""
    return Home(REPO)


@pytest.fixture
def make_home(tmp_path: Path) -> Callable[..., Home]:
    """Build a home in tmp_path from the repository's files, with some files replaced or removed.

    ``files`` maps a path inside the home to its new text, or to None to delete it.
    """

    def build(files: dict[str, str | None] | None = None, runbooks: bool = True) -> Home:
        root = tmp_path / "home"
        root.mkdir()
        shutil.copy(REPO / "cluster-config.yaml", root / "cluster-config.yaml")
        shutil.copytree(REPO / "clusters", root / "clusters")
        if runbooks:
            shutil.copytree(REPO / "runbooks", root / "runbooks")
        else:
            (root / "runbooks").mkdir()
        for rel, text in (files or {}).items():
            target = root / rel
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        return Home(root.resolve())

    return build


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run the CLI in-process: ``cli('--home', dir, 'validate')``; stdout and stderr kept apart."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(main, list(args), input=input, env=env, catch_exceptions=False)

    return run
