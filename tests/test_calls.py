"""Calls: a ``runbook`` step runs another runbook (or one section of it) in place.

Small runbooks of ``local`` steps in a throw-away home, run through the real CLI (in-process) on the
simulated cluster, so runs, journals and resumes are the real ones; the steps run real shell commands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import exitcodes
from engine.load.home import Home
from engine.load.problems import InputError
from engine.runbook.calls import expand, gather, section_steps, slug
from engine.runbook.parser import parse_runbook


def runbook(name: str, body: str, *, parameters: str = "", extra: str = "") -> str:
    params = f"parameters:\n{parameters}" if parameters else ""
    return f"---\nname: {name}\ndescription: {name} for the call tests.\nformat: 2\n{extra}{params}---\n\n{body}"


def local(step_id: str, script: str, attrs: str = "") -> str:
    return f"```local {{id: {step_id}, changes: []{attrs}}}\n{script}\n```\n\n"


def call(step_id: str, target: str, params: str = "", attrs: str = "") -> str:
    return f"```runbook {{id: {step_id}{attrs}}}\n{target}\n{params}```\n\n"


INNER = runbook(
    "inner",
    "# Inner\n\n## Not called\n\n"
    + local("before", "echo not-called")
    + "## The sequence\n\n"
    + local("say", 'echo "{{ word }} x{{ count }}"')
    + "### Again\n\n"
    + local(
        "again",
        'test -e {{ flag }} && echo "again {{ steps.say.stdout | trim }} {{ params.count }}"',
        ", confirm: true",
    )
    + "## Other\n\n"
    + local("other", "echo other"),
    parameters=(
        "  word:\n    type: string\n    description: the word\n"
        "  count:\n    type: integer\n    default: 1\n    minimum: 1\n    description: how many\n"
        "  flag:\n    type: string\n    default: /nonexistent\n    description: a file that must exist\n"
    ),
)


def outer(flag: Path, when: str = "greeting != 'skip'") -> str:
    return runbook(
        "outer",
        "# Outer\n\n## Prepare\n\n"
        + local("prep", "echo prepared")
        + "## The inner sequence\n\n"
        + call(
            "inner",
            "inner#the-sequence",
            f'word: "{{{{ greeting }}}} world"\ncount: "{{{{ 2 + 1 }}}}"\nflag: "{flag}"\n',
            f', when: "{when}"',
        )
        + "## After\n\n"
        + local("after", 'echo "inner said {{ steps.inner.say.stdout | trim }}"', f', when: "{when}"'),
        parameters="  greeting:\n    type: string\n    default: hello\n    description: what to say\n",
    )


@pytest.fixture
def home(make_home: Callable[..., Home], tmp_path: Path) -> Home:
    flag = tmp_path / "flag"
    return make_home({"runbooks/inner.md": INNER, "runbooks/outer.md": outer(flag)}, runbooks=False)


def journal(home: Home, run_id: str) -> list[dict[str, Any]]:
    path = home.state_dir / "runs" / run_id / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def last_run(home: Home) -> str:
    return sorted((home.state_dir / "runs").iterdir(), key=lambda p: p.stat().st_mtime_ns)[-1].name


def started(records: list[dict[str, Any]]) -> list[str]:
    return [r["step"] for r in records if r["type"] == "step_started"]


# -- expansion, as data --------------------------------------------------------------------------------


def test_a_call_becomes_the_callee_steps_with_prefixed_ids_files_and_lines(home: Home) -> None:
    root = parse_runbook((home.runbooks_dir / "outer.md").read_text(), "runbooks/outer.md")
    inner = parse_runbook(INNER, "runbooks/inner.md")
    expanded = expand(root, gather(root, {"inner": inner}.get))
    assert [s.id for s in expanded.steps] == ["prep", "inner.say", "inner.again", "after"]
    say = expanded.step("inner.say")
    assert (say.file, say.line) == ("runbooks/inner.md", inner.step("say").line)
    assert say.title == "The sequence (from inner#the-sequence, runbooks/inner.md)"
    assert expanded.step("inner.again").attrs["confirm"] is True  # the callee's own attributes
    assert expanded.step("prep").file is None and [c.name for c in expanded.called] == ["inner"]


def test_a_section_is_its_heading_and_sub_headings_by_github_anchor() -> None:
    assert slug("Talos sequence (v1.7)") == "talos-sequence-v17"
    inner = parse_runbook(INNER, "runbooks/inner.md")
    assert [s.id for s in section_steps(inner, "the-sequence")] == ["say", "again"]
    assert [s.id for s in section_steps(inner, "again")] == ["again"]
    assert [s.id for s in section_steps(inner, "inner")] == ["before", "say", "again", "other"]
    # Attributes at the end of a heading line are no part of its anchor; a repeated anchor gets -1.
    checks = parse_runbook(
        runbook("checks", '## Checks {when: "x"}\n\n' + local("a", "true") + "## Checks\n\n" + local("b", "true")),
        "runbooks/checks.md",
    )
    assert [s.id for s in section_steps(checks, "checks")] == ["a"]
    assert [s.id for s in section_steps(checks, "checks-1")] == ["b"]


# -- problems, located on the caller's line ------------------------------------------------------------


def test_call_problems_are_located_on_the_callers_lines_with_what_exists(
    make_home: Callable[..., Home], cli: Callable[..., Any]
) -> None:
    bad = runbook(
        "bad",
        "## Calls\n\n"
        + call("a", "innr")
        + call("b", "inner#the-sequense", "word: x\ncolour: red\n")
        + call("c", "inner")
        + call("d", "profiled")
        + call("e", "not a name!")
        + call("f", "inner", "count: 0\nword: x\n"),
    )
    profiled = runbook("profiled", local("x", "echo {{ profile.name }}"), extra="requires: [profile]\n")
    home = make_home(
        {"runbooks/inner.md": INNER, "runbooks/bad.md": bad, "runbooks/profiled.md": profiled}, runbooks=False
    )
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "bad.md"))
    assert result.exit_code == exitcodes.PROBLEMS
    lines = result.output.splitlines()
    for expected in (
        "runbooks/bad.md:9: body: no runbook named 'innr'; did you mean 'inner'?",
        "runbooks/bad.md:14: body: in inner: no section named 'the-sequense'; did you mean 'the-sequence'?",
        "runbooks/bad.md:16: step b: colour: in inner: no parameter named 'colour' (parameters: count, flag, word)",
        "runbooks/bad.md:19: step c: inner requires the parameter 'word' (the word): add a line 'word: VALUE' after 'inner'",
        "runbooks/bad.md:23: step d: profiled acts on a cluster profile (requires: [profile]) and bad does not",
        "runbooks/bad.md:28: body: the first line of a runbook step names the runbook to run, as NAME or NAME#section",
        # A value written out is checked against the callee's spec at once, on the parameter's line.
        "runbooks/bad.md:33: step f: count: inner's parameter count must be at least 1 (got 0)",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, result.output)


def test_a_cycle_is_refused_naming_the_chain_and_nothing_runs(
    make_home: Callable[..., Home], cli: Callable[..., Any], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    one = runbook("one", local("first", f"touch {marker}") + call("two", "two"))
    two = runbook("two", call("back", "one"))
    home = make_home({"runbooks/one.md": one, "runbooks/two.md": two}, runbooks=False)
    result = cli("--home", str(home.root), "run", "one", "--simulate", "--yes")
    assert result.exit_code == exitcodes.PROBLEMS
    assert "runbooks/two.md:7: body: calls form a cycle: one -> two -> one" in result.output
    assert not marker.exists()
    with pytest.raises(InputError) as caught:
        root = parse_runbook(one, "runbooks/one.md")
        expand(root, {"two": parse_runbook(two, "runbooks/two.md")})
    assert "one -> two -> one" in str(caught.value.problems[0])


# -- running -------------------------------------------------------------------------------------------


def test_nested_calls_see_their_own_parameters_and_steps(
    make_home: Callable[..., Home], cli: Callable[..., Any]
) -> None:
    leaf = runbook(
        "leaf",
        local("echo", "echo leaf-{{ text }}-{{ items | length }}")
        + local("twice", "echo {{ steps.echo.stdout | trim }}-again"),
        parameters="  text:\n    type: string\n    description: t\n"
        "  items:\n    type: array\n    default: []\n    description: i\n",
    )
    mid = runbook(
        "mid",
        local("echo", "echo mid-{{ label }}")
        + call("deep", "leaf", 'text: "{{ label }}-{{ steps.echo.stdout | trim }}"\nitems: "{{ [1, 2, 3] }}"\n'),
        parameters="  label:\n    type: string\n    description: l\n",
    )
    top = runbook(
        "top",
        local("echo", "echo top")
        + call("m", "mid", 'label: "{{ steps.echo.stdout | trim }}"\n')
        + local("last", "echo {{ steps.m.deep.twice.stdout | trim }}"),
    )
    home = make_home({"runbooks/leaf.md": leaf, "runbooks/mid.md": mid, "runbooks/top.md": top}, runbooks=False)
    result = cli("--home", str(home.root), "run", "top", "--simulate", "--yes", "--json")
    assert result.exit_code == exitcodes.OK, result.output
    records = journal(home, last_run(home))
    assert started(records) == ["echo", "m.echo", "m.deep.echo", "m.deep.twice", "last"]
    outputs = {r["step"]: r["outputs"]["stdout"].strip() for r in records if r["type"] == "step_finished"}
    assert outputs["m.echo"] == "mid-top"
    assert outputs["m.deep.echo"] == "leaf-top-mid-top-3"  # a whole-expression value keeps its type (a list)
    assert outputs["m.deep.twice"] == "leaf-top-mid-top-3-again"  # steps.echo inside leaf is leaf's own
    assert outputs["last"] == "leaf-top-mid-top-3-again"  # the caller reads steps.CALLID.X


def test_a_false_call_condition_skips_every_callee_step(home: Home, cli: Callable[..., Any]) -> None:
    result = cli(
        "--home", str(home.root), "run", "outer", "--param", "greeting=skip", "--dry-run", "--offline", "--json"
    )
    assert result.exit_code == exitcodes.OK, result.output
    plan = json.loads(result.stdout)
    status = {s["step"]: s["status"] for s in plan["steps"]}
    assert status["inner.say"] == status["inner.again"] == "skipped"


def test_dry_run_text_and_json_show_callee_steps_with_prefixed_ids_and_where_they_come_from(
    home: Home, cli: Callable[..., Any]
) -> None:
    text = cli("--home", str(home.root), "run", "outer", "--dry-run", "--offline")
    assert text.exit_code == exitcodes.OK, text.output
    assert "inner.say (local, line 30)  The sequence (from inner#the-sequence, runbooks/inner.md)" in text.output
    assert "echo \"'hello world' x3\"" in text.output  # the call's values, rendered in the caller's scope
    assert "called:inner sha256:" in text.output
    assert "not-called" not in text.output and "echo other" not in text.output
    result = cli("--home", str(home.root), "run", "outer", "--dry-run", "--offline", "--json")
    plan = json.loads(result.stdout)
    steps = {s["step"]: s for s in plan["steps"]}
    assert list(steps) == ["prep", "inner.say", "inner.again", "after"]
    assert steps["inner.again"]["title"] == "Again (from inner#the-sequence, runbooks/inner.md)"
    assert steps["inner.again"]["gated"] is True
    assert set(plan["hashes"]) == {"runbook", "config", "called:inner"}


def test_a_gate_in_the_callee_holds(home: Home, cli: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "flag").touch()
    refused = cli("--home", str(home.root), "run", "outer", "--simulate")
    assert refused.exit_code == exitcodes.GATE
    assert "--approve inner.again" in refused.output
    assert not (home.state_dir / "runs").exists() or not any((home.state_dir / "runs").iterdir())
    approved = cli("--home", str(home.root), "run", "outer", "--simulate", "--approve", "inner.again")
    assert approved.exit_code == exitcodes.OK, approved.output
    assert "inner said ''\"hello world\"' x3'" in approved.output


def test_resume_after_a_failure_inside_the_callee_skips_its_finished_steps(
    home: Home, cli: Callable[..., Any], tmp_path: Path
) -> None:
    failed = cli("--home", str(home.root), "run", "outer", "--simulate", "--yes")
    assert failed.exit_code == exitcodes.FAILED
    assert "step 'inner.again' failed" in failed.output
    run_id = last_run(home)
    meta = json.loads((home.state_dir / "runs" / run_id / "run.json").read_text())
    assert set(meta["called_sha256"]) == {"inner"}
    (tmp_path / "flag").touch()  # the cause fixed
    resumed = cli("--home", str(home.root), "resume", run_id, "--yes")
    assert resumed.exit_code == exitcodes.OK, resumed.output
    assert started(journal(home, run_id)) == ["prep", "inner.say", "inner.again", "inner.again", "after"]
    shown = cli("--home", str(home.root), "runs", "show", run_id)
    assert "finished  inner.again" in shown.output
    assert "(from inner#the-sequence, runbooks/inner.md)" in shown.output


def test_resume_is_refused_when_the_callee_changed(home: Home, cli: Callable[..., Any], tmp_path: Path) -> None:
    assert cli("--home", str(home.root), "run", "outer", "--simulate", "--yes").exit_code == exitcodes.FAILED
    run_id = last_run(home)
    (tmp_path / "flag").touch()
    callee = home.runbooks_dir / "inner.md"
    callee.write_text(callee.read_text() + "\nA note.\n")
    refused = cli("--home", str(home.root), "resume", run_id, "--yes")
    assert refused.exit_code == exitcodes.REFUSED
    assert "the called runbook inner changed since the run started" in refused.output
    assert started(journal(home, run_id)) == ["prep", "inner.say", "inner.again"]  # nothing more ran


def test_an_ingested_callee_must_be_trusted_as_if_run_directly(
    make_home: Callable[..., Home], cli: Callable[..., Any], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    ingested = runbook(
        "fetched",
        local("x", f"touch {marker}"),
        extra='origin:\n  source: https://example.org/page\n  fetched: "2026-01-01"\n',
    )
    caller = runbook("caller", call("f", "fetched"))
    home = make_home({"runbooks/fetched.md": ingested, "runbooks/caller.md": caller}, runbooks=False)
    result = cli("--home", str(home.root), "run", "caller", "--simulate", "--yes")
    assert result.exit_code == exitcodes.REFUSED, result.output
    assert "runbook fetched was ingested from https://example.org/page" in result.output
    assert not marker.exists()
    assert cli("--home", str(home.root), "trust", "fetched", "--yes").exit_code == exitcodes.OK
    assert cli("--home", str(home.root), "run", "caller", "--simulate", "--yes").exit_code == exitcodes.OK
    assert marker.exists()
