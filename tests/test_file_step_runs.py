"""The ``file`` step in whole runs through the CLI: on the simulated cluster (a patch as a YAML
document, a secret file whose value is then grepped for in every output), its dry-run review as text
and JSON, and on the test cluster's real OpenSSH server (a file written on a node)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import yaml

from engine.load.home import Home

FILESTEP = Path(__file__).resolve().parent / "filestep"
#: Rendered from pieces, so the runbook's text never holds it whole: only a leak can show it.
SECRET_VALUE = "k8s-join-xxx-7d41c9e2a8f3b6"
SECRET_RUNBOOK = """---
name: file-secret
description: Keep a join token in a secret file, then read it back.
format: 2
requires: [profile]
---

## Folder

```local {id: folder, changes: [], check: "exists(talos_config_dir)"}
mkdir -p -m 700 {{ talos_config_dir }}
```

## The token, here and on a node

```file {id: token, path: "{{ talos_config_dir }}/join.yaml", secret: true}
cluster:
  token: {{ 'k8s-join-' ~ ('x' * 3) ~ '-7d41c9e2a8f3b6' }}
```

```file {id: snippet, node: pve01, path: /var/lib/vz/snippets/join.yaml, secret: true, mode: "0640"}
token: {{ 'k8s-join-' ~ ('x' * 3) ~ '-7d41c9e2a8f3b6' }}
```

## Read it back

