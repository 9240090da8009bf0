"""The plan and run pages (issue #7): the view model from the plan data, the escaped self-contained page,
and the page as headless Chromium parses it, for the talos-staging plan and for a failed run."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from engine.load.facts import ExistingVm, Facts
from engine.load.home import Home
from engine.report.html import plan_view, render_html, run_view
from engine.report.plantext import plan_json, plan_text
from engine.run.execution import plan_run
from engine.run.journal import RunMeta, RunRecord, load_run, new_run_id
from engine.run.runner import Runner
from engine.run.secrets import Secret
from engine.run.session import prepare
from engine.runbook.actions import ApiRequest, action_as_dict
from tests.conftest import REPO
from tests.support.cluster import SECRET, LiveCluster
from tests.support.tools import find_tool

NOW = datetime(2026, 11, 28, 14, 22, 33, tzinfo=UTC)
ARTIFACTS = REPO / "test-artifacts"
STAGING_TAGS = ("talos", "kubernetes", "staging", "controlplane")


class _Never:
    who = None

    def approve(self, entry: Any) -> bool:
        return False


def template_plan(home: Home, existing: tuple[ExistingVm, ...] = (), **params: str) -> dict[str, Any]:
    """The offline dry-run of the repository's _template runbook on talos-staging, as a view model."""
    session = prepare(home, "_template", "talos-staging", {"vmid": "1031", **params}, Facts(vms=existing))
    entries = Runner(session.runbook, session.context, executor=None, dry_run=True, approver=_Never()).run()
    return {
        "session": session,
        "entries": entries,
        "view": plan_view(session, entries, offline=True, who="ops@desk", now=NOW),
    }


