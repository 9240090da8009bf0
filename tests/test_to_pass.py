"""``to_pass``: a step's result fields stored in a real ``pass`` store, the secret shown nowhere.

The API side is the simulated cluster over verified HTTPS (``SimPve`` answers ``POST
/access/users/{userid}/token/{tokenid}`` with a fresh ``value``, as PVE does once); the store is a
real one encrypted to a throw-away key (tests/support/passstore.py). After every run, every output,
event, journal and run record is searched for the secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from engine import exitcodes
from engine.executors.api import ApiExecutor
from engine.load.config import load_config
from engine.load.home import Home
from engine.run.credentials import read_pass_token
from engine.run.execution import plan_run, start_run
from engine.run.secrets import Secret
from engine.run.topass import insert
from engine.runbook.actions import ApiRequest
from engine.sim.wiring import Simulation
from tests.support.approvers import Yes
from tests.support.passstore import PassStore, pass_store

ENTRY = "proxmox/lab/runbook"

RUNBOOK = """---
name: token-to-pass
description: Create a service user and an API token whose secret goes straight to pass, for the tests.
format: 2
parameters:
  tokenid:
    type: string
    default: ci
    description: The token's name.
---

# Token to pass

## Create the user

```api {id: user}
POST /access/users
userid: runbook@pve
```

## Create the token

```api {id: token, show: true, to_pass: {path: "proxmox/{{ config.cluster.name }}/runbook", lines: [full-tokenid, value], secret: [value]}}
POST /access/users/runbook@pve/token/{{ tokenid }}
privsep: 0
```

## A later step sees the output, masked

```local {id: later, changes: [], show: true}
printf 'later sees %s for %s\\n' {{ steps.token.value }} {{ steps.token["full-tokenid"] }}
```
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    with pass_store(tmp_path_factory.mktemp("pass")) as made:
        yield made


def _home(make_home: Callable[..., Home], text: str = RUNBOOK) -> Home:
    return make_home({"runbooks/token-to-pass.md": text}, runbooks=False)


def _everything(home: Home, *texts: str) -> str:
    """Every output given plus every file the run left under the home's state folder."""
    found = list(texts)
    for path in home.state_dir.rglob("*"):
        if path.is_file() and path.suffix != ".pem":
            found.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(found)


def _run(
    home: Home, env: dict[str, str], events: list[str], store_env: Callable[[], dict[str, str]] | None = None
) -> tuple[Any, str]:
    """Run token-to-pass on the simulated cluster, storing in the real pass store; the outcome and the token's secret."""
    with Simulation(home, load_config(home)) as simulation:
        dispatcher = simulation.dispatcher()
        # As a real run stores it: ``pass insert`` in the environment the token is read with.
        dispatcher.pass_store = lambda path, lines: insert(path, lines, (store_env or (lambda: env))())
        try:
            outcome = start_run(
                home,
                "token-to-pass",
                None,
                {},
                dispatcher=dispatcher,
                approver=Yes(),
                on_event=lambda kind, entry: events.append(json.dumps(entry.as_dict(), default=str)),
            )
        finally:
            dispatcher.close()
        assert simulation.cluster is not None
        value = simulation.cluster.do(lambda: simulation.cluster.fake.apitokens.get("runbook@pve!ci", ""))  # type: ignore[union-attr]
        if outcome.status == "succeeded":
            token = read_pass_token(ENTRY, env)
            # The token from pass opens the API, as runbook's own credentials would use it.
            tokens = type("Tokens", (), {"get": staticmethod(lambda: token)})()
            api = ApiExecutor(simulation.cluster.endpoints(), tokens, simulation.cluster.verify())
            assert "version" in api.execute(ApiRequest("GET", "/version", {})).data
            api.close()
    return outcome, value


def test_the_secret_goes_to_pass_and_nowhere_else(make_home: Callable[..., Home], store: PassStore) -> None:
    home = _home(make_home)
    env = store.full_env()
    events: list[str] = []
    outcome, value = _run(home, env, events)
    assert outcome.status == "succeeded", outcome.message
    assert len(value) == 36  # PVE's UUID, answered once
    assert store.show(ENTRY) == f"runbook@pve!ci\n{value}\n", "line 1 the token id, line 2 the secret"
    assert read_pass_token(ENTRY, env).secret == Secret(value)
    token, later = (e for e in outcome.entries if e.step_id in ("token", "later"))
    assert token.output["value"] == "*MASKED*" and token.output["full-tokenid"] == "runbook@pve!ci"
    assert later.output["stdout"] == "later sees *MASKED* for runbook@pve!ci\n"
    assert any(f"stored 2 line(s) in pass entry '{ENTRY}'" in e for e in events)
    everything = _everything(home, *events, outcome.message, *outcome.warnings)
    assert value not in everything and value[:13] not in everything
    journal = next(home.state_dir.rglob("journal.jsonl")).read_text()
    assert '"value":"*MASKED*"' in journal


