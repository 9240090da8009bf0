"""Runbooks whose frontmatter or loops would keep the engine busy forever: bounded, and located.

A runbook may come from a web page (``runbook ingest``), so its parameter patterns and its
``foreach`` expressions are hostile input:

* a parameter ``pattern`` that backtracks catastrophically (``(a|aa)+$``) is matched within
  ``engine.load.patterns.MATCH_SECONDS`` and reported on the parameter's line, not run for hours;
* a pattern Python cannot compile (a huge repeat count, groups nested a thousand deep, a broken
  ``items.pattern``) is a located problem, not a traceback;
* a ``foreach`` gives at most ``engine.runbook.render.MAX_FOREACH_ITEMS`` items, for validate and run.

A check that would hang without its bound runs the CLI in a child process with a generous timeout
(the test fails, rather than hangs, if the bound is gone); nothing here asserts how fast anything is.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.load.home import Home
from engine.load.patterns import MATCH_SECONDS
from engine.load.problems import InputError, Problem
from engine.runbook.context import parse_params
from engine.runbook.model import Step
from engine.runbook.parser import parse_runbook
from engine.runbook.render import MAX_FOREACH_ITEMS, Renderer
from engine.runbook.validate import validate_home

REPO = Path(__file__).resolve().parent.parent
#: Far more than a bounded check needs (about a second, mostly Python starting), far less than an
#: unbounded one (tens of minutes): only a guard against a hang.
GUARD_SECONDS = 120
#: ``(a|aa)+$`` against this backtracks for tens of minutes with Python's ``re`` (and past the bound with the
#: ``regex`` package): the number of ways to split the a's grows like the Fibonacci numbers.
SLOW_PATTERN = "(a|aa)+$"
SLOW_VALUE = "a" * 50 + "!"
REWRITE_ADVICE = (
    "it backtracks catastrophically; rewrite it without nested quantifiers, i.e. without a repeated "
    "group whose contents can match the same text in more than one way, such as (a+)+ or (a|aa)* "
    "(write a+ instead)"
)


def runbook_text(
    name: str,
    parameters: str = "",
    body: str = "```local {id: echo, readonly: true}\necho hi\n```\n",
    requires: str = "",
) -> str:
    """A runbook: frontmatter (``parameters`` is the YAML under ``parameters:``), one heading, ``body``."""
    params = f"parameters:\n{parameters}" if parameters else ""
    return f"---\nname: {name}\ndescription: d\n{requires}{params}format: 2\n---\n# Steps\n\n{body}"


def runbook_cli(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    """``runbook --home HOME ARGS`` in a child process, killed (failing the test) after GUARD_SECONDS."""
    code = "import sys; from engine.cli import main; sys.exit(main())"
    try:
        return subprocess.run(
            [sys.executable, "-c", code, "--home", str(home.root), *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GUARD_SECONDS,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"runbook {' '.join(args)} still busy after {GUARD_SECONDS} s: the bound is gone", pytrace=False)


# ------------------------------------------------------------------ parameter patterns


def test_a_default_that_backtracks_catastrophically_is_a_located_problem_for_validate(
    make_home: Callable[..., Home],
) -> None:
    home = make_home(
        {
            "runbooks/slow.md": runbook_text(
                "slow",
                f'  word:\n    type: string\n    description: A word.\n    pattern: "{SLOW_PATTERN}"\n'
                f'    default: "{SLOW_VALUE}"\n',
            )
        },
        runbooks=False,
    )
    result = runbook_cli(home, "validate")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"runbooks/slow.md:5: parameters.word.pattern: the pattern '{SLOW_PATTERN}' of parameter 'word' takes too "
        f"long to match the default '{SLOW_VALUE}' (gave up after {MATCH_SECONDS} s): {REWRITE_ADVICE}"
    )


def test_a_param_value_that_backtracks_catastrophically_is_refused_by_run(make_home: Callable[..., Home]) -> None:
    """No default: validate has nothing to match, and the value given with --param is refused by run."""
    home = make_home(
        {
            "runbooks/slow.md": runbook_text(
                "slow", f'  word:\n    type: string\n    description: A word.\n    pattern: "{SLOW_PATTERN}"\n'
            )
        },
        runbooks=False,
    )
    assert runbook_cli(home, "validate").returncode == 0
    result = runbook_cli(home, "run", "slow", "--param", f"word={SLOW_VALUE}", "--dry-run", "--offline")
    assert result.returncode != 0
    assert (
        f"runbooks/slow.md:5: parameters.word.pattern: the pattern '{SLOW_PATTERN}' of parameter 'word' takes "
        f"too long to match the value '{SLOW_VALUE}' given with --param word (gave up after {MATCH_SECONDS} s): "
        f"{REWRITE_ADVICE}"
    ) in result.stderr
    fine = runbook_cli(home, "run", "slow", "--param", "word=aaaa", "--dry-run", "--offline")
    assert fine.returncode == 0, fine.stderr


def test_an_items_pattern_is_bounded_and_located_too(make_home: Callable[..., Home]) -> None:
    home = make_home(
        {
            "runbooks/slow.md": runbook_text(
                "slow",
                "  words:\n    type: array\n    description: Words.\n"
                f'    items: {{type: string, pattern: "{SLOW_PATTERN}"}}\n',
            )
        },
        runbooks=False,
    )
    result = runbook_cli(home, "run", "slow", "--param", f"words=aa,{SLOW_VALUE}", "--dry-run", "--offline")
    assert result.returncode != 0
    assert (
        f"runbooks/slow.md:5: parameters.words.items.pattern: the pattern '{SLOW_PATTERN}' of parameter 'words' "
        f"takes too long to match '{SLOW_VALUE}', an item of the value given with --param words"
    ) in result.stderr


def test_the_reported_pattern_no_longer_hangs_and_keeps_search_semantics(make_home: Callable[..., Home]) -> None:
    """``(a+)+$`` from the report: Python's ``re`` takes minutes on this default; it is now a plain mismatch,
    and the pattern is still searched for (unanchored at the start, as jsonschema does), not fully matched."""
    value = "a" * 40 + "!"
    home = make_home(
        {
            "runbooks/report.md": runbook_text(
                "report",
                f'  word:\n    type: string\n    description: A word.\n    pattern: "(a+)+$"\n'
                f'    default: "{value}"\n'
                "  name:\n    type: string\n    description: Searched, not fully matched.\n"
                '    pattern: "[0-9]+$"\n    default: "pve01"\n',
            )
        },
        runbooks=False,
    )
    result = runbook_cli(home, "validate")
    assert result.stdout.splitlines() == [
        f"runbooks/report.md:9: parameters.word.default: default '{value}' does not match the pattern (a+)+$; "
        f"did you mean '{'a' * 40}'?"
    ]


def test_the_did_you_mean_rewrite_is_matched_within_the_bound_too(make_home: Callable[..., Home]) -> None:
    """The value fails at once, but its lower-case rewrite would backtrack for hours: it uses up the bound,
    and the message goes without a suggestion."""
    value = "A" * 60 + "!"
    home = make_home(
        {
            "runbooks/upper.md": runbook_text(
                "upper",
                f'  word:\n    type: string\n    description: A word.\n    pattern: "^{SLOW_PATTERN}"\n'
                f'    default: "{value}"\n',
            )
        },
        runbooks=False,
    )
    result = runbook_cli(home, "validate")
    assert result.stdout.splitlines() == [
        f"runbooks/upper.md:9: parameters.word.default: default '{value[:56]}... does not match the pattern "
        f"^{SLOW_PATTERN}"
    ]


def test_one_value_gets_one_bound_however_many_items_it_has(make_home: Callable[..., Home]) -> None:
    """Three thousand items (YAML aliases: a few kilobytes), each slow: one bound for the whole default,
    not one per item (which would be five minutes)."""
    value = "A" * 50 + "!"
    aliases = ", ".join(["*v"] * 2999)
    home = make_home(
        {
            "runbooks/items.md": runbook_text(
                "items",
                f"  words:\n    type: array\n    description: Words.\n"
                f'    items: {{type: string, pattern: "^{SLOW_PATTERN}"}}\n'
                f'    default: [&v "{value}", {aliases}]\n',
            )
        },
        runbooks=False,
    )
    result = runbook_cli(home, "validate")
    assert result.stdout.splitlines()[0] == (
        f"runbooks/items.md:5: parameters.words.items.pattern: the pattern '^{SLOW_PATTERN}' of parameter 'words' "
        f"takes too long to match '{value}', an item of the default (gave up after {MATCH_SECONDS} s): "
        f"{REWRITE_ADVICE}"
    )


def test_a_message_case_of_an_items_spec_is_matched_within_the_bound(make_home: Callable[..., Home]) -> None:
    """``x-message`` cases (``if`` schemas) in a parameter's ``items`` are the runbook's too."""
    home = make_home(
        {
            "runbooks/cases.md": runbook_text(
                "cases",
                "  words:\n    type: array\n    description: Words.\n"
                f'    default: ["{SLOW_VALUE}"]\n'
                f"    items: {{type: string, pattern: '^b', x-message: [{{if: {{pattern: '{SLOW_PATTERN}'}}, "
                "message: m}]}\n",
            )
        },
        runbooks=False,
    )
    result = runbook_cli(home, "validate")
    assert result.stdout.splitlines()[0].startswith(
        f"runbooks/cases.md:5: parameters.words.items.x-message[0].if.pattern: the pattern '{SLOW_PATTERN}' of "
        f"parameter 'words' takes too long to match '{SLOW_VALUE}', an item of the default (gave up after"
    )


def test_pattern_problems_in_parse_params_name_the_runbook_file_and_parameter_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Problem itself, as ``runbook run`` receives it. In-process, so with a value that Python's ``re``
    gets through in well under a second, and a bound made shorter than that. Other values are still checked."""
    monkeypatch.setattr("engine.load.patterns.MATCH_SECONDS", 0.001)
    runbook = parse_runbook(
        runbook_text(
            "slow",
            "  mode:\n    type: string\n    description: A mode.\n    enum: [graceful, force]\n"
            f'  word:\n    type: string\n    description: A word.\n    pattern: "{SLOW_PATTERN}"\n',
        ),
        "runbooks/slow.md",
    )
    with pytest.raises(InputError) as caught:
        parse_params(runbook, {"word": "a" * 30 + "!", "mode": "x"})
    problem, other = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("runbooks/slow.md", 9, "parameters.word.pattern")
    assert "takes too long" in problem.message and "(gave up after 0.001 s)" in problem.message
    assert other == Problem("--param", None, "mode", "must be one of: graceful, force (got 'x')"), (
        "the other parameters are still checked"
    )


