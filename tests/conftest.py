"""Shared fixtures: the repository as a runbook home, throw-away homes built from it, and the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from engine.load.home import Home

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
        # Tables in a pipe fit $COLUMNS; wide enough here that assertions see whole cells.
        return runner.invoke(
            main, list(args), input=input, env={"COLUMNS": "400", **(env or {})}, catch_exceptions=False
        )

    return run


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A real sshd answering for the three nodes' hosts, and a real pass store holding the token."""
    from tests.support.cluster import PASS_PATH, SECRET, TOKEN_ID
    from tests.support.passstore import create_pass_store
    from tests.support.sshd import start_sshd

    sshd = start_sshd(tmp_path_factory.mktemp("sshd"), aliases=("127.0.0.1", "127.0.0.2", "127.0.0.3"))
    store = create_pass_store(tmp_path_factory.mktemp("pass"), entries={PASS_PATH: [TOKEN_ID, SECRET]})
    try:
        yield sshd, store
    finally:
        sshd.stop()
        store.stop()


@pytest.fixture
def cluster(tmp_path: Path, services: tuple[Any, Any]) -> Iterator[Any]:
    """A home wired to fakepve over verified HTTPS, the sshd, the pass store and a fake talosctl.

    After the test, every output the test kept and every file under the home's .runbook/ is
    scanned for the token: a leak fails the test that caused it.
    """
    from tests.support.cluster import SECRET, LiveCluster, seed_cluster, write_home
    from tests.support.fake_talosctl import install
    from tests.support.fakepve_server import FakePveServer

    sshd, store = services
    (tmp_path / "pve").mkdir()
    with FakePveServer(tmp_path / "pve", SECRET) as pve:
        seed_cluster(pve)
        home = write_home(tmp_path / "home", pve, sshd)
        test = LiveCluster(home, pve, sshd, store, install(tmp_path / "talos"))
        yield test
        assert SECRET not in test.every_byte(), "the API token leaked into an output or a journal"