def test_a_failing_pass_fails_the_step_naming_the_entry_never_the_value(
    make_home: Callable[..., Home], tmp_path: Path, store: PassStore
) -> None:
    home = _home(make_home)
    bare = tmp_path / "no-store"
    bare.mkdir()  # no .gpg-id: pass refuses to insert
    env = {**store.full_env(), "PASSWORD_STORE_DIR": str(bare)}
    events: list[str] = []
    outcome, value = _run(home, env, events)
    assert outcome.status == "failed" and outcome.exit_code == exitcodes.FAILED
    (failed,) = (e for e in outcome.entries if e.status == "failed")
    assert failed.step_id == "token"
    assert f"`pass insert {ENTRY}` failed" in failed.error and "pass init" in failed.error
    assert "The secret was shown nowhere and is now lost" in failed.error
    assert "pveum user token remove" in failed.error
    assert not [e for e in outcome.entries if e.step_id == "later"], "nothing after it ran"
    assert value and value not in _everything(home, *events, outcome.message, failed.error or "")


def test_a_missing_field_fails_the_step_and_lists_the_fields(make_home: Callable[..., Home], store: PassStore) -> None:
    home = _home(
        make_home, RUNBOOK.replace("[full-tokenid, value], secret: [value]", "[tokenid, value], secret: [value]")
    )
    events: list[str] = []
    outcome, value = _run(home, store.full_env(), events)
    (failed,) = (e for e in outcome.entries if e.status == "failed")
    assert "has no field 'tokenid' for pass entry 'proxmox/lab/runbook' (it has: full-tokenid, info, value)" in (
        failed.error or ""
    )
    assert value not in _everything(home, *events, failed.error or "")


def test_the_review_shows_the_write_and_never_runs_the_step(make_home: Callable[..., Home], store: PassStore) -> None:
    home = _home(make_home)
    with Simulation(home, load_config(home)) as simulation:
        dispatcher = simulation.dispatcher()
        written: list[Sequence[Secret]] = []
        dispatcher.pass_store = lambda path, lines: written.append(lines) or ""  # type: ignore[func-returns-value]
        try:
            outcome = plan_run(home, "token-to-pass", None, {}, offline=False, dispatcher=dispatcher)
        finally:
            dispatcher.close()
    assert outcome.status == "planned" and written == []
    writes = [(c.action, c.resource, c.id, c.step) for c in outcome.changes if c.resource == "pass-entry"]
    assert writes == [("write", "pass-entry", ENTRY, "token")]


def test_a_simulated_run_never_writes_the_operators_store(cli: Any, make_home: Callable[..., Home]) -> None:
    home = _home(make_home)
    env = {"RUNBOOK_HOME": str(home.root), "PASSWORD_STORE_DIR": str(home.root / "must-not-exist")}
    plan = cli("run", "token-to-pass", "--simulate", "--dry-run", env=env)
    assert plan.exit_code == 0, plan.output
    assert f"write pass-entry {ENTRY}" in plan.output
    run = cli("run", "token-to-pass", "--simulate", "--yes", env=env)
    assert run.exit_code == 0, run.output
    assert f"simulated: pass entry '{ENTRY}' not written" in run.output
    assert "later sees *MASKED* for runbook@pve!ci" in run.output
    assert not (home.root / "must-not-exist").exists()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("{path: a/b, lines: [value], secret: [other]}", "secret field 'other' is not among the lines"),
        ("{path: a/b, lines: []}", "to_pass.lines"),
        ("{lines: [value]}", "path"),
        ("{path: /abs/entry, lines: [value]}", "a pass entry name without spaces, not starting with /"),
    ],
)
def test_a_to_pass_written_wrong_is_located(cli: Any, make_home: Callable[..., Home], spec: str, says: str) -> None:
    home = _home(
        make_home,
        RUNBOOK.replace(
            'to_pass: {path: "proxmox/{{ config.cluster.name }}/runbook", lines: [full-tokenid, value], secret: [value]}',
            f"to_pass: {spec}",
        ),
    )
    result = cli("validate", env={"RUNBOOK_HOME": str(home.root)})
    assert result.exit_code != 0
    assert says in result.output and "token-to-pass.md:" in result.output
