"""Secret parameters: given from the environment, pass or a hidden prompt; never recorded or shown.

The runbook below puts a secret parameter into a local command, a command on a PVE node over the
real sshd, and a file's digest, so the tests can tell the child got the value while every output
(stdout, stderr, plan, --json, journal, run.json, saved plan) shows ``*MASKED*`` at most.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from engine import exitcodes
from engine.load.problems import InputError
from engine.run.secretparams import SecretInput, resolve
from engine.runbook.model import Runbook
from engine.runbook.parser import parse_runbook

VALUE = "s3cr3t-Hunter2-4a8f-c0ffee"

RUNBOOK = """---
name: secret-demo
description: Uses a secret parameter in commands, for the tests.
format: 2
parameters:
  db_password:
    type: string
    secret: true
    description: The database password.
  label:
    type: string
    default: demo
    description: A plain parameter, shown as usual.
---

# Secret demo

## Keep a digest of the password

```local {id: digest, changes: {action: write, resource: file, id: "{{ out }}"}}
printf '%s' {{ db_password }} | sha256sum | cut -d' ' -f1 > {{ out }}
```

## Print it, as a careless tool would

```local {id: careless, changes: []}
printf 'password=%s\\n' {{ db_password }}
printf '%s' {{ db_password }} | base64
```

## And on a node