def blocks_in_prose(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [segment["step"] for segment in view["prose"] if segment["step"]]


# ---------------------------------------------------------------- the view model


def test_every_step_sits_where_its_fence_stands_in_the_prose(repo_home: Home) -> None:
    view = template_plan(repo_home)["view"]
    assert view["title"] == "Runbook title"  # the first heading, lifted out of the prose
    assert view["description"].startswith("The standard runbook format")
    called = ["before." + s for s in ("vmid_range", "where", "existing", "too_old", "snapshot", "taken")]
    assert [b["id"] for b in blocks_in_prose(view)] == ["version", "where", *called, "stop", "note"]
    assert view["unplaced"] == []
    prose = [segment["html"] for segment in view["prose"] if segment["html"]]
    # Headings move down a level: the page's h1 is the title, and its h2 "Procedure" holds the prose.
    assert "<h1" not in "".join(prose) and "<h2" not in "".join(prose)
    assert "<h3>Check the API is reachable</h3>" in prose[0]
    assert "qm list" in prose[0]  # a fence of another language stays prose
    # Each step follows the prose that introduces it.
    order = [segment["step"]["id"] if segment["step"] else segment["html"] for segment in view["prose"]]
    assert "Stop the VM" in order[order.index("stop") - 1]


def test_the_page_data_is_the_plan_json_data(repo_home: Home) -> None:
    """Terminal, JSON and HTML come from the same entries, so they cannot disagree."""
    made = template_plan(repo_home, mode="force")
    view, session, entries = made["view"], made["session"], made["entries"]
    data = plan_json(session, entries, offline=True)
    shown = [
        (b["id"], e["status"], e["display"], e["gated"], e["gate_reasons"])
        for b in blocks_in_prose(view)
        for e in b["entries"]
    ]
    assert shown == [(s["step"], s["status"], s["display"] or "", s["gated"], s["gate_reasons"]) for s in data["steps"]]
    assert view["hashes"] == [{"name": k, "sha256": v, "note": ""} for k, v in data["hashes"].items()]
    assert view["parameters"] == [{"name": "vmid", "value": "1031"}, {"name": "mode", "value": "force"}]
    assert (view["profile"], view["cluster"], view["who"], view["when"]) == (
        "talos-staging",
        "lab",
        "ops@desk",
        "2026-11-28T14:22:33+00:00",
    )
    text = plan_text(session, entries, offline=True)
    labels = {e["label"] for b in blocks_in_prose(view) for e in b["entries"]}
    assert labels == {"would run", "depends on run-time values", "skipped"} and all(label in text for label in labels)
    assert view["summary"]["steps"] == data["counts"]["steps"] and view["summary"]["gated"] == 1


def test_gated_and_unknown_steps_are_marked(repo_home: Home) -> None:
    view = template_plan(repo_home)["view"]
    stop = next(b for b in blocks_in_prose(view) if b["id"] == "stop")
    assert stop["gated"] and stop["tone"] == "unknown" and stop["flags"] == ["destructive"]
    assert stop["guards"] == [{"name": "check", "value": "cluster.vms[vmid].status == 'stopped'"}]
    entry = stop["entries"][0]
    assert entry["status"] == "unknown" and "cluster.vms[1031].status" in entry["reason"]
    assert entry["gate_reasons"][0] == "marked destructive"
    html = render_html(view)
    article = re.search(r'<article class="step tone-unknown gated" id="step-stop".*?</article>', html, re.S)
    assert article and "Gated: needs approval" in article.group(0)
    assert "POST /nodes/(known after run: steps.where.node)/qemu/1031/status/shutdown" in article.group(0)


def test_nodes_side_by_side_with_new_and_existing_vms_apart(repo_home: Home) -> None:
    mine = ExistingVm(1031, "stg-cp01", "pve01", STAGING_TAGS)
    view = template_plan(repo_home, (mine,))["view"]
    nodes = {n["name"]: n for n in view["nodes"]}
    assert list(nodes) == ["pve01", "pve02", "pve03"]
    assert [vm["name"] for vm in nodes["pve01"]["existing"]] == ["stg-cp01"] and nodes["pve01"]["new"] == []
    assert nodes["pve01"]["adds"] == "adds nothing"
    cp2 = nodes["pve02"]["new"][0]
    assert (cp2["name"], cp2["vmid"], cp2["role"], cp2["cores"], cp2["memory_text"]) == (
        "stg-cp02",
        1032,
        "controlplane",
        4,
        "8 GiB",
    )
    assert nodes["pve02"]["capacity"] == "32 cores, 128 GiB" and nodes["pve02"]["adds"] == "adds 4 cores, 8 GiB"
    html = render_html(view)
    assert re.search(r'<ul class="vms existing">\s*<li class="vm existing" id="vm-1031">', html)


def test_a_runbook_without_a_profile_has_no_cluster_picture(make_home) -> None:
    home = make_home(
        {
            "runbooks/hello.md": "---\nname: hello\nformat: 2\ndescription: d\n---\n\nNo heading here.\n\n"
            "```local {id: hi}\necho hi\n```\n"
        }
    )
    outcome = plan_run(home, "hello", None, {}, offline=True, dispatcher=None)
    view = plan_view(outcome.session, outcome.entries, offline=True)
    assert view["nodes"] is None and view["title"] == "hello" and view["profile"] is None
    assert 'id="cluster"' not in render_html(view)


HOSTILE = """---
name: hostile
format: 2
description: "<script>alert('description')</script>"
---

# Title <img src=x onerror=alert(1)>

<script>alert('prose')</script>

<div onclick="alert(1)">raw html</div>

![a picture](https://example.com/tracker.png) and [a link](javascript:alert(1)).

## Step <b>bold</b>

```local {id: say, when: "'<b>' != ''"}
echo "<img src=x onerror=alert(2)>" '</pre></article><script>alert(3)</script>'
```
"""


def test_runbook_text_cannot_inject_markup_or_load_anything(make_home) -> None:
    home = make_home({"runbooks/hostile.md": HOSTILE})
    outcome = plan_run(home, "hostile", None, {}, offline=True, dispatcher=None)
    html = render_html(plan_view(outcome.session, outcome.entries, offline=True))
    assert "<script" not in html and "<img" not in html and "<div onclick" not in html and "<b>" not in html
    assert "<p>&lt;script&gt;alert('prose')&lt;/script&gt;</p>" in html  # shown as text, not run
    assert "&lt;script&gt;alert(&#39;description&#39;)&lt;/script&gt;" in html
    assert '<h1 id="title">Title &lt;img src=x onerror=alert(1)&gt;</h1>' in html
    assert 'href="javascript' not in html  # markdown-it refuses script links
    assert not re.search(r"<[^>]*\ssrc=", html)  # the picture is a link, never loaded
    assert html.count("</article>") == 1  # the step body could not close the block early


def test_the_page_is_self_contained(repo_home: Home) -> None:
    html = render_html(template_plan(repo_home, (ExistingVm(1031, "stg-cp01", "pve01", STAGING_TAGS),))["view"])
    assert html.startswith("<!DOCTYPE html>")
    for outside in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url(", "http://", "https://"):
        assert outside not in html, outside
    assert '<meta name="viewport"' in html and "@media print" in html and "@media (max-width" in html


def test_a_secret_in_the_page_data_is_refused_like_in_every_other_output(repo_home: Home) -> None:
    made = template_plan(repo_home)
    leaky = dataclasses.replace(made["session"], params={"vmid": 1031, "token": Secret(SECRET)})
    with pytest.raises(TypeError, match="html report.parameters.*Secret"):
        plan_view(leaky, made["entries"], offline=True)


def test_the_template_ships_inside_the_package() -> None:
    assert resources.files("engine").joinpath("templates", "plan.html.j2").is_file()


# ---------------------------------------------------------------- a recorded run


def record_failed_run(
    home: Home, error: str = "PVE says: can't lock file '/var/lock/qemu-server/lock-1031.conf'"
) -> str:
    """A run of _template that got past version and where, was approved at stop, and failed there."""
    session = prepare(home, "_template", "talos-staging", {"vmid": "1031"})
    hashes = session.hashes()
    run_id = new_run_id("_template", NOW)
    meta = RunMeta(
        run_id=run_id,
        runbook="_template",
        runbook_file="runbooks/_template.md",
        runbook_sha256=hashes["runbook"],
        profile="talos-staging",
        profile_file="clusters/talos-staging.yaml",
        profile_sha256=hashes["profile"],
        cluster_config_sha256=hashes["config"],
        parameters={"vmid": 1031, "mode": "graceful"},
        mode="run",
        started_at=NOW.isoformat(),
        who="ops@desk",
    )
    with RunRecord.create(home.state_dir, meta) as record:
        record.step_started("version", None, action_as_dict(ApiRequest("GET", "/version")))
        record.step_finished("version", None, {"version": "8.3"}, 0.12)
        record.step_started("where", None, action_as_dict(ApiRequest("GET", "/cluster/resources", {"type": "vm"})))
        record.step_finished("where", None, {"node": "pve01", "status": "running"}, 0.3)
        record.gate_waiting("stop", None)
        record.gate_approved("stop", None, by="lead@desk")
        record.step_started("stop", None, action_as_dict(ApiRequest("POST", "/nodes/pve01/qemu/1031/status/shutdown")))
        record.step_failed("stop", None, error, 2.5)
        record.run_finished("failed")
    return run_id


def test_a_failed_run_shows_its_failure_and_every_step(make_home) -> None:
    home = make_home()
    run_id = record_failed_run(home, error="lock <timeout> on 1031")
    view = run_view(home, load_run(home.state_dir, run_id), now=NOW)
    assert view["run"]["status"] == "failed"
    assert view["run"]["failed"] == [{"anchor": "step-stop", "which": "stop", "error": "lock <timeout> on 1031"}]
    steps = {b["id"]: b for b in blocks_in_prose(view)}
    assert [(e["status"], e["duration"]) for e in steps["version"]["entries"]] == [("succeeded", "0.1 s")]
    stop = steps["stop"]["entries"][0]
    assert (stop["status"], stop["label"], stop["error"], stop["duration"]) == (
        "failed",
        "FAILED",
        "lock <timeout> on 1031",
        "2.5 s",
    )
    assert stop["display"] == "POST /nodes/pve01/qemu/1031/status/shutdown"
    assert stop["gated"] and stop["gate_reasons"] == ["approved by lead@desk"]
    assert steps["note"]["entries"][0]["status"] == "not_reached"
    assert all(h["note"] == "unchanged since the run" for h in view["hashes"]) and view["notes"] == []
    assert (view["who"], view["when"], view["cluster"]) == ("ops@desk", NOW.isoformat(), "lab")
    html = render_html(view)
    banner = re.search(r'<section class="banner bad" id="run-status".*?</section>', html, re.S)
    assert banner and "Run FAILED" in banner.group(0) and "lock &lt;timeout&gt; on 1031" in banner.group(0)
    assert f"runbook resume {run_id}" in banner.group(0) and 'href="#step-stop"' in banner.group(0)


def test_a_run_page_says_when_the_runbook_changed_since(make_home) -> None:
    home = make_home()
    run_id = record_failed_run(home)
    path = home.runbooks_dir / "_template.md"
    path.write_text(path.read_text().replace("# Runbook title", "# Runbook title, edited"))
    view = run_view(home, load_run(home.state_dir, run_id))
    assert any("changed since this run started" in note for note in view["notes"])
    runbook_hash = next(h for h in view["hashes"] if h["name"] == "runbook")
    assert runbook_hash["note"].startswith("CHANGED since the run")
    path.unlink()
    gone = run_view(home, load_run(home.state_dir, run_id))
    assert any("is gone" in note for note in gone["notes"])
    assert [b["id"] for b in gone["unplaced"]] == ["version", "where", "stop"]  # listed without prose


def test_a_run_stopped_at_a_gate_says_which_step_waits(make_home) -> None:
    home = make_home()
    session = prepare(home, "_template", "talos-staging", {"vmid": "1031"})
    hashes = session.hashes()
    meta = RunMeta(
        run_id=new_run_id("_template", NOW),
        runbook="_template",
        runbook_file="runbooks/_template.md",
        runbook_sha256=hashes["runbook"],
        profile="talos-staging",
        profile_file=None,
        profile_sha256=hashes["profile"],
        cluster_config_sha256=hashes["config"],
        parameters={},
        mode="run",
        started_at=NOW.isoformat(),
    )
    with RunRecord.create(home.state_dir, meta) as record:
        record.step_skipped("version", None, "when_false")
        record.gate_waiting("stop", None)
        record.run_finished("stopped_at_gate")
    view = run_view(home, load_run(home.state_dir, meta.run_id))
    steps = {b["id"]: b["entries"][0] for b in blocks_in_prose(view)}
    assert (steps["version"]["status"], steps["version"]["reason"]) == ("skipped", "when is false")
    assert steps["stop"]["status"] == "stopped_at_gate" and steps["stop"]["gate_reasons"] == ["waiting for approval"]
    assert "Waiting for approval of <code>stop</code>" in render_html(view)


def test_a_plan_that_stopped_early_says_why(repo_home: Home) -> None:
    made = template_plan(repo_home)
    view = plan_view(
        made["session"],
        made["entries"][:1],
        offline=False,
        outcome=("failed", "a read-only step failed while planning: where: HTTP 500"),
    )
    html = render_html(view)
    assert "Planning stopped" in html and "where: HTTP 500" in html
    assert [b["entries"][0]["label"] for b in blocks_in_prose(view)][1:] == [
        "not planned (planning stopped before it)"
    ] * 9


# ---------------------------------------------------------------- the command line


def test_dry_run_html_writes_the_page_and_still_prints_the_plan(cli, tmp_path: Path) -> None:
    page = tmp_path / "plan.html"
    result = cli(
        "--home",
        str(REPO),
        "run",
        "_template",
        "--profile",
        "talos-staging",
        "--param",
        "vmid=1031",
        "--dry-run",
        "--offline",
        "--json",
        "--html",
        str(page),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runbook"] == "_template" and f"wrote {page}" in result.stderr
    assert 'id="step-stop"' in page.read_text()


def test_html_needs_dry_run_and_a_writable_path(cli, tmp_path: Path) -> None:
    result = cli("--home", str(REPO), "run", "_template", "--profile", "talos-staging", "--html", "x.html")
    assert result.exit_code == 2 and "--html only works with --dry-run" in result.stderr
    result = cli(
        "--home",
        str(REPO),
        "run",
        "_template",
        "--profile",
        "talos-staging",
        "--param",
        "vmid=1031",
        "--dry-run",
        "--offline",
        "--html",
        str(tmp_path / "no" / "such" / "dir" / "plan.html"),
    )
    assert result.exit_code == 2 and "cannot write" in result.stderr


def test_runs_show_html_writes_the_run_page(cli, make_home, tmp_path: Path) -> None:
    home = make_home()
    run_id = record_failed_run(home)
    page = tmp_path / "run.html"
    result = cli("--home", str(home.root), "runs", "show", run_id, "--html", str(page))
    assert result.exit_code == 0, result.output
    assert f"run {run_id}: _template" in result.stdout
    assert "Run FAILED" in page.read_text()


# ---------------------------------------------------------------- in a real browser


class Dom(HTMLParser):
    """The DOM Chromium dumped, as a light tree: ``find(id)`` and ``text(node)``."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root: dict[str, Any] = {"tag": "#root", "attrs": {}, "children": []}
        self.stack = [self.root]
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = {"tag": tag, "attrs": dict(attrs), "children": []}
        self.stack[-1]["children"].append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth]["tag"] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1]["children"].append(data)

    def all(self, node: dict[str, Any] | None = None):
        for child in (node or self.root)["children"]:
            if isinstance(child, dict):
                yield child
                yield from self.all(child)

    def find(self, element_id: str) -> dict[str, Any]:
        found = [n for n in self.all() if n["attrs"].get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def select(self, node: dict[str, Any], css_class: str) -> list[dict[str, Any]]:
        return [n for n in self.all(node) if css_class in (n["attrs"].get("class") or "").split()]

    BLOCKS = {
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "nav",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "table",
        "tr",
        "td",
        "th",
        "pre",
        "details",
        "summary",
    }

    @classmethod
    def text(cls, node: dict[str, Any]) -> str:
        """The element's text, block elements and table cells apart, whitespace collapsed (as innerText reads)."""
        parts: list[str] = []

        def walk(n: Any) -> None:
            if isinstance(n, str):
                parts.append(n)
            elif n["tag"] not in ("style", "head", "script"):
                gap = " " if n["tag"] in cls.BLOCKS else ""
                parts.append(gap)
                for child in n["children"]:
                    walk(child)
                parts.append(gap)

        walk(node)
        return " ".join("".join(parts).split())


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


@pytest.fixture
def chromium(tmp_path: Path):
    """Run Debian's headless Chromium on a local file, each time with a new empty profile."""
    binary = find_tool("chromium")
    runs = iter(range(1000))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        profile = tmp_path / f"chromium-profile-{next(runs)}"
        profile.mkdir()
        result = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    return run


def load(chromium, page: Path, name: str) -> Dom:
    """The page's DOM after Chromium parsed it, and screenshots (wide and phone) kept as test artifacts."""
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(page, ARTIFACTS / f"{name}.html")
    for suffix, size in (("", "1200,2000"), ("-phone", "390,2400")):
        shot = ARTIFACTS / f"{name}{suffix}.png"
        shot.unlink(missing_ok=True)
        chromium(f"--screenshot={shot}", f"--window-size={size}", page.as_uri())
        assert shot.stat().st_size > 10_000, f"{shot} is nearly empty"
    return Dom(chromium("--dump-dom", page.as_uri()).stdout)


def test_the_talos_staging_plan_in_a_browser(cluster: LiveCluster, chromium, tmp_path: Path) -> None:
    """The dry-run of e2e-create on talos-staging, planned against a cluster where stg-cp01 already is."""
    cluster.pve.do(
        cluster.pve.pve.add_vm,
        1031,
        "stg-cp01",
        node="pve01",
        config={"tags": ";".join(STAGING_TAGS), "cores": 4, "memory": 8192},
    )
    page = tmp_path / "plan.html"
    result = cluster.run("run", "e2e-create", "--profile", "talos-staging", "--dry-run", "--html", str(page))
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    cluster.outputs.append(html)  # the fixture scans every output for the token at the end, this page too
    assert SECRET not in html
    dom = load(chromium, page, "talos-staging-plan")
    text = dom.text
    assert text(dom.find("title")) == "Create the profile's VMs (test)"
    assert (
        text(dom.find("description")) == "End-to-end test procedure touching every step kind against the test cluster."
    )
    assert text(dom.find("meta-profile")) == "talos-staging" and text(dom.find("meta-cluster")) == "lab"
    assert "@" in text(dom.find("meta-who")) and text(dom.find("meta-when")).startswith(str(datetime.now().year))
    runbook_sha = __import__("hashlib").sha256((cluster.home / "runbooks" / "e2e-create.md").read_bytes()).hexdigest()
    assert text(dom.find("hash-runbook")) == f"runbook {runbook_sha}"
    pve01, pve02 = dom.find("node-pve01"), dom.find("node-pve02")
    assert [text(vm) for vm in dom.select(pve01, "existing") if vm["tag"] == "li"] == [
        "stg-cp01 VMID 1031 · controlplane 4 cores · 8 GiB · 100G · 10.20.0.31"
    ]
    assert not [vm for vm in dom.select(pve01, "new") if vm["tag"] == "li"]
    assert [text(vm) for vm in dom.select(pve02, "new") if vm["tag"] == "li"] == [
        "stg-cp02 VMID 1032 · controlplane 4 cores · 8 GiB · 100G · 10.20.0.32"
    ]
    clone = dom.find("step-clone")
    entries = [text(e) for e in dom.select(clone, "entry")]
    assert entries[0].startswith("skipped name=stg-cp01 check is true: already in place")
    assert entries[1].startswith("would run name=stg-cp02") and "POST /nodes/pve01/qemu/101/clone" in entries[1]
    assert text(dom.select(dom.find("step-version"), "badge")[0]) == "ran (read-only)"
    assert "talosctl --nodes 10.20.0.31 health --wait-timeout 1m" in text(dom.find("step-health"))
    # Steps sit in the prose, in runbook order, after their headings.
    procedure = text(dom.find("procedure"))
    assert procedure.index("Clone each VM") < procedure.index("api clone") < procedure.index("Size and tag each VM")


def test_a_failed_run_page_in_a_browser_shows_the_failure(cluster: LiveCluster, chromium, tmp_path: Path) -> None:
    cluster.pve.do(cluster.pve.pve.fail, "PUT", "/qemu/1032/config", error="config_lock_timeout", times=1)
    failed = cluster.run("run", "e2e-create", "--profile", "talos-staging", "--json")
    assert failed.returncode == 5
    run_id = json.loads(failed.stdout.splitlines()[-1])["run_id"]
    page = tmp_path / "run.html"
    shown = cluster.run("runs", "show", run_id, "--html", str(page))
    assert shown.returncode == 0, shown.stderr
    html = page.read_text()
    cluster.outputs.append(html)
    assert SECRET not in html
    dom = load(chromium, page, "talos-staging-failed-run")
    status = Dom.text(dom.find("run-status"))
    assert status.startswith("Run FAILED Step configure[name=stg-cp02] failed:") and "can't lock file" in status
    assert f"runbook resume {run_id}" in status
    configure = dom.find("step-configure")
    states = [(e["attrs"]["data-status"], Dom.text(e)) for e in dom.select(configure, "entry")]
    assert [s for s, _ in states] == ["succeeded", "failed"]
    assert "can't lock file" in Dom.text(dom.select(configure, "error")[0])
    assert [Dom.text(e) for e in dom.select(dom.find("step-done"), "entry")] == ["not reached"]
    assert Dom.text(dom.find("meta-status")).startswith("FAILED at ")
