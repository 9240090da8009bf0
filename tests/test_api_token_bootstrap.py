"""api-token-bootstrap (operation 48): the new token's secret goes from PVE's answer into a real ``pass``
store, opens the API from there, and is printed and recorded nowhere.

The API is the simulated cluster over verified HTTPS (it answers the token's secret once, as PVE
does, and accepts it afterwards); the store is a real one encrypted to a throw-away key
(tests/support/passstore.py). The shipped runbook is run as is, with the administrator token of the
simulation, as an operator runs it with a short-lived administrator token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.executors.api import ApiExecutor
from engine.load.config import load_config
from engine.load.home import Home
from engine.run.credentials import ApiToken, read_pass_token
from engine.run.execution import start_run
from engine.run.topass import insert
from engine.runbook.actions import ApiRequest
from engine.sim.wiring import Simulation
from tests.support.approvers import Yes
from tests.support.passstore import PassStore, pass_store

#: credentials.pass_path of the shipped cluster-config.yaml: where runbook reads its token.
ENTRY = "proxmox/lab/runbook-token"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    with pass_store(tmp_path_factory.mktemp("pass")) as made:
        yield made


def _recorded(home: Home) -> str:
    """Every file the runs left under the home's state folder (the simulation's certificates aside)."""
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in home.state_dir.rglob("*")
        if p.is_file() and p.suffix != ".pem"
    )


def _opens_the_api(simulation: Simulation, token: ApiToken) -> bool:
    """Whether ``token`` is accepted by the simulated cluster, as runbook's credentials would use it."""
    assert simulation.cluster is not None
    tokens = type("Tokens", (), {"get": staticmethod(lambda: token)})()
    api = ApiExecutor(simulation.cluster.endpoints(), tokens, simulation.cluster.verify())
    try:
        return "version" in api.execute(ApiRequest("GET", "/version", {})).data
    except Exception:
        return False
    finally:
        api.close()


def _run(simulation: Simulation, home: Home, env: dict[str, str], params: dict[str, Any], events: list[str]) -> Any:
    dispatcher = simulation.dispatcher()
    # As a real run stores it: ``pass insert`` in the environment the token is read with.
    dispatcher.pass_store = lambda path, lines: insert(path, lines, env)
    try:
        return start_run(
            home,
            "api-token-bootstrap",
            None,
            params,
            dispatcher=dispatcher,
            approver=Yes(),
            on_event=lambda kind, entry: events.append(repr(entry.as_dict())),
        )
    finally:
        dispatcher.close()


def _secret(simulation: Simulation) -> str:
    """The secret the simulated PVE answered for runbook@pve!runbook (kept only in its token table)."""
    assert simulation.cluster is not None
    return simulation.cluster.do(lambda: simulation.cluster.fake.apitokens.get("runbook@pve!runbook", ""))  # type: ignore[union-attr]


def test_the_new_tokens_secret_is_stored_in_pass_and_nowhere_else(
    make_home: Callable[..., Home], store: PassStore
) -> None:
    home = make_home()
    env = store.full_env()
    events: list[str] = []
    with Simulation(home, load_config(home)) as simulation:
        outcome = _run(simulation, home, env, {}, events)
        assert outcome.status == "succeeded", outcome.message
        secret = _secret(simulation)
        assert len(secret) == 36
        assert store.show(ENTRY) == f"runbook@pve!runbook\n{secret}\n", "line 1 the token id, line 2 the secret"
        token = read_pass_token(ENTRY, env)
        assert _opens_the_api(simulation, token), "the stored token is the one PVE accepts"

        steps = {e.step_id: e for e in outcome.entries}
        assert steps["token"].output["value"] == "*MASKED*"
        assert steps["token"].output["full-tokenid"] == "runbook@pve!runbook"
        assert steps["token_now"].output == {
            "token": "runbook@pve!runbook",
            "privsep": 0,
            "comment": "runbook automation token (api-token-bootstrap)",
        }
        assert any(f"stored 2 line(s) in pass entry '{ENTRY}'" in e for e in events)
        everything = "\n".join([*events, outcome.message or "", _recorded(home)])
        assert secret not in everything and secret[:13] not in everything

        # Run again: everything exists, nothing changes, and the entry keeps the secret that works.
        again = _run(simulation, home, env, {}, [])
        assert again.status == "succeeded", again.message
        assert {e.step_id: e.status for e in again.entries}["token"] == "skipped"
        assert store.show(ENTRY) == f"runbook@pve!runbook\n{secret}\n"


def test_replace_token_rotates_the_secret_in_pass(make_home: Callable[..., Home], store: PassStore) -> None:
    home = make_home()
    env = store.full_env()
    entry = "proxmox/lab/rotated"
    with Simulation(home, load_config(home)) as simulation:
        first = _run(simulation, home, env, {"pass_path": entry}, [])
        assert first.status == "succeeded", first.message
        old = read_pass_token(entry, env)

        events: list[str] = []
        rotated = _run(simulation, home, env, {"pass_path": entry, "replace_token": "true"}, events)
        assert rotated.status == "succeeded", rotated.message
        statuses = {e.step_id: e.status for e in rotated.entries}
        assert (statuses["remove_token"], statuses["token"]) == ("succeeded", "succeeded")
        new = read_pass_token(entry, env)
        assert new.token_id == old.token_id == "runbook@pve!runbook"
        assert new.secret != old.secret
        assert _opens_the_api(simulation, new) and not _opens_the_api(simulation, old)
        secret = _secret(simulation)
        assert secret not in "\n".join([*events, _recorded(home)])
