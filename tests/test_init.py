"""``runbook init`` and ``runbook library``: a home from the package, and the library kept up to date
without losing an operator's edit (the installed version is stood in for by a modified copy)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from engine.ingest import trust
from engine.init import library
from engine.load.home import Home
from engine.resources import data_path
from engine.runbook.parser import parse_runbook_file

SHIPPED = data_path() / "runbooks"


@pytest.fixture
def newer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped library that ``runbook library`` sees as the installed version."""
    folder = tmp_path / "installed"
    shutil.copytree(SHIPPED, folder)
    monkeypatch.setattr(library, "shipped_dir", lambda: folder)
    return folder


def test_init_makes_a_home_that_validates(tmp_path: Path, cli: Callable[..., Result]) -> None:
    target = tmp_path / "ops"
    result = cli("init", str(target))
    assert result.exit_code == 0, result.stderr
    assert (target / "cluster-config.yaml").read_bytes() == (data_path() / "cluster-config.yaml").read_bytes()
    assert sorted(p.name for p in (target / "clusters").iterdir()) == ["dev-generic.yaml"]
    shipped = sorted(p.name for p in SHIPPED.glob("*.md"))
    assert sorted(p.name for p in (target / "runbooks").glob("*.md")) == shipped
    manifest = json.loads((target / "runbooks" / ".library.json").read_text())
    assert set(manifest["runbooks"]) == set(shipped)
    assert ".runbook/" in (target / ".gitignore").read_text()
    checked = cli("--home", str(target), "validate")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    status = cli("--home", str(target), "library", "status")
    assert status.exit_code == 0 and f"all {len(shipped)} shipped runbooks are as" in status.stdout


def test_init_never_overwrites(tmp_path: Path, cli: Callable[..., Result]) -> None:
    target = tmp_path / "ops"
    (target / "runbooks").mkdir(parents=True)
    (target / "runbooks" / "mine.md").write_text("mine")
    result = cli("init", str(target))
    assert result.exit_code == 1
    assert f"{target} already holds runbooks; runbook init never overwrites" in result.stderr
    assert sorted(p.name for p in target.rglob("*")) == ["mine.md", "runbooks"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused = cli("init", str(afile))
    assert refused.exit_code == 1 and f"{afile} exists and is not a folder" in refused.stderr


def test_init_takes_its_folder_as_an_argument_not_home(tmp_path: Path, cli: Callable[..., Result]) -> None:
    assert "--home" not in cli("init", "--help").output  # the global option means nothing here
    refused = cli("init", str(tmp_path / "ops"), "--home", str(tmp_path / "other"))
    assert refused.exit_code == 2 and "init makes a home in DIRECTORY (runbook init DIR)" in refused.stderr
    assert not (tmp_path / "ops").exists() and not (tmp_path / "other").exists()


def test_status_and_update_keep_edits(tmp_path: Path, cli: Callable[..., Result], newer: Path) -> None:
    target = tmp_path / "ops"
    assert cli("init", str(target)).exit_code == 0
    runbooks = target / "runbooks"
    # The operator edits two runbooks and deletes one; the installed version changes three and adds one.
    (runbooks / "vm-list.md").write_text((runbooks / "vm-list.md").read_text() + "\nmy note\n")
    (runbooks / "vm-status.md").write_text((runbooks / "vm-status.md").read_text() + "\nmy note\n")
    (runbooks / "iso-list.md").unlink()
    for name in ("vm-status.md", "tag-list.md", "iso-list.md"):
        (newer / name).write_text((newer / name).read_text() + "\nupstream change\n")
    (newer / "brand-new.md").write_text((newer / "tag-list.md").read_text().replace("tag-list", "brand-new"))
    (newer / "vm-clone.md").unlink()

    result = cli("--home", str(target), "library", "status", "--json")
    states = {e["file"]: e["state"] for e in json.loads(result.stdout) if e["state"] != "current"}
    assert states == {
        "vm-list.md": "edited",
        "vm-status.md": "edited+changed",
        "tag-list.md": "update",
        "iso-list.md": "removed",
        "brand-new.md": "new",
        "vm-clone.md": "no longer shipped",
    }

    before = (runbooks / "vm-status.md").read_text()
    updated = cli("--home", str(target), "library", "update")
    assert updated.exit_code == 0, updated.stderr
    assert "updated  runbooks/tag-list.md" in updated.stdout and "updated  runbooks/brand-new.md" in updated.stdout
    assert "kept     runbooks/vm-status.md" in updated.stdout
    assert "+upstream change" in updated.stdout and "-my note" in updated.stdout  # the difference, yours -> shipped
    assert (runbooks / "vm-status.md").read_text() == before  # never overwritten
    assert (runbooks / "tag-list.md").read_bytes() == (newer / "tag-list.md").read_bytes()
    assert not (runbooks / "iso-list.md").exists()
    assert (runbooks / "vm-clone.md").is_file()

    after = json.loads(cli("--home", str(target), "library", "status", "--json").stdout)
    assert {e["file"]: e["state"] for e in after if e["state"] != "current"} == {
        "vm-list.md": "edited",
        "vm-status.md": "edited+changed",
        "iso-list.md": "removed",
        "vm-clone.md": "no longer shipped",
    }


def test_update_says_a_review_is_void(tmp_path: Path, cli: Callable[..., Result], newer: Path) -> None:
    """A runbook with a review on record that an update replaces: the old review does not carry over."""
    target = tmp_path / "ops"
    assert cli("init", str(target)).exit_code == 0
    home = Home(target.resolve())
    path = home.runbooks_dir / "tag-list.md"
    trust.record(home, parse_runbook_file(path, "runbooks/tag-list.md"), path, who="alice")
    (newer / "tag-list.md").write_text((newer / "tag-list.md").read_text() + "\nupstream change\n")
    updated = cli("--home", str(target), "library", "update")
    assert "review it again before a real run: runbook trust tag-list" in updated.stdout
    review = trust.review_of(home, "tag-list")
    assert review is not None and review.sha256 != library.digest(path)  # update recorded no review itself


def test_home_without_manifest(tmp_path: Path, cli: Callable[..., Result], make_home: Callable[..., Home]) -> None:
    home = make_home({"runbooks/vm-list.md": "# mine\n"})
    result = cli("--home", str(home.root), "library", "status")
    assert result.exit_code == 1
    assert "runbooks/.library.json does not exist" in result.stderr and "--adopt" in result.stderr
    adopted = cli("--home", str(home.root), "library", "update", "--adopt")
    assert adopted.exit_code == 0, adopted.stderr
    assert "kept     runbooks/vm-list.md" in adopted.stdout
    assert (home.root / "runbooks" / "vm-list.md").read_text() == "# mine\n"
    states = json.loads(cli("--home", str(home.root), "library", "status", "--json").stdout)
    assert [e for e in states if e["state"] != "current"] == [{"file": "vm-list.md", "state": "edited+changed"}]


def test_damaged_manifest_is_named(tmp_path: Path, cli: Callable[..., Result]) -> None:
    target = tmp_path / "ops"
    assert cli("init", str(target)).exit_code == 0
    (target / "runbooks" / ".library.json").write_text("{not json")
    result = cli("--home", str(target), "library", "status")
    assert result.exit_code == 1 and "error: runbooks/.library.json cannot be read" in result.stderr


def test_library_refuses_the_example_home(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no home here or above
    result = cli("library", "update", env={"RUNBOOK_HOME": "", "XDG_STATE_HOME": str(tmp_path)})
    assert result.exit_code == 3 and "needs your own runbook home" in result.stderr
