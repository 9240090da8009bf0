"""`runbook validate` renders every step it can without a cluster and checks what would be sent."""

from __future__ import annotations

HEAD = "---\nname: {name}\nformat: 2\ndescription: d\nrequires: [profile]\nparameters:\n  vmid: {{type: integer, description: VM}}\n---\n\n"


def runbook(name: str, body: str) -> dict[str, str]:
    return {f"runbooks/{name}.md": HEAD.format(name=name) + body}


def test_pve_schema_violations_are_found_without_a_cluster(cli, make_home) -> None:
    home = make_home(
        runbook(
            "cfg",
            "```api {id: cfg, foreach: plan.vms, as: vm}\nPUT /nodes/{{ vm.node }}/qemu/"
            '{{ vm.vmid }}/config\nnet0: "virtio,bridge={{ defaults.network_bridge }},tag=5000"\n'
            'memroy: "{{ vm.memory }}"\n```\n',
        )
    )
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "cfg.md"))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "runbooks/cfg.md:12: step cfg: Proxmox API: net0: invalid format - format error; net0.tag: value must have "
        "a maximum value of 4094",
        "runbooks/cfg.md:13: step cfg: Proxmox API: memroy: property is not defined in schema and the schema does "
        "not allow additional properties",
    ]


def test_a_misspelt_variable_is_found_and_later_steps_still_checked(cli, make_home) -> None:
    home = make_home(
        runbook(
            "typo",
            "```ssh {id: a}\nqm config {{ vmidd }}\n```\n\n"
            "```api {id: b}\nGET /nodes/pve01/qemu/{{ vmid }}/clone\n```\n",
        )
    )
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "typo.md"))
    assert result.stdout.splitlines() == [
        "runbooks/typo.md:11: body: template error: 'vmidd' is undefined",
        "runbooks/typo.md:15: step b: Proxmox API: GET is not a method of /nodes/{node}/qemu/{vmid}/clone (it has: POST)",
    ]


def test_a_problem_with_only_some_profiles_names_them(cli, make_home) -> None:
    home = make_home(runbook("talos", "```talosctl {id: v}\nversion --nodes {{ talos.vip.ip }}\n```\n"))
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "talos.md"))
    assert result.stdout.splitlines() == [
        "runbooks/talos.md:11: body: template error: 'None' has no attribute 'vip' (with profile dev-generic)"
    ]


def test_a_rendered_value_that_breaks_the_kind_schema(cli, make_home) -> None:
    home = make_home(runbook("url", "```http {id: u}\nGET https://{{ 'a b' }}/x\n```\n"))
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "url.md"))
    assert result.stdout.splitlines() == [
        "runbooks/url.md:10: step u (rendered url): the rendered URL must be an absolute http(s) URL without spaces"
    ]


def test_required_parameters_stay_unknown_and_do_not_fail_validation(cli, make_home) -> None:
    home = make_home(runbook("ok", "```api {id: s}\nPOST /nodes/pve01/qemu/{{ vmid }}/status/start\n```\n"))
    result = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "ok.md"))
    assert result.exit_code == 0, result.stdout


def test_a_large_home_is_checked_by_several_processes_with_the_same_result(make_home, monkeypatch) -> None:
    """Each runbook is independent: forked workers must report exactly what one process does."""
    import engine.runbook.validate as validate

    files: dict[str, str] = {}
    for n in range(30):
        files.update(runbook(f"ok{n:02d}", "```ssh {id: a}\nqm config {{ vmid }}\n```\n"))
        files.update(runbook(f"bad{n:02d}", f"```ssh {{id: a}}\nqm config {{{{ vmid{n} }}}}\n```\n"))
    files["runbooks/broken.md"] = "---\nname: broken\nformat: 2\n---\n"
    home = make_home(files, runbooks=False)
    one_process = validate.validate_home(home)
    pools: list[int] = []

    class Counted(validate.ProcessPoolExecutor):
        def __init__(self, workers: int, **kwargs) -> None:
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(validate, "ProcessPoolExecutor", Counted)
    monkeypatch.setattr(validate.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(validate.threading, "active_count", lambda: 1)  # pytest may run helper threads
    several = validate.validate_home(home)
    assert pools == [2]  # 61 runbooks, 24 or more per worker
    assert several.problems == one_process.problems and several.checked == one_process.checked
    assert len(one_process.problems) == 31
    assert str(one_process.problems[0]) == "runbooks/bad00.md:11: body: template error: 'vmid0' is undefined"
