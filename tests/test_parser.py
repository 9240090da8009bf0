"""Parsing: every CommonMark fence form, stable ids, titles, lines, and strict attributes."""

from __future__ import annotations

import pytest

from engine.load.problems import InputError
from engine.runbook.parser import parse_runbook

HEAD = "---\nname: t\ndescription: test runbook\n---\n"


def parse(body: str):
    return parse_runbook(HEAD + body, "runbooks/t.md", "t")


def test_all_fence_forms_are_steps_and_other_fences_are_prose() -> None:
    body = (
        "# Top\n\n"  # line 5
        "```api {id: a}\nGET /version\n```\n\n"  # line 7
        "~~~ssh\nqm list\n~~~\n\n"  # line 11
        "`````talosctl\nhealth\n`````\n\n"  # line 15
        "> ```local\n> echo quoted\n> ```\n\n"  # line 19
        "1. item\n\n   ```http\n   GET https://factory.talos.dev/versions\n   ```\n\n"  # fence on line 25
        "```bash\nrm -rf /\n```\n\n"
        "    indented code is prose\n"
    )
    runbook = parse(body)
    assert [(s.kind, s.line) for s in runbook.steps] == [
        ("api", 7),
        ("ssh", 11),
        ("talosctl", 15),
        ("local", 19),
        ("http", 25),
    ]
    assert runbook.steps[3].body == "echo quoted\n"
    assert runbook.steps[4].body == "GET https://factory.talos.dev/versions\n"


def test_a_fence_inside_a_longer_fence_is_body_text() -> None:
    runbook = parse("````ssh\ncat <<'EOF'\n```api\nnot a step\n```\nEOF\n````\n")
    assert len(runbook.steps) == 1
    assert "```api" in runbook.steps[0].body


def test_ids_are_given_or_derived_from_headings_deterministically() -> None:
    body = (
        "## Clone each VM!\n\n```api\nGET /a\n```\n\n```api\nGET /b\n```\n\n"
        "```api {id: clone_each_vm_2}\nGET /c\n```\n\n## 2nd step\n\n```ssh\ntrue\n```\n\n"
        "```local\ntrue\n```\n"
    )
    runbook = parse(body)
    # The explicit id clone_each_vm_2 is reserved, so the second derived one skips to _3.
    assert [s.id for s in runbook.steps] == [
        "clone_each_vm",
        "clone_each_vm_3",
        "clone_each_vm_2",
        "step_2nd_step",
        "step_2nd_step_2",
    ]
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
    body = (
        "```api {id: a, colour: red}\nGET /version\n```\n\n```api {id: a}\nfetch it\n```\n\n```shell {id: s}\nls\n```\n"
    )
    with pytest.raises(InputError) as caught:
        parse(body)
    lines = [str(p) for p in caught.value.problems]
    assert lines == [
        "runbooks/t.md:5: attributes.colour: unknown field 'colour' (allowed: accept_task_error, as, check, confirm, delay, "
        "destructive, extract, foreach, id, label, node, parallel, pipeline, poll, readonly, register, retries, review, show, timeout, to_pass, until, when)",
        "runbooks/t.md:9: attributes.id: duplicate step id 'a' (first used on line 5); ids must be unique "
        "because checkpoints key on them",
        "runbooks/t.md:10: body: the first line of an api step must be 'METHOD /path' with METHOD one of "
        "GET, POST, PUT, DELETE, e.g. 'POST /nodes/{{ node }}/qemu/{{ vmid }}/status/start'",
        "runbooks/t.md:13: unknown step kind 'shell': did you mean ssh (runs on a PVE node) or local (runs on "
        "this machine)? (a step is a fence of kind api, ssh, talosctl, http, local, file, runbook; a fence of any other language "
        "is prose and takes no attributes)",
    ]


def problems_of(body: str) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse(body)
    return [str(p) for p in caught.value.problems]


def test_the_kind_ends_at_any_whitespace() -> None:
    runbook = parse("```api\t{id: x}\nGET /version\n```\n\n```ssh \t {id: y}\nuptime\n```\n")
    assert [(s.kind, s.id) for s in runbook.steps] == [("api", "x"), ("ssh", "y")]