```ssh {id: on_node, node: pve01, changes: []}
printf 'node sees %s\\n' {{ db_password }}
```
"""


def _runbook(text: str = RUNBOOK) -> Runbook:
    return parse_runbook(text, "runbooks/secret-demo.md")


def _home(cluster: Any, tmp_path: Path) -> Path:
    out = tmp_path / "digest.txt"
    (cluster.home / "runbooks" / "secret-demo.md").write_text(RUNBOOK.replace("{{ out }}", str(out)), encoding="utf-8")
    return out


def _no_trace(text: str) -> None:
    assert VALUE not in text
    assert base64.b64encode(VALUE.encode()).decode()[:12] not in text
    assert VALUE[:12] not in text


# ------------------------------------------------------------------------------------------ resolving


def test_a_secret_comes_from_the_environment_and_its_source_is_what_is_kept() -> None:
    resolved = resolve(_runbook(), {"db_password": "env:DB_PW"}, {"DB_PW": VALUE}, None)
    assert resolved.revealed() == {"db_password": VALUE}
    assert resolved.sources == {"db_password": "env:DB_PW"}
    assert VALUE not in repr(resolved) and str(resolved.placeholders()["db_password"]) == "*MASKED*"


def test_a_secret_left_out_is_asked_for_on_a_terminal_and_missing_without_one() -> None:
    asked: list[str] = []
    resolved = resolve(_runbook(), {}, {}, lambda param: asked.append(param.name) or VALUE)
    assert asked == ["db_password"] and resolved.sources == {"db_password": "prompt"}
    with pytest.raises(InputError) as missing:
        resolve(_runbook(), {}, {}, None)
    assert "required secret parameter missing: add --secret db_password=env:VAR" in str(missing.value)


@pytest.mark.parametrize(
    ("given", "env", "says"),
    [
        (
            {"db_password": "env:NOPE"},
            {},
            "environment variable NOPE (named by --secret db_password=env:NOPE) is not set",
        ),
        ({"db_password": "env:EMPTY"}, {"EMPTY": ""}, "secret parameter db_password is empty"),
        ({"db_password": VALUE}, {}, "say where the secret is: --secret db_password=SOURCE"),
        ({"db_password": "prompt"}, {}, "there is no terminal to ask again"),
        ({"label": "env:X"}, {"X": "x"}, "'label' is not a secret parameter: give it with --param label=VALUE"),
        ({"nope": "env:X"}, {"X": "x"}, "secret-demo has no parameter 'nope' (secret parameters: db_password)"),
    ],
)
def test_bad_sources_say_what_to_give_and_never_echo_what_was_typed(
    given: dict[str, str], env: dict[str, str], says: str
) -> None:
    with pytest.raises(InputError) as error:
        resolve(_runbook(), given, env, None)
    assert says in str(error.value)
    _no_trace(str(error.value))


def test_a_secret_on_the_command_line_is_refused(cluster: Any, tmp_path: Path) -> None:
    _home(cluster, tmp_path)
    result = cluster.run("run", "secret-demo", "--param", f"db_password={VALUE}", "--dry-run", "--offline")
    assert result.returncode == exitcodes.PROBLEMS
    assert "'db_password' is a secret parameter" in result.stderr and "--secret db_password=env:VAR" in result.stderr
    _no_trace(result.stdout + result.stderr)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("    type: string\n    secret: true\n    default: hunter2\n", "a secret parameter has no default"),
        ("    type: integer\n    secret: true\n", "a secret parameter is a string (got type 'integer')"),
    ],
)
def test_a_secret_parameter_written_wrong_is_located(spec: str, says: str) -> None:
    text = RUNBOOK.replace("    type: string\n    secret: true\n", spec, 1)
    with pytest.raises(InputError) as error:
        _runbook(text)
    assert says in str(error.value) and "runbooks/secret-demo.md:" in str(error.value)


# ------------------------------------------------------------------------------------------ running


def test_the_value_reaches_the_commands_and_no_output_or_record(cluster: Any, tmp_path: Path) -> None:
    out = _home(cluster, tmp_path)
    env = {"DB_PW": VALUE}
    plan = cluster.run("run", "secret-demo", "--secret", "db_password=env:DB_PW", "--dry-run", extra_env=env)
    assert plan.returncode == 0, plan.stderr
    assert "*MASKED*" in plan.stdout and "db_password from env:DB_PW" in plan.stdout
    as_json = cluster.run(
        "run", "secret-demo", "--secret", "db_password=env:DB_PW", "--dry-run", "--json", extra_env=env
    )
    assert json.loads(as_json.stdout)["secret_parameters"] == {"db_password": "env:DB_PW"}
    saved = tmp_path / "plan.json"
    cluster.run(
        "run", "secret-demo", "--secret", "db_password=env:DB_PW", "--dry-run", "--out", str(saved), extra_env=env
    )
    cluster.outputs.append(saved.read_text())

    run = cluster.run("run", "secret-demo", "--secret", "db_password=env:DB_PW", "--yes", extra_env=env)
    assert run.returncode == 0, run.stderr
    assert out.read_text().strip() == hashlib.sha256(VALUE.encode()).hexdigest(), "the command got the real value"
    run_json = next((cluster.home / ".runbook").rglob("run.json"))
    shown = cluster.run("runs", "show", run_json.parent.name, "--json")
    assert shown.returncode == 0, shown.stderr
    assert "password=*MASKED*" in shown.stdout, "what the careless step printed is kept, masked"
    assert json.loads(run_json.read_text())["secret_parameters"] == {"db_password": "env:DB_PW"}
    _no_trace(cluster.every_byte())


def test_a_resume_reads_the_secret_again_from_where_it_came(cluster: Any, tmp_path: Path) -> None:
    _home(cluster, tmp_path)
    runbook = cluster.home / "runbooks" / "secret-demo.md"
    text = runbook.read_text()
    runbook.write_text(text.replace("printf 'node sees %s\\n'", "false; printf 'node sees %s\\n'"))
    failed = cluster.run("run", "secret-demo", "--secret", "db_password=env:DB_PW", "--yes", extra_env={"DB_PW": VALUE})
    assert failed.returncode == exitcodes.FAILED
    run_id = next((cluster.home / ".runbook").rglob("run.json")).parent.name
    runbook.write_text(text)
    unset = cluster.run("resume", run_id, "--force", "--yes")
    assert unset.returncode == exitcodes.PROBLEMS
    assert "environment variable DB_PW (named by --secret db_password=env:DB_PW) is not set" in unset.stderr
    resumed = cluster.run("resume", run_id, "--force", "--yes", extra_env={"DB_PW": VALUE})
    assert resumed.returncode == 0, resumed.stderr
    _no_trace(cluster.every_byte())


def test_a_secret_from_pass_is_its_first_line(cluster: Any, tmp_path: Path) -> None:
    out = _home(cluster, tmp_path)
    cluster.store.insert("apps/db", [VALUE, "user: app"])
    run = cluster.run("run", "secret-demo", "--secret", "db_password=pass:apps/db", "--yes")
    assert run.returncode == 0, run.stderr
    assert out.read_text().strip() == hashlib.sha256(VALUE.encode()).hexdigest()
    missing = cluster.run("run", "secret-demo", "--secret", "db_password=pass:apps/nope", "--yes")
    assert missing.returncode == exitcodes.PROBLEMS
    assert "pass entry 'apps/nope' does not exist. Store it there: `pass insert apps/nope`" in missing.stderr
    _no_trace(cluster.every_byte())


def test_validate_accepts_a_runbook_with_a_secret_parameter(cluster: Any, tmp_path: Path) -> None:
    _home(cluster, tmp_path)
    result = cluster.run("validate")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_secret_input_layers_a_resume_s_sources_over_the_recorded_ones() -> None:
    layered = SecretInput({"a": "env:NEW"}).over({"a": "env:OLD", "b": "pass:x"})
    assert layered.sources == {"a": "env:NEW", "b": "pass:x"}
