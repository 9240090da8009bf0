"""The ``file`` step kind: rendering and checking its content, writing it atomically with a mode on
this machine and on a node over a real OpenSSH server, leaving a file that is already in place alone,
and its review (create, change with a diff, nothing; a secret's size and digest only)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.executors.file import FileExecutor, LocalFiles, SshFiles, file_changes
from engine.executors.filesecrets import secret_parts
from engine.executors.shell import SshExecutor
from engine.load.facts import Facts
from engine.load.problems import InputError
from engine.run.dispatch import Dispatcher
from engine.run.secrets import MASK
from engine.runbook.actions import FileWrite, StepFailed, action_as_dict, action_from_dict
from engine.runbook.parser import parse_runbook
from engine.runbook.render import Renderer
from engine.runbook.stepcheck import rendered_problems
from tests.support.sshd import SshServer, start_sshd

PATCH = "machine:\n  network:\n    hostname: stg-cp01\n"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------- this machine


@pytest.fixture
def local() -> FileExecutor:
    return FileExecutor(LocalFiles(), lambda action: pytest.fail("no node here"))


def test_writes_the_content_with_mode_0600_and_says_what(local: FileExecutor, tmp_path: Path) -> None:
    target = tmp_path / "patch.yaml"
    result = local.execute(FileWrite(str(target), PATCH))
    assert target.read_text() == PATCH
    assert mode_of(target) == 0o600
    assert result.data == {
        "path": str(target),
        "changed": True,
        "bytes": len(PATCH),
        "sha256": hashlib.sha256(PATCH.encode()).hexdigest(),
    }
    assert not result.left_alone and leftovers(tmp_path) == []


def test_the_same_content_and_mode_is_left_alone(local: FileExecutor, tmp_path: Path) -> None:
    target = tmp_path / "patch.yaml"
    local.execute(FileWrite(str(target), PATCH))
    inode = target.stat().st_ino
    again = local.execute(FileWrite(str(target), PATCH))
    assert again.left_alone and again.data["changed"] is False and "already in place" in again.summary
    assert target.stat().st_ino == inode  # not rewritten


def test_another_mode_or_content_replaces_the_file(local: FileExecutor, tmp_path: Path) -> None:
    target = tmp_path / "patch.yaml"
    local.execute(FileWrite(str(target), PATCH))
    assert local.execute(FileWrite(str(target), PATCH, mode="0644")).data["changed"] is True
    assert mode_of(target) == 0o644
    assert local.execute(FileWrite(str(target), PATCH + "cluster: {}\n", mode="0644")).data["changed"] is True
    assert target.read_text().endswith("cluster: {}\n")


def test_tilde_is_the_home_folder(local: FileExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    result = local.execute(FileWrite("~/token.txt", "t0ken-value\n"))
    assert (tmp_path / "token.txt").read_text() == "t0ken-value\n" and result.data["path"] == str(
        tmp_path / "token.txt"
    )


def test_a_missing_folder_is_named_and_nothing_is_created(local: FileExecutor, tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as failed:
        local.execute(FileWrite(str(tmp_path / "nope" / "patch.yaml"), PATCH))
    assert f"the folder {tmp_path / 'nope'} does not exist on this machine" in failed.value.message
    assert not failed.value.sent and not (tmp_path / "nope").exists()


def test_a_failure_while_writing_leaves_the_old_file_whole_and_no_temporary_file(
    local: FileExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "patch.yaml"
    local.execute(FileWrite(str(target), PATCH))

    def disk_full(fd: int) -> None:  # a disk failure cannot be made on demand here
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StepFailed) as failed:
        local.execute(FileWrite(str(target), PATCH + "cluster: {}\n"))
    assert "No space left on device" in failed.value.message
    assert target.read_text() == PATCH and leftovers(tmp_path) == []


def test_a_folder_in_the_way_is_a_clear_failure(local: FileExecutor, tmp_path: Path) -> None:
    (tmp_path / "patch.yaml").mkdir()
    with pytest.raises(StepFailed, match="is a folder, not a file"):
        local.execute(FileWrite(str(tmp_path / "patch.yaml"), PATCH))


def test_an_action_read_back_without_its_secret_content_cannot_be_written(local: FileExecutor, tmp_path: Path) -> None:
    recorded = action_as_dict(FileWrite(str(tmp_path / "k"), "s3cret-value-123", secret=True))
    assert recorded["content"] is None and recorded["size"] == 16
    back = action_from_dict(recorded)
    assert isinstance(back, FileWrite) and back.sha256 == hashlib.sha256(b"s3cret-value-123").hexdigest()
    with pytest.raises(StepFailed, match="leaves its content out"):
        local.execute(back)
    assert not (tmp_path / "k").exists()


# ---------------------------------------------------------------------------------------------- the review


def test_review_create_change_with_diff_and_nothing(local: FileExecutor, tmp_path: Path) -> None:
    target = tmp_path / "patch.yaml"
    (created,) = local.preview(FileWrite(str(target), PATCH), Facts())
    assert created.action == "create" and created.resource == "file" and created.id == str(target)
    assert {f.name: f.after for f in created.fields}["bytes"] == len(PATCH)
    local.execute(FileWrite(str(target), PATCH))
    assert local.preview(FileWrite(str(target), PATCH), Facts()) == []
    (changed,) = local.preview(FileWrite(str(target), PATCH.replace("stg-cp01", "stg-cp02")), Facts())
    assert changed.action == "change"
    assert "-    hostname: stg-cp01" in changed.detail and "+    hostname: stg-cp02" in changed.detail
    assert [f.name for f in changed.fields] == ["sha256"]  # same size, same mode


def test_review_of_a_secret_shows_size_and_digest_never_content(local: FileExecutor, tmp_path: Path) -> None:
    target = tmp_path / "key"
    local.execute(FileWrite(str(target), "old-secret-abcdef\n", secret=True))
    (changed,) = local.preview(FileWrite(str(target), "new-secret-123456\n", secret=True), Facts())
    text = repr(changed.as_dict())
    assert "secret-" not in text and "content not shown" in changed.detail
    assert {f.name for f in changed.fields} == {"sha256"}


def test_review_offline_of_a_node_file_says_unknown() -> None:
    (change,) = file_changes(FileWrite("/etc/x.yaml", PATCH, node="pve01"), "offline")
    assert change.id == "pve01:/etc/x.yaml" and all(f.before == {"unknown": "offline"} for f in change.fields)


def test_review_of_a_missing_folder_warns_unless_an_earlier_step_makes_it(local: FileExecutor, tmp_path: Path) -> None:
    (change,) = local.preview(FileWrite(str(tmp_path / "new" / "p.yaml"), PATCH), Facts())
    assert "does not exist on this machine yet" in change.detail


# ---------------------------------------------------------------------------------------------- over SSH


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd-file"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote(sshd: SshServer) -> FileExecutor:
    ssh = SshExecutor({a: a for a in sshd.aliases}, sshd.user, ssh_config=str(sshd.ssh_config), connect_timeout=5)
    return FileExecutor(LocalFiles(), lambda action: SshFiles(ssh, str(action.node)), needs=("ssh",))


def test_over_ssh_writes_with_mode_then_leaves_it_alone(remote: FileExecutor, tmp_path: Path) -> None:
    target = tmp_path / "patch.yaml"
    action = FileWrite(str(target), PATCH, mode="0640", node="pve02")
    first = remote.execute(action)
    assert target.read_text() == PATCH and mode_of(target) == 0o640
    assert first.data["changed"] is True and first.data["path"] == str(target) and "on node pve02" in first.summary
    second = remote.execute(action)
    assert second.left_alone and second.data["changed"] is False
    assert leftovers(tmp_path) == []
    assert remote.missing(action) == [] and remote.missing(FileWrite("/x", "")) == []


def test_over_ssh_content_with_any_bytes_arrives_exactly(remote: FileExecutor, tmp_path: Path) -> None:
    content = "quotes ' \" $HOME `id` \\n\nunicode: äöü ✓\n" + "x" * 200_000 + "\n"
    target = tmp_path / "odd.txt"
    remote.execute(FileWrite(str(target), content, node="pve01"))
    assert target.read_text() == content and mode_of(target) == 0o600


def test_over_ssh_a_missing_folder_is_named(remote: FileExecutor, tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as failed:
        remote.execute(FileWrite(str(tmp_path / "nope" / "p.yaml"), PATCH, node="pve01"))
    assert f"the folder {tmp_path / 'nope'} does not exist on node pve01" in failed.value.message


def test_over_ssh_the_review_reads_the_file_on_the_node(remote: FileExecutor, tmp_path: Path) -> None:
    target = tmp_path / "patch.yaml"
    action = FileWrite(str(target), PATCH, node="pve01")
    assert [c.action for c in remote.preview(action, Facts())] == ["create"]
    remote.execute(action)
    assert remote.preview(action, Facts()) == []
    (changed,) = remote.preview(FileWrite(str(target), PATCH + "cluster: {}\n", node="pve01"), Facts())
    assert changed.id == f"pve01:{target}" and "+cluster: {}" in changed.detail


def test_over_ssh_the_secret_is_in_no_argument_list(sshd: SshServer, tmp_path: Path) -> None:
    ssh = SshExecutor({"pve01": "pve01"}, sshd.user, ssh_config=str(sshd.ssh_config), connect_timeout=5)
    seen: list[list[str]] = []
    real = ssh.argv
    ssh.argv = lambda command: seen.append(real(command)) or seen[-1]  # type: ignore[method-assign]
    FileExecutor(LocalFiles(), lambda action: SshFiles(ssh, "pve01")).execute(
        FileWrite(str(tmp_path / "k"), "hunter2-very-secret", node="pve01", secret=True)
    )
    assert seen and not any("hunter2" in " ".join(argv) for argv in seen)
    assert (tmp_path / "k").read_text() == "hunter2-very-secret"


# ---------------------------------------------------------------------------------------------- rendering


def runbook(attrs: str, body: str) -> str:
    return f"---\nname: t\ndescription: t\n---\n\n## Write\n\n```file {{{attrs}}}\n{body}```\n"


def render(attrs: str, body: str, **context: object) -> FileWrite:
    book = parse_runbook(runbook(attrs, body), "t.md")
    action = Renderer("t.md", dict(context)).action(book.steps[0], {})
    assert isinstance(action, FileWrite)
    return action


def test_values_are_written_as_yaml_and_json_understand_them() -> None:
    action = render(
        'path: "/tmp/{{ name }}.yaml"',
        "name: {{ name }}\non: {{ flag }}\nservers: {{ servers }}\nnothing: {{ none }}\n",
        name="cp1",
        flag=True,
        servers=["10.0.0.1", "10.0.0.2"],
        none=None,
    )
    assert action.path == "/tmp/cp1.yaml" and action.format == "yaml" and action.mode == "0600"
    assert action.content == 'name: cp1\non: true\nservers: ["10.0.0.1", "10.0.0.2"]\nnothing: \n'


def test_bad_yaml_after_rendering_is_located_on_the_body_line() -> None:
    with pytest.raises(InputError) as bad:
        render('path: "/tmp/p.yaml"', "machine:\n  hostname: {{ name }}\n", name="a: b")
    (problem,) = bad.value.problems
    assert problem.line == 10 and "not valid YAML (line 2 of the content" in problem.message
    assert "tojson" in problem.message


def test_bad_json_is_located_and_format_overrides_the_extension() -> None:
    with pytest.raises(InputError) as bad:
        render('path: "/tmp/p.conf", format: json', '{"a": 1,\n "b": }\n')
    (problem,) = bad.value.problems
    assert problem.line == 10 and "not valid JSON" in problem.message
    assert render('path: "/tmp/p.yaml", format: text', "a: b: c\n").format == "text"


def test_an_error_in_a_secret_file_never_quotes_its_content() -> None:
    with pytest.raises(InputError) as bad:
        render('path: "/tmp/k.yaml", secret: true', "key: {{ v }}\n", v="pa55: word-xyz")
    assert "pa55" not in str(bad.value) and "word-xyz" not in str(bad.value)


def test_attributes_are_checked_when_parsed() -> None:
    for attrs, words in (
        ("id: w", "path"),
        ('path: "/tmp/x", mode: 0600', 'mode is an octal permission in quotes, like mode: "0600"'),
        ('path: "/tmp/x", format: toml', "must be one of: yaml, json, text"),
    ):
        with pytest.raises(InputError) as bad:
            parse_runbook(runbook(attrs, "x\n"), "t.md")
        assert words in str(bad.value), str(bad.value)


def test_an_empty_body_is_an_empty_file() -> None:
    assert render('path: "/tmp/marker"', "").content == ""


def test_a_relative_rendered_path_is_refused_before_anything_is_written() -> None:
    book = parse_runbook(runbook('path: "{{ p }}"', "x\n"), "t.md")
    action = Renderer("t.md", {"p": "patches/x"}).action(book.steps[0], {})
    (problem,) = rendered_problems(action_as_dict(action), book.steps[0], "t.md")
    assert "must be absolute (/...) or start with ~/" in problem.message


def test_a_path_an_earlier_step_names_is_checked_for_what_is_known() -> None:
    """``{{ steps.x.stdout }}.sha256`` is unknown until the run: validate checks the rest of it."""
    from engine.runbook.unknown import Unknown

    book = parse_runbook(runbook('path: "{{ p }}{{ rest }}"', "x\n"), "t.md")
    for rest, problems in ((".sha256", 0), ("/../x", 1), ("/", 1)):
        action = Renderer("t.md", {"p": Unknown("steps.snap.stdout"), "rest": rest}).action(book.steps[0], {})
        assert len(rendered_problems(action_as_dict(action), book.steps[0], "t.md")) == problems, rest


# ---------------------------------------------------------------------------------------------- masking


def test_a_secret_files_values_are_masked_in_later_output(tmp_path: Path) -> None:
    dispatcher = Dispatcher({"credentials": {}, "cluster": {"nodes": []}}, tmp_path, env={})
    content = "cluster:\n  token: abcdef.0123456789abcdef\n  ca: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t\nport: 6443\n"
    dispatcher.execute(FileWrite(str(tmp_path / "s.yaml"), content, secret=True, format="yaml"), lambda _: None)
    masked = dispatcher.masker.mask("token is abcdef.0123456789abcdef; port 6443; machine: x")
    assert masked == f"token is {MASK}; port 6443; machine: x"
    assert "cluster:" not in secret_parts(content, "yaml")
