"""Parsing: every CommonMark fence form, stable ids, titles, lines, and strict attributes."""

from __future__ import annotations

import pytest

from engine.parser import parse_runbook
from engine.problems import InputError

HEAD = "---\nname: t\ndescription: test runbook\n---\n"


def parse(body: str):
    return parse_runbook(HEAD + body, "runbooks/t.md", "t")


def test_all_fence_forms_are_steps_and_other_fences_are_prose() -> None:
    body = (
        "# Top\n\n"                             # line 5
        "```api {id: a}\nGET /version\n```\n\n"  # line 7
        "~~~ssh\nqm list\n~~~\n\n"               # line 11
        "`````talosctl\nhealth\n`````\n\n"       # line 15
        "> ```local\n> echo quoted\n> ```\n\n"   # line 19
        "1. item\n\n   ```http\n   GET https://factory.talos.dev/versions\n   ```\n\n"  # fence on line 25
        "```bash\nrm -rf /\n```\n\n"
        "    indented code is prose\n"
    )
    runbook = parse(body)
    assert [(s.kind, s.line) for s in runbook.steps] == [
        ("api", 7), ("ssh", 11), ("talosctl", 15), ("local", 19), ("http", 25)]
    assert runbook.steps[3].body == "echo quoted\n"
    assert runbook.steps[4].body == "GET https://factory.talos.dev/versions\n"


def test_a_fence_inside_a_longer_fence_is_body_text() -> None:
    runbook = parse("````ssh\ncat <<'EOF'\n```api\nnot a step\n```\nEOF\n````\n")
    assert len(runbook.steps) == 1
    assert "```api" in runbook.steps[0].body


def test_ids_are_given_or_derived_from_headings_deterministically() -> None:
    body = ("## Clone each VM!\n\n```api\nGET /a\n```\n\n```api\nGET /b\n```\n\n"
            "```api {id: clone_each_vm_2}\nGET /c\n```\n\n## 2nd step\n\n```ssh\ntrue\n```\n\n"
            "```local\ntrue\n```\n")
    runbook = parse(body)
    # The explicit id clone_each_vm_2 is reserved, so the second derived one skips to _3.
    assert [s.id for s in runbook.steps] == ["clone_each_vm", "clone_each_vm_3", "clone_each_vm_2",
                                             "step_2nd_step", "step_2nd_step_2"]
    assert [s.title for s in runbook.steps] == ["Clone each VM!"] * 3 + ["2nd step"] * 2
    assert parse(body).steps == runbook.steps, "ids must not change between parses"


def test_steps_before_any_heading_are_named_by_kind() -> None:
    runbook = parse("```api\nGET /version\n```\n\n```api\nGET /nodes\n```\n")
    assert [s.id for s in runbook.steps] == ["api", "api_2"]
    assert runbook.steps[0].title is None


def test_attributes_accept_json_and_keep_types() -> None:
    runbook = parse('```api {"id": "x", "retries": 3, "timeout": 2.5, "readonly": true}\nGET /version\n```\n')
    assert runbook.steps[0].attrs == {"id": "x", "retries": 3, "timeout": 2.5, "readonly": True}


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    body = "```api {id: a, colour: red}\nGET /version\n```\n\n```api {id: a}\nfetch it\n```\n\n```shell {id: s}\nls\n```\n"
    with pytest.raises(InputError) as caught:
        parse(body)
    lines = [str(p) for p in caught.value.problems]
    assert lines == [
        "runbooks/t.md:5: attributes.colour: unknown field 'colour' (allowed: as, check, confirm, destructive, "
        "extract, foreach, id, node, parallel, poll, readonly, register, retries, review, timeout, when)",
        "runbooks/t.md:9: attributes.id: duplicate step id 'a' (first used on line 5); ids must be unique "
        "because checkpoints key on them",
        "runbooks/t.md:10: body: the first line of an api step must be 'METHOD /path' with METHOD one of "
        "GET, POST, PUT, DELETE, e.g. 'POST /nodes/{{ node }}/qemu/{{ vmid }}/status/start'",
        "runbooks/t.md:13: unknown step kind 'shell' (a step is a fence of kind api, ssh, talosctl, http, local; "
        "any other fence is prose)",
    ]


def test_parameters_keep_their_spec_and_know_if_required() -> None:
    runbook = parse_runbook(
        "---\nname: t\ndescription: d\nparameters:\n  vmid: {type: integer, description: VM, minimum: 100}\n"
        "  mode: {type: string, default: soft, enum: [soft, hard], description: how}\n---\n", "t.md", "t")
    vmid, mode = runbook.parameters
    assert (vmid.required, mode.required, mode.default) == (True, False, "soft")
    assert (vmid.line, mode.line) == (5, 6)


def test_a_byte_order_mark_is_ignored() -> None:
    assert parse_runbook("\ufeff" + HEAD, "t.md", "t").name == "t"
