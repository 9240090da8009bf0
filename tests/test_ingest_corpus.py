"""Ingest measured on pages written like real ones: does the runbook do what the page meant, here?

Each page in tests/ingest_corpus/ (markdown, HTML or plain text, written for this test; no public
page is copied) reproduces a structure real how-to pages have: commands in prose, console prompts,
troubleshooting and reference sections, several example VMIDs, JSON answers with tickets, a ``cd``
that later blocks rely on, loops over curl. Beside it, ``NAME.expected.yaml`` says what an operator
would expect the ingested runbook to do on this cluster, written before the code that does it:

```yaml
page: one line, what the page is for
kind: procedure                  # or reference: said so, with a short proposal
profile: talos-staging           # the dry-run's --profile (optional)
params: {name: value}            # --param for the dry-run (required parameters)
secrets: {name: env:VAR}         # --secret for the dry-run; VAR is set to a throw-away value
before: [[cluster-create, talos-staging]]  # shipped runbooks run first on the simulated cluster
changes:                         # the dry-run's change set, in order: "ACTION RESOURCE ID"
  - create vm 1120               #   ("... ?" when it depends on run-time values; the home as <home>)
vms: [1120]                      # the only VMIDs anything in the runbook may name or touch
max_steps: 10                    # optional upper bound on steps
absent: [text]                   # never in the runbook, ingest's output or the dry-run's
said: [text]                     # ingest's output says each of these (case-insensitive)
```

The check is on the dry-run's change set on the simulated cluster, not on the generated text: the
measure is whether an operator would run the result after a short review.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.load.home import Home
from engine.runbook.validate import validate_home

CORPUS = Path(__file__).resolve().parent / "ingest_corpus"
PAGES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".md", ".html", ".txt")) if CORPUS.is_dir() else []
SECRET_VALUE = "corpus-throwaway-Secret-7f3a9c"  # what --secret env: variables hold in the dry-run

# Where a rendered step names a VM: API paths and bodies, qm/pct commands, volume names, talos-less guests.
_VMID_PLACES = (
    re.compile(r"/(?:qemu|lxc)/(\d+)\b"),
    re.compile(r"\"(?:vmid|newid)\"\s*:\s*\"?(\d+)"),
    re.compile(r"\b(?:vmid|newid)=(\d+)\b"),
    re.compile(r"\b(?:qm|pct)\s+[a-z-]+\s+(?:--?[a-z-]+\s+)*(\d+)\b"),
    re.compile(r"\b(?:qm|pct)\s+(?:clone|migrate)\s+\d+\s+(\d+)\b"),
    re.compile(r"\bvm-(\d+)-disk"),
    re.compile(r":(\d+)/(?:vm|base)-\d+"),
    re.compile(r"\bvzdump\s+(\d+)\b"),
)


def expected(page: Path) -> dict[str, Any]:
    path = page.with_name(page.stem + ".expected.yaml")
    assert path.is_file(), f"{page.name} has no {path.name}: write what the page means before ingesting it"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data.get("kind") in ("procedure", "reference"), path
    return data


def named_vmids(text: str) -> set[int]:
    """Every VMID a rendered step names, in the places a VMID is written."""
    return {int(m) for pattern in _VMID_PLACES for m in pattern.findall(text)}


def change_line(change: dict[str, Any], home: Path) -> str:
    """``ACTION RESOURCE ID`` (`` ?`` when it depends on run-time values); the test's home shown as <home>."""
    line = f"{change['action']} {change['resource']} {change['id']}".replace(str(home), "<home>")
    return line + " ?" if change.get("when") else line


def test_the_corpus_is_large_enough() -> None:
    kinds = {p.suffix for p in PAGES}
    assert len(PAGES) >= 8 and {".md", ".html"} <= kinds, [p.name for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_a_page_ingests_into_what_it_meant(
    page: Path, cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path
) -> None:
    want = expected(page)
    home = make_home(runbooks=True)
    name = "ingested-" + re.sub(r"[^a-z0-9]+", "-", page.stem.lower()).strip("-")
    env = {"HOME": str(tmp_path), "CORPUS_SECRET": SECRET_VALUE}
    outputs: list[str] = []

    def run(*args: str) -> Any:
        result = cli("--home", str(home.root), *args, env=env)
        outputs.append(result.stdout + "\n" + result.stderr)
        return result

    made = run("ingest", str(page), "--name", name, "--yes")
    assert made.exit_code == 0, made.stdout + made.stderr
    said = made.stdout + made.stderr
    for words in want.get("said", []):
        assert words.lower() in said.lower(), f"{page.name}: ingest did not say {words!r}:\n{said}"
    text = (home.runbooks_dir / f"{name}.md").read_text(encoding="utf-8")
    report = validate_home(home, [home.runbooks_dir / f"{name}.md"])
    assert report.ok, [str(p) for p in report.problems]

    for runbook, profile in want.get("before", []):
        args = ["run", runbook, "--simulate", "--yes"] + (["--profile", profile] if profile else [])
        assert run(*args).exit_code == 0, outputs[-1]
    args = ["run", name, "--simulate", "--dry-run", "--json"]
    if want.get("profile"):
        args += ["--profile", want["profile"]]
    for key, value in (want.get("params") or {}).items():
        args += ["--param", f"{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"]
    for key, source in (want.get("secrets") or {}).items():
        args += ["--secret", f"{key}={source}"]
    review = run(*args)
    assert review.exit_code == 0, f"{page.name}: dry-run failed:\n{review.stdout}\n{review.stderr}\n\n{text}"
    data = json.loads(review.stdout)

    changes = [change_line(c, home.root) for c in data["changes"]]
    assert changes == want.get("changes", []), f"{page.name}: the review's change set\n\n{text}"
    meant = set(want.get("vms", []))
    touched = {
        int(str(c["id"]).split("/")[0]) for c in data["changes"] if c["resource"] in ("vm", "container", "guest")
    }
    assert touched <= meant, f"{page.name}: the review touches VMs the page did not mean: {touched - meant}"
    for step in data["steps"]:
        shown = json.dumps(step["action"]) + "\n" + (step.get("display") or "")
        stray = named_vmids(shown) - meant
        assert not stray, f"{page.name}: step {step['step']} names VMs {sorted(stray)} the page did not mean"
    if "max_steps" in want:
        assert len({s["step"] for s in data["steps"]}) <= want["max_steps"], f"{page.name}: too many steps"
    for secret in [*want.get("absent", []), SECRET_VALUE]:
        assert secret not in text, f"{page.name}: {secret!r} is in the runbook"
        for output in outputs:
            assert secret not in output, f"{page.name}: {secret!r} was printed"