```local {id: show_token, readonly: true}
cat {{ talos_config_dir }}/join.yaml
grep token {{ talos_config_dir }}/join.yaml | cut -d' ' -f4
```
"""


def home_with(make_home: Any, **runbooks: str) -> Home:
    files = {f"runbooks/{name}.md": text for name, text in runbooks.items()}
    files["runbooks/talos-node-patches.md"] = (FILESTEP / "talos-node-patches.md").read_text()
    return make_home(files, runbooks=False)


def everything(home: Home, *outputs: str) -> str:
    """Every output given, and every file under the home's state folder (journals, the simulation's
    state), but the secret file the runbook writes there itself."""
    texts = list(outputs)
    for path in (home.root / ".runbook").rglob("*"):
        if path.is_file() and path.name != "join.yaml":
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def run(cli: Any, home: Home, name: str, *extra: str) -> Any:
    return cli("--home", str(home.root), "run", name, "--profile", "talos-staging", "--simulate", *extra)


def test_talos_patches_are_yaml_documents_written_once(cli: Any, make_home: Any) -> None:
    home = home_with(make_home)
    assert cli("--home", str(home.root), "validate").exit_code == 0  # every profile, the non-Talos ones too
    first = run(cli, home, "talos-node-patches")
    assert first.exit_code == 0, first.output
    patches = sorted((home.root / ".runbook" / "sim" / "talos" / "talos-staging" / "patches").iterdir())
    assert [p.name for p in patches] == ["stg-cp01.yaml", "stg-cp02.yaml", "stg-cp03.yaml"]
    patch = yaml.safe_load(patches[0].read_text())
    assert patch["machine"]["network"]["hostname"] == "stg-cp01"
    assert patch["machine"]["network"]["interfaces"][0]["addresses"] == ["10.20.0.31/24"]
    assert patch["machine"]["network"]["interfaces"][0]["vip"] == {"ip": "10.20.0.30"}
    assert patch["cluster"]["network"]["podSubnets"] == ["10.244.0.0/16"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in patches)

    again = run(cli, home, "talos-node-patches", "--json")
    final = json.loads(again.stdout.splitlines()[-1])
    steps = [s for s in final["steps"] if s["step"] == "patch"]
    assert [(s["status"], s["reason"], s["kind"]) for s in steps] == [("skipped", "already in place", "file")] * 3
    assert all(s["output"]["changed"] is False for s in steps)

    plan = json.loads(run(cli, home, "talos-node-patches", "--dry-run", "--json").stdout)
    assert not [c for c in plan["changes"] if c["resource"] == "file"]  # every patch holds this already


def test_the_review_shows_a_diff_of_a_changed_file(cli: Any, make_home: Any) -> None:
    home = home_with(make_home)
    assert run(cli, home, "talos-node-patches").exit_code == 0
    patch = home.root / ".runbook" / "sim" / "talos" / "talos-staging" / "patches" / "stg-cp02.yaml"
    patch.write_text(patch.read_text().replace("stg-cp02", "old-name"))
    shown = run(cli, home, "talos-node-patches", "--dry-run")
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert f"~ file {patch} (this machine)   (step patch[name=stg-cp02])" in text
    assert '-    hostname: "old-name"' in text and '+    hostname: "stg-cp02"' in text
    assert "Plan: 0 to create, 1 to change, 0 to destroy" in text
    plan = json.loads(run(cli, home, "talos-node-patches", "--dry-run", "--json").stdout)
    (change,) = [c for c in plan["changes"] if c["resource"] == "file"]
    assert change["action"] == "change" and change["id"] == str(patch)
    assert [f["name"] for f in change["fields"]] == ["sha256"]  # "old-name" is as long as "stg-cp02"


def test_bad_yaml_after_rendering_stops_before_writing(cli: Any, make_home: Any) -> None:
    broken = SECRET_RUNBOOK.replace("cluster:\n  token:", "cluster:\n token: [\n  token:")
    home = home_with(make_home, **{"file-secret": broken})
    result = run(cli, home, "file-secret")
    assert result.exit_code != 0
    assert (  # the line where the unclosed '[' opens
        "file-secret.md:18: step token: body: the rendered content is not valid YAML (line 2 of the content"
        in result.output
    )
    assert SECRET_VALUE not in everything(home, result.output)
    assert not (home.root / ".runbook" / "sim" / "talos" / "talos-staging" / "join.yaml").exists()


def test_a_secret_file_is_written_and_its_value_is_in_no_output(cli: Any, make_home: Any) -> None:
    home = home_with(make_home, **{"file-secret": SECRET_RUNBOOK})
    outputs = []
    plan = run(cli, home, "file-secret", "--dry-run", "--json")
    plan_text = run(cli, home, "file-secret", "--dry-run")
    outputs += [plan.stdout, plan.stderr, plan_text.output]
    assert plan.exit_code == 0 and plan_text.exit_code == 0, plan_text.output
    document = json.loads(plan.stdout)
    token = next(s for s in document["steps"] if s["step"] == "token")
    assert token["action"]["content"] is None and token["action"]["size"] == 46
    assert "(content not shown: secret)" in token["display"]
    files = {c["id"]: c for c in document["changes"] if c["resource"] == "file"}
    assert set(files) == {
        str(home.root / ".runbook/sim/talos/talos-staging/join.yaml"),
        "pve01:/var/lib/vz/snippets/join.yaml",
    }

    result = run(cli, home, "file-secret", "--json")
    outputs += [result.stdout, result.stderr]
    assert result.exit_code == 0, result.output
    written = home.root / ".runbook" / "sim" / "talos" / "talos-staging" / "join.yaml"
    assert written.read_text() == f"cluster:\n  token: {SECRET_VALUE}\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    final = json.loads(result.stdout.splitlines()[-1])
    shown = next(s for s in final["steps"] if s["step"] == "show_token")
    assert shown["output"]["stdout"].count("*MASKED*") == 2  # the file whole (cat), then the token alone (grep)

    state = json.loads((home.root / ".runbook" / "sim" / "state.json").read_text())
    snippet = state["files"]["pve01"]["/var/lib/vz/snippets/join.yaml"]
    assert snippet["mode"] == "640" and snippet["size"] == 35 and "text" not in snippet

    again = run(cli, home, "file-secret", "--json")
    outputs += [again.stdout, again.stderr]
    final = json.loads(again.stdout.splitlines()[-1])
    assert {s["step"]: s["status"] for s in final["steps"]}["snippet"] == "skipped"
    assert SECRET_VALUE not in everything(home, *outputs)


def test_a_file_on_a_node_over_the_real_ssh_server(cluster: Any, tmp_path: Path) -> None:
    target = tmp_path / "on-node"
    target.mkdir()
    (cluster.home / "runbooks" / "node-file.md").write_text(
        "---\nname: node-file\ndescription: a file on a node\nformat: 2\n---\n\n## Write it\n\n"
        f'```file {{id: conf, node: pve02, path: "{target}/app.json", mode: "0644"}}\n'
        '{"node": "{{ node_names[1] }}", "enabled": true}\n```\n'
    )
    first = cluster.run("run", "node-file", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads((target / "app.json").read_text()) == {"node": "pve02", "enabled": True}
    assert stat.S_IMODE((target / "app.json").stat().st_mode) == 0o644
    final = json.loads(first.stdout.splitlines()[-1])
    (step,) = final["steps"]
    assert step["status"] == "succeeded" and step["output"]["changed"] is True
    second = cluster.run("run", "node-file", "--json")
    (step,) = json.loads(second.stdout.splitlines()[-1])["steps"]
    assert (step["status"], step["reason"]) == ("skipped", "already in place")
    assert not [p for p in target.iterdir() if p.name.endswith(".tmp")]
