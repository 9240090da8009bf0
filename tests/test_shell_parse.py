"""The one shell parser (engine/shell/parse.py) as both its users read it: ingest, which keeps words
and offsets, and the simulated PVE nodes, which run the words. Cases here were covered on one side
only while each had its own parser."""

from __future__ import annotations

import pytest

from engine.ingest.classify import Classifier
from engine.ingest.page import Code
from engine.runbook.actions import ShellCommand, StepFailed
from engine.shell.curl import parse_curl, takes_value
from engine.shell.parse import ShellSyntaxError, Simple, parse
from engine.sim.nodefiles import NodeFiles
from engine.sim.shell import SimShellExecutor
from tests.test_sim_tools import FakeVms


def _commands(src: str) -> list[Simple]:
    return [c for u in parse(src).units for p in u.pipelines for c in p.commands if isinstance(c, Simple)]


def _node(script: str) -> dict:
    return SimShellExecutor(FakeVms(), NodeFiles()).execute(ShellCommand(script=script, node="pve01")).data


@pytest.mark.parametrize(
    "words",
    [
        'plain \'single quoted\' "double \\"quoted\\"" escaped\\ space',
        "$'tab\\there' \"\" joined'parts'\"here\"",
        "a\\\nb continued \\\n  line",
    ],
)
def test_both_users_see_the_same_words(words: str) -> None:
    src = f"echo {words}\n"
    literals = [w.literal for w in _commands(src)[0].words[1:]]
    assert None not in literals
    assert _node(src)["stdout"] == " ".join(str(w) for w in literals) + "\n"


def test_carriage_returns_are_blanks() -> None:
    assert [[w.text for w in c.words] for c in _commands("qm list\r\necho  hi\r\n")] == [["qm", "list"], ["echo", "hi"]]
    assert _node("echo hi\r\necho there\r\n")["stdout"] == "hi\nthere\n"


def test_redirections_keep_their_descriptor_and_target() -> None:
    command = _commands("echo x 2>&1 >/dev/null 2>>/tmp/log &> /tmp/both >&2 >| /tmp/c\n")[0]
    assert [(op, w.text if w else None) for op, w in command.redirects] == [
        ("2>&", "1"),
        (">", "/dev/null"),
        ("2>>", "/tmp/log"),
        ("&>", "/tmp/both"),
        (">&", "2"),
        (">|", "/tmp/c"),
    ]


def test_expansions_keep_their_kind_and_quoting() -> None:
    words = _commands('echo ~/x ${X:-d} "$Y" $? \\* "*" *\n')[0].words
    assert [(p.kind, p.text, p.quote) for w in words[1:] for p in w.parts] == [
        ("lit", "~/x", ""),
        ("subst", "${X:-d}", ""),
        ("var", "Y", '"'),
        ("var", "?", ""),
        ("lit", "*", ""),  # escaped: unquoted, but its source says so
        ("lit", "*", '"'),
        ("lit", "*", ""),
    ]
    assert [w.parts[0].raw for w in words[5:]] == ["\\*", "*", "*"]
    files = NodeFiles({"pve01": {"/tmp/a.xz": {"type": "file", "size": 1}}})
    node = SimShellExecutor(FakeVms(), files)
    script = 'echo ~ ~/x a~ ${NOPE:-d} /tmp/*.xz /tmp/\\*.xz "/tmp/*.xz"'
    assert node.execute(ShellCommand(script=script, node="pve01")).data["stdout"] == (
        "/root /root/x a~ d /tmp/a.xz /tmp/*.xz /tmp/*.xz\n"
    )


def test_commands_know_their_line() -> None:
    script = parse("echo a \\\n  b\n\n'echo' \"x\ny\"; qm list\n")
    assert [script.line(c.start) for c in _commands(script.source)] == [1, 4, 5]


def test_syntax_errors_say_the_line_to_both_users() -> None:
    with pytest.raises(ShellSyntaxError, match=r"a single quote is never closed \(at line 2\)") as error:
        parse("echo ok\necho 'open\n")
    assert error.value.line == 2
    with pytest.raises(StepFailed, match="did not run: bash: line 2: a single quote is never closed") as failed:
        _node("echo ok\necho 'open\n")
    assert failed.value.sent is False


def test_curl_options_are_split_the_same_for_both_users() -> None:
    call = parse_curl(["-sSkX", "PUT", "-fsSLo/tmp/x", "--data=a=1", "-C", "-", "-4", "https://h/api2/json/y"])
    assert call.options == (
        ("-s", None),
        ("-S", None),
        ("-k", None),
        ("-X", "PUT"),
        ("-f", None),
        ("-s", None),
        ("-S", None),
        ("-L", None),
        ("-o", "/tmp/x"),
        ("--data", "a=1"),
        ("-C", "-"),
        ("-4", None),
    )
    assert (call.urls, call.method, call.data, call.value("-o")) == (
        ("https://h/api2/json/y",),
        "PUT",
        [("--data", "a=1")],
        "/tmp/x",
    )
    assert parse_curl(["-o"]).options == (("-o", None),) and takes_value("-o") and not takes_value("-k")
    # ingest sees the -k in a cluster that ends with -X, as the simulation sees -fsSL before -o
    classifier = Classifier()
    draft = classifier.block(Code("curl -sSkX PUT --data a=1 https://h/api2/json/y", "bash", 1, None))[0]
    assert (draft.method, draft.params) == ("PUT", [("a", "1")])
    assert any("TLS options" in note for note in draft.notes)
    files = NodeFiles()
    SimShellExecutor(FakeVms(), files).execute(
        ShellCommand(script="curl -fsSLo/tmp/x https://example.org/x", node="pve01")
    )
    assert files.get("pve01", "/tmp/x") is not None
    with pytest.raises(StepFailed, match="curl: option -o: requires parameter"):
        _node("curl https://example.org/x -o")
