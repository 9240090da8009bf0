"""Issue 16: attributes on headings, the format version, and dry-runs that name what a step waits for."""

from __future__ import annotations

import pytest

from engine.load.problems import InputError
from engine.runbook.parser import parse_runbook
from engine.runbook.render import Renderer

HEAD = "---\nname: t\ndescription: d\nformat: 2\n---\n"


def _problems(text: str, require_format: bool = False) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse_runbook(text, "runbooks/t.md", require_format=require_format)
    return [str(p) for p in caught.value.problems]


def test_heading_attributes_apply_below_until_a_heading_of_the_same_level():
    text = HEAD + (
        "# All {when: \"profile.type == 'talos'\"}\n\n"  # line 6
        "## Part {timeout: 30, node: pve02}\n\n"  # line 8
        '```ssh {id: a, when: "x == 1", timeout: 5}\necho\n```\n\n'  # line 10
        "## Other\n\n"  # line 14
        "```ssh {id: b}\necho\n```\n"
    )
    a, b = parse_runbook(text, "runbooks/t.md").steps
    assert a.title == "Part" and a.attrs["node"] == "pve02" and a.attrs["timeout"] == 5
    assert a.attrs["when"] == "(profile.type == 'talos') and (x == 1)"
    assert [(c.expression, c.line) for c in a.conditions] == [("profile.type == 'talos'", 6), ("x == 1", 10)]
    assert a.inherited() == {"node": 8}
    assert b.title == "Other" and "node" not in b.attrs and b.attrs["when"] == "profile.type == 'talos'"
    assert b.inherited() == {"when": 6}


def test_a_derived_id_and_title_leave_the_mapping_out():
    (step,) = parse_runbook(HEAD + "## Clone {{ vm }} now {retries: 2}\n\n```local\necho\n```\n", "t").steps
    assert (step.title, step.id, step.attrs) == ("Clone {{ vm }} now", "clone_vm_now", {"retries": 2})


def test_attributes_that_describe_one_step_are_refused_on_a_heading():
    found = _problems(HEAD + '## X {id: x, check: "true", colour: red}\n\n```local\necho\n```\n')
    assert found[0].startswith(
        "runbooks/t.md:6: heading attributes.check: unknown field 'check': check describes one step"
    )
    assert found[1].startswith("runbooks/t.md:6: heading attributes.colour: unknown field 'colour'")
    assert found[2].startswith("runbooks/t.md:6: heading attributes.id: unknown field 'id': id describes one step")


def test_an_inherited_attribute_the_kind_refuses_is_located_on_its_heading():
    found = _problems(HEAD + "## X {node: pve01}\n\n```local {id: a}\necho\n```\n")
    assert len(found) == 1
    assert found[0].startswith("runbooks/t.md:6: attributes.node: unknown field 'node'")
    assert found[0].endswith("(from the heading on line 6)")


def test_a_heading_foreach_serves_the_step_as():
    (step,) = parse_runbook(HEAD + '## Each {foreach: "[1, 2]"}\n\n```local {as: vm}\necho\n```\n', "t").steps
    assert step.attrs["foreach"] == "[1, 2]" and step.loop_var == "vm"


def test_a_false_heading_condition_skips_the_step_and_an_error_names_its_line():
    text = HEAD + '# A {when: "flag"}\n\n```local {id: a, when: "missing_name"}\necho\n```\n'
    (step,) = parse_runbook(text, "runbooks/t.md").steps
    assert Renderer("runbooks/t.md", {"flag": False}).truth(step, "when", {}) is False
    with pytest.raises(InputError) as caught:
        Renderer("runbooks/t.md", {"flag": True}).truth(step, "when", {})
    assert str(caught.value.problems[0]).startswith("runbooks/t.md:8: attributes.when: template error: 'missing_name'")
    broken = HEAD + '# A {when: "nope("}\n\n```local {id: a}\necho\n```\n'
    (step,) = parse_runbook(broken, "runbooks/t.md").steps
    with pytest.raises(InputError) as caught:
        Renderer("runbooks/t.md", {}).truth(step, "when", {})
    assert str(caught.value.problems[0]).startswith("runbooks/t.md:6: attributes.when:")


OLD = (
    "---\nname: t\ndescription: d\n---\n\n"
    "```local {id: a, when: \"cluster.name == 'lab'\"}\necho {{ cluster.domain }} {{ cluster.vms | length }}\n```\n\n"
    '```local {id: b, when: "steps.a or true"}\necho\n```\n\n'
    "```local {id: c, when: \"profile.type == 'talos' and (steps.a or true)\"}\necho\n```\n"
)


def test_a_format_1_runbook_is_refused_with_each_old_form_located():
    assert _problems(OLD, require_format=True) == [
        "runbooks/t.md:2: format: this runbook declares no format, so it is written for format 1, whose templates "
        "mean something else now ('cluster' is the live cluster, no 'or true' in when); rewrite the old forms named "
        "on their lines, then add a line 'format: 2' to the frontmatter (docs/runbook-format.md, 'Format version')",
        "runbooks/t.md:6: template: 'cluster.name' reads the config's cluster section, which format 2 calls "
        "'config.cluster.name' ('cluster' is now the live cluster: cluster.vms, cluster.nodes, cluster.storages, "
        "cluster.next_vmid): write 'config.cluster.name'",
        "runbooks/t.md:7: template: 'cluster.domain' reads the config's cluster section, which format 2 calls "
        "'config.cluster.domain' ('cluster' is now the live cluster: cluster.vms, cluster.nodes, cluster.storages, "
        "cluster.next_vmid): write 'config.cluster.domain'",
        "runbooks/t.md:10: attributes.when: 'steps.a or true' is always true: it only kept a dry-run going past an "
        "earlier step, and in format 2 a dry-run shows a step that reads another step's output, or what an earlier "
        "step changes, as waiting for that step by itself: remove this when",
        "runbooks/t.md:14: attributes.when: 'steps.a or true' is always true: it only kept a dry-run going past an "
        "earlier step, and in format 2 a dry-run shows a step that reads another step's output, or what an earlier "
        "step changes, as waiting for that step by itself: drop 'steps.a or true' from the when",
    ]


def test_only_format_2_is_accepted():
    found = _problems(HEAD.replace("format: 2", "format: 1") + "\n```local\necho\n```\n")
    assert found == [
        "runbooks/t.md:4: format: format 2 is the only format this runbook understands: write format: 2 and "
        "rewrite what validate names (got 1)"
    ]


def test_every_shipped_runbook_declares_format_2_and_none_uses_or_true():
    from pathlib import Path

    from engine.runbook.parser import parse_runbook_file

    for path in sorted((Path(__file__).parent.parent / "runbooks").glob("*.md")):
        book = parse_runbook_file(path, f"runbooks/{path.name}")
        assert book.frontmatter["format"] == 2
        assert " or true" not in path.read_text()
