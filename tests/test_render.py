"""Rendering: strict, sandboxed, shell-safe; api values cannot change a request's structure."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from engine.load.problems import InputError
from engine.runbook.actions import ApiRequest, ShellCommand, TalosctlCommand
from engine.runbook.parser import parse_runbook
from engine.runbook.render import Renderer, StepOutputs
from engine.runbook.unknown import Unknown, UnknownValue

HEAD = "---\nname: t\ndescription: test\n---\n"


def step_of(body: str):
    runbook = parse_runbook(HEAD + body, "runbooks/t.md", "t")
    return runbook.steps[0]


def renderer(**context) -> Renderer:
    return Renderer("runbooks/t.md", {"nodes": [{"name": "pve01"}], "steps": StepOutputs({}), **context})


def test_shell_values_stay_one_argument_even_when_hostile(tmp_path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker}; echo $(id) `id` \"q\" 'q'"
    step = step_of("```local\nprintf '%s\\n' {{ name }}\n```\n")
    action = renderer(name=hostile).action(step, {})
    assert isinstance(action, ShellCommand)
    out = subprocess.run(["bash", "-c", action.script], capture_output=True, text=True, check=True)
    assert out.stdout == hostile + "\n"
    assert not marker.exists()


def test_raw_filter_opts_out_of_quoting_explicitly() -> None:
    step = step_of("```ssh\nqm list {{ flags | raw }} {{ word }}\n```\n")
    action = renderer(flags="--full 1", word="a b").action(step, {})
    assert action.script == "qm list --full 1 'a b'\n"
    assert action.node == "pve01"


def test_lists_become_separately_quoted_words() -> None:
    step = step_of("```talosctl\n--nodes {{ ips }} health\n```\n")
    action = renderer(ips=["10.0.0.1", "10.0.0.2"]).action(step, {})
    assert isinstance(action, TalosctlCommand)
    assert action.argv == ("--nodes", "10.0.0.1", "10.0.0.2", "health")


def test_talosctl_arguments_split_without_a_shell_and_keep_hostile_values_whole() -> None:
    step = step_of("```talosctl\napply-config --nodes {{ ip }} \\\n  --file {{ file }}\n```\n")
    action = renderer(ip="10.0.0.1; reboot", file="/tmp/a b.yaml").action(step, {})
    assert action.argv == ("apply-config", "--nodes", "10.0.0.1; reboot", "--file", "/tmp/a b.yaml")


def test_api_values_render_one_by_one_and_cannot_add_parameters() -> None:
    step = step_of(
        '```api\nPOST /nodes/{{ node }}/qemu/101/clone\nnewid: "{{ vmid }}"\nname: "{{ name }}"\n'
        'full: true\ntarget: "{{ target }}"\n```\n'
    )
    action = renderer(node="pve01", vmid=1031, name="a\nstorage: evil", target="").action(step, {})
    assert isinstance(action, ApiRequest)
    assert action.path == "/nodes/pve01/qemu/101/clone"
    assert action.params == {"newid": "1031", "name": "a\nstorage: evil", "full": 1}, "empty target left out"


def test_a_misspelt_variable_is_an_error_with_the_line() -> None:
    step = step_of("```ssh\necho ok\necho {{ vm.nmae }}\n```\n")
    with pytest.raises(InputError) as caught:
        renderer(vm={"name": "a"}).action(step, {})
    assert [str(p) for p in caught.value.problems] == [
        "runbooks/t.md:7: body: template error: 'dict object' has no attribute 'nmae'"
    ]


def test_an_undefined_name_in_a_condition_is_an_error_not_false() -> None:
    step = step_of("```api {when: 'startt'}\nGET /version\n```\n")
    with pytest.raises(InputError, match="when: template error: 'startt' is undefined"):
        renderer().truth(step, "when", {})


def test_the_sandbox_blocks_python_internals() -> None:
    step = step_of("```local\necho {{ ''.__class__.__mro__ }}\n```\n")
    with pytest.raises(InputError, match="template error"):
        renderer().action(step, {})


def test_unknown_values_render_visibly_and_conditions_on_them_raise() -> None:
    steps = StepOutputs({}, frozenset({"clone"}))
    r = Renderer("runbooks/t.md", {"nodes": [{"name": "pve01"}], "steps": steps})
    step = step_of(
        "```api {when: 'steps.clone.exitstatus == \"OK\"'}\nGET /nodes/pve01/tasks/{{ steps.clone.upid }}/status\n```\n"
    )
    assert r.action(step, {}).path == "/nodes/pve01/tasks/(known after run: steps.clone.upid)/status"
    with pytest.raises(UnknownValue):
        r.truth(step, "when", {})
    typo = step_of("```api\nGET /nodes/{{ steps.clnoe.upid }}\n```\n")
    with pytest.raises(InputError, match="no step 'clnoe' in this runbook"):
        r.action(typo, {})
    assert str(Unknown("steps.x").a["b"]) == '(known after run: steps.x.a["b"])'


def test_http_requests_have_headers_and_body() -> None:
    step = step_of(
        "```http\nPOST https://factory.talos.dev/schematics\nContent-Type: application/yaml\n\n"
        "customization:\n  systemExtensions: {{ exts }}\n```\n"
    )
    action = renderer(exts="[a]").action(step, {})
    assert (action.method, action.url, action.headers) == (
        "POST",
        "https://factory.talos.dev/schematics",
        {"Content-Type": "application/yaml"},
    )
    assert action.body == "customization:\n  systemExtensions: [a]\n"


def test_shlex_quote_is_what_the_shell_sees() -> None:
    value = "it's"
    step = step_of("```local\necho {{ v }}\n```\n")
    assert renderer(v=value).action(step, {}).script == f"echo {shlex.quote(value)}\n"


def test_exists_checks_local_paths_for_guards(tmp_path) -> None:
    (tmp_path / "secrets.yaml").write_text("x")
    step = step_of("```local {check: \"exists(d ~ '/secrets.yaml')\"}\ntrue\n```\n")
    assert renderer(d=str(tmp_path)).truth(step, "check", {})
    assert not renderer(d=str(tmp_path / "nope")).truth(step, "check", {})


def test_tojson_writes_a_value_known_only_after_run_as_such() -> None:
    from engine.runbook.render import PLAIN_ENV
    from engine.runbook.unknown import Unknown, contains_unknown

    shown = PLAIN_ENV.from_string("{{ x | tojson }}").render(x={"vms": Unknown("cluster.vms"), "n": 1})
    assert shown == '{"n": 1, "vms": "(known after run: cluster.vms)"}' and contains_unknown(shown)
    with pytest.raises(TypeError):
        PLAIN_ENV.from_string("{{ x | tojson }}").render(x={"s": {1, 2}})


def test_a_changes_entry_naming_several_ids_is_one_change_for_each() -> None:
    from engine.runbook.parser import parse_runbook
    from engine.runbook.render import Renderer

    text = (
        "---\nname: t\ndescription: t\n---\n\n## Make\n\n"
        '```local {changes: {action: create, resource: file, id: ["{{ d }}/a", "{{ d }}/b"]}}\ntouch x\n```\n'
    )
    step = parse_runbook(text, "t.md").steps[0]
    assert Renderer("t.md", {"d": "/srv"}).changes(step, {}) == (
        {"action": "create", "resource": "file", "id": "/srv/a"},
        {"action": "create", "resource": "file", "id": "/srv/b"},
    )
