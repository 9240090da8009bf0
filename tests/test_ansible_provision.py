"""ansible-provision (operations 57 and 58): any fleet-infra playbook, limited with ``--limit``, the API
token only in its environment; run on the simulated cluster, whose ``ansible-playbook`` records its
arguments (``.runbook/sim/tools.jsonl``)."""

from __future__ import annotations

import json
from typing import Any

from tests.test_runbooks_simulated import Sim, sim  # noqa: F401  (the fixture)


def _calls(sim: Sim) -> list[dict[str, Any]]:  # noqa: F811
    text = (sim.home.state_dir / "sim" / "tools.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if '"ansible-playbook"' in line]


def test_a_limit_is_passed_as_one_limit_argument(sim: Sim) -> None:  # noqa: F811
    run = sim.run("ansible-provision", "playbook=reboot-vms.yaml", "limit=all:!workers")
    [call] = _calls(sim)
    assert call["token_in_env"] is True
    assert call["argv"][2].endswith("/src/fleet-infra/playbooks/reboot-vms.yaml")
    assert call["argv"][3:] == ["--limit", "all:!workers"]
    assert "all:!workers" in run.output("playbook")["stdout"], "the hosts of the recap are the limit's"
    change = run.steps["playbook"]["action"]
    assert "reboot-vms.yaml" in json.dumps(change)


def test_without_a_limit_there_is_no_limit_argument(sim: Sim) -> None:  # noqa: F811
    sim.run("ansible-provision", "part=workers")
    [call] = _calls(sim)
    assert call["argv"][2].endswith("/playbooks/talos-provision-vms.yaml")
    assert call["argv"][3:] == ["--tags", "workers"]


def test_a_limit_or_playbook_that_could_be_an_option_is_refused(cli: Any) -> None:
    from tests.conftest import REPO

    for param, says in (
        ("limit=--become", "limit"),
        ("limit=pve01 --check", "limit"),
        ("playbook=../secrets.yaml", "playbook"),
    ):
        result = cli("--home", str(REPO), "run", "ansible-provision", "--param", param, "--dry-run", "--offline")
        assert result.exit_code == 1, (param, result.output)
        assert says in result.stderr