def test_a_pattern_groups_nested_too_deeply_is_a_located_problem_not_a_traceback() -> None:
    pattern = "(" * 1000 + "a" + ")" * 1000
    with pytest.raises(InputError) as caught:
        parse_runbook(
            runbook_text(
                "deep",
                f'  word:\n    type: string\n    description: A word.\n    pattern: "{pattern}"\n    default: a\n',
            ),
            "runbooks/deep.md",
        )
    assert [str(p) for p in caught.value.problems] == [
        f"runbooks/deep.md:8: parameters.word.pattern: pattern '{pattern[:56]}... is not a valid regular expression "
        "(its groups are nested too deeply)"
    ]


# ------------------------------------------------------------------ foreach


def many_items_home(make_home: Callable[..., Home], expression: str, requires: str = "") -> Home:
    body = f'```local {{id: loop, foreach: "{expression}", readonly: true}}\necho {{{{ item }}}}\n```\n'
    return make_home({"runbooks/many.md": runbook_text("many", body=body, requires=requires)}, runbooks=False)


def foreach_problem(count: str, line: int = 8) -> Problem:
    return Problem(
        "runbooks/many.md",
        line,
        "attributes.foreach",
        f"foreach gave {count}, more than the {MAX_FOREACH_ITEMS} one step may loop over; loop over a "
        "shorter list (filter it, e.g. with selectattr, or take a slice such as [:100]) or split the "
        "work into several steps or runs",
    )