@pytest.mark.parametrize(
    ("fence", "message"),
    [
        ("```shell{id: x}", "unknown step kind 'shell': did you mean ssh"),
        ("```API{id: y}", "step kinds are lower case: did you mean 'api'? (got 'API')"),
        ("```API", "step kinds are lower case: did you mean 'api'? (got 'API')"),
        ("```api{id: z}", "put a space between the step kind and its attributes: 'api {id: z}'"),
        ("``` {id: z}", "the step kind is missing before the attributes"),
    ],
)
def test_a_fence_meant_as_a_step_is_never_silently_prose(fence: str, message: str) -> None:
    lines = problems_of(f"{fence}\nGET /version\n```\n")
    assert len(lines) == 1 and lines[0].startswith("runbooks/t.md:5: ") and message in lines[0], lines


def test_other_languages_stay_prose() -> None:
    assert parse("```bash\nrm -rf /\n```\n\n```Shell\nls\n```\n").steps == ()


def test_a_step_fence_left_open_is_reported_where_the_next_step_starts() -> None:
    lines = problems_of("```api {id: a}\nGET /version\n\n## Next\n\n```api {id: b}\nGET /nodes\n```\n")
    assert lines == [
        "runbooks/t.md:10: this line looks like the start of a step inside the body of step 'a' "
        "(line 5); is the closing ``` of step 'a' missing before it? (to show a fence inside a body, "
        "open the step with a longer fence: ````)"
    ]


def test_a_step_fence_running_to_the_end_is_reported() -> None:
    assert problems_of("~~~ssh\nuptime\n") == [
        "runbooks/t.md:5: the ssh step is never closed: add a line ~~~ after its body"
    ]


def test_a_longer_or_other_fence_may_hold_a_step_fence_in_its_body() -> None:
    runbook = parse("````ssh\ncat <<'EOF'\n```api {id: x}\nEOF\n````\n\n~~~local\ncat <<'EOF'\n```api\nEOF\n~~~\n")
    assert [s.kind for s in runbook.steps] == ["ssh", "local"]


def test_an_empty_body_is_reported_on_the_fence_line_per_kind() -> None:
    assert problems_of("```api {id: a}\n```\n\n```talosctl\n# nothing yet\n```\n") == [
        "runbooks/t.md:5: body: the api step has no request: write 'METHOD /path' on the line after the fence, "
        "e.g. 'GET /version'",
        "runbooks/t.md:8: body: the talosctl step has no arguments: write the talosctl arguments between the "
        "fences, e.g. 'health' (only comments)",
    ]


def test_attribute_errors_name_the_attribute_and_drop_the_unevaluated_echo() -> None:
    assert problems_of("```ssh {id: a, as: vm, retries: many, timeout: -5, id: b}\nuptime\n```\n") == [
        "runbooks/t.md:5: attributes.as: as names the loop variable of foreach, but this step has no foreach: "
        "add foreach or remove as",
        "runbooks/t.md:5: attributes.id: id is given twice in the attributes; keep one",
        "runbooks/t.md:5: attributes.retries: must be an integer (got the text 'many')",
        "runbooks/t.md:5: attributes.timeout: must be more than 0 seconds (got -5)",
    ]


def test_a_bad_parameter_name_and_a_broken_pattern_are_located_once() -> None:
    text = (
        "---\nname: t\ndescription: d\nparameters:\n  node: {type: string, description: n, pattern: '^pve[0-9',"
        " default: pve01}\n  VM-ID: {type: integer, description: v}\n---\n"
    )
    with pytest.raises(InputError) as caught:
        parse_runbook(text, "runbooks/t.md", "t")
    assert [str(p) for p in caught.value.problems] == [
        "runbooks/t.md:5: parameters.node.pattern: pattern '^pve[0-9' is not a valid regular expression "
        "(unterminated character set at position 4)",
        "runbooks/t.md:6: parameters.VM-ID: a parameter name is lower-case letters, digits and _, not starting "
        "with a digit, so that templates can use it (got 'VM-ID'); did you mean 'vm_id'?",
    ]


def test_parameters_keep_their_spec_and_know_if_required() -> None:
    runbook = parse_runbook(
        "---\nname: t\ndescription: d\nparameters:\n  vmid: {type: integer, description: VM, minimum: 100}\n"
        "  mode: {type: string, default: soft, enum: [soft, hard], description: how}\n---\n",
        "t.md",
        "t",
    )
    vmid, mode = runbook.parameters
    assert (vmid.required, mode.required, mode.default) == (True, False, "soft")
    assert (vmid.line, mode.line) == (5, 6)


def test_a_byte_order_mark_is_ignored() -> None:
    assert parse_runbook("\ufeff" + HEAD, "t.md", "t").name == "t"
