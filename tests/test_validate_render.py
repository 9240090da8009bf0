"""`runbook validate` renders every step it can without a cluster and checks what would be sent."""

from __future__ import annotations

HEAD = "---\nname: {name}\ndescription: d\nrequires: [profile]\nparameters:\n  vmid: {{type: integer, description: VM}}\n---\n\n"


def runbook(name: str, body: str) -> dict[str, str]:
    return {f"runbooks/{name}.md": HEAD.format(name=name) + body}


def test_pve_schema_violations_are_found_without_a_cluster(cli, make_home) -> None:
    home = make_home(runbook("cfg", "```api {id: cfg, foreach: plan.vms, as: vm}\nPUT /nodes/{{ vm.node }}/qemu/"
                                    "{{ vm.vmid }}/config\nnet0: \"virtio,bridge={{ defaults.network_bridge }},tag=5000\"\n"
                                    "memroy: \"{{ vm.memory }}\"\n```\n"))
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "cfg.md"))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "runbooks/cfg.md:11: step cfg: Proxmox API: net0: invalid format - format error; net0.tag: value must have "
        "a maximum value of 4094",
        "runbooks/cfg.md:12: step cfg: Proxmox API: memroy: property is not defined in schema and the schema does "
        "not allow additional properties",
    ]


def test_a_misspelt_variable_is_found_and_later_steps_still_checked(cli, make_home) -> None:
    home = make_home(runbook("typo", "```ssh {id: a}\nqm config {{ vmidd }}\n```\n\n"
                                     "```api {id: b}\nGET /nodes/pve01/qemu/{{ vmid }}/clone\n```\n"))
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "typo.md"))
    assert result.stdout.splitlines() == [
        "runbooks/typo.md:10: body: template error: 'vmidd' is undefined",
        "runbooks/typo.md:14: step b: Proxmox API: GET is not a method of /nodes/{node}/qemu/{vmid}/clone (it has: POST)",
    ]


def test_a_problem_with_only_some_profiles_names_them(cli, make_home) -> None:
    home = make_home(runbook("talos", "```talosctl {id: v}\nversion --nodes {{ talos.vip.ip }}\n```\n"))
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "talos.md"))
    assert result.stdout.splitlines() == [
        "runbooks/talos.md:10: body: template error: 'None' has no attribute 'vip' (with profile dev-generic)"]


def test_a_rendered_value_that_breaks_the_kind_schema(cli, make_home) -> None:
    home = make_home(runbook("url", "```http {id: u}\nGET https://{{ 'a b' }}/x\n```\n"))
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "url.md"))
    assert result.stdout.splitlines() == [
        "runbooks/url.md:9: step u (rendered url): the rendered URL must be an absolute http(s) URL without spaces"]


def test_required_parameters_stay_unknown_and_do_not_fail_validation(cli, make_home) -> None:
    home = make_home(runbook("ok", "```api {id: s}\nPOST /nodes/pve01/qemu/{{ vmid }}/status/start\n```\n"))
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "ok.md"))
    assert result.exit_code == 0, result.stdout