def test_validate_refuses_a_foreach_over_more_items_than_the_bound(make_home: Callable[..., Home]) -> None:
    """Once per profile it would have rendered 100000 items; now one located problem."""
    home = many_items_home(make_home, "range(100000)", requires="requires: [profile]\n")
    assert validate_home(home).problems == [foreach_problem("100000 items", line=9)]


def test_run_refuses_a_foreach_over_more_items_than_the_bound(
    make_home: Callable[..., Home], cli: Callable[..., Any]
) -> None:
    home = many_items_home(make_home, "range(100000)")
    result = cli("--home", str(home.root), "run", "many", "--dry-run", "--offline")
    assert result.exit_code != 0
    assert str(foreach_problem("100000 items")) in result.stderr


@pytest.mark.parametrize(
    ("expression", "count"),
    [
        (f"range({MAX_FOREACH_ITEMS + 1})", f"{MAX_FOREACH_ITEMS + 1} items"),
        (f"dict.fromkeys(range({MAX_FOREACH_ITEMS + 1}))", f"{MAX_FOREACH_ITEMS + 1} items"),
        ("numbers", f"more than {MAX_FOREACH_ITEMS} items"),
    ],
)
def test_the_bound_applies_to_lists_mappings_and_iterators(expression: str, count: str) -> None:
    """An iterator (no length) is read only up to the bound, never to its end."""
    step = Step(
        kind="local",
        id="loop",
        title=None,
        attrs={"foreach": expression},
        body="true\n",
        line=8,
        body_line=9,
        id_given=True,
    )
    renderer = Renderer("runbooks/many.md", {"numbers": iter(range(10**6))})
    with pytest.raises(InputError) as caught:
        renderer.items(step)
    assert caught.value.problems == [foreach_problem(count)]


def test_a_foreach_of_exactly_the_bound_is_fine(make_home: Callable[..., Home]) -> None:
    step = Step(
        kind="local",
        id="loop",
        title=None,
        attrs={"foreach": f"range({MAX_FOREACH_ITEMS})"},
        body="true\n",
        line=8,
        body_line=9,
        id_given=True,
    )
    assert Renderer("runbooks/many.md", {}).items(step) == list(range(MAX_FOREACH_ITEMS))
    home = many_items_home(make_home, f"range({MAX_FOREACH_ITEMS})")
    assert validate_home(home).problems == []


def test_the_bound_is_far_above_what_the_shipped_runbooks_loop_over() -> None:
    """The largest shipped loop is talos-upgrade's range(2 * VMs), over at most 2 x 100 VMs (the profile schema)."""
    import json

    from engine.resources import schema_dir

    profile = json.loads((schema_dir() / "cluster-profile.schema.json").read_text(encoding="utf-8"))
    roles = profile["properties"]["nodes"]["properties"]
    most_vms = len(roles) * profile["$defs"]["group"]["properties"]["count"]["maximum"]
    assert "range(2 * (plan.vms | length))" in (REPO / "runbooks" / "talos-upgrade.md").read_text(encoding="utf-8")
    assert MAX_FOREACH_ITEMS >= 5 * 2 * most_vms
