"""The ``runbook`` command line: thin click commands over the library beneath.

Each command finds the home, calls one library function, and prints its result for a human (a
table) or a script (``--json``). Errors a user can cause end as located one-line messages on
stderr with a documented exit code, never as a traceback: they are ``RunbookError``s
(``engine.errors``), which the command group catches once for every command (``_Group.invoke``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from . import exitcodes
from .errors import RunbookError
from .load.home import Home, HomeError, find_home
from .load.problems import InputError, Problem
from .report.table import Table
from .runbook.model import AREAS, Step


class _BadArgument(RunbookError):
    """An option or argument the command cannot use, in words click's own checks do not know."""

    exit_code = exitcodes.USAGE


class _NotConfirmed(RunbookError):
    """Nothing done: the command needs a yes, and there is no terminal to ask on and no --yes."""

    exit_code = exitcodes.GATE


class _UnusableConfig(InputError):
    """The home's cluster config has problems: for a command that needs it, the home is unusable."""

    exit_code = exitcodes.NO_HOME


HOME_KEY = "runbook.home"
EXAMPLE_NOTE = (
    "note: no runbook home here (no --home, no $RUNBOOK_HOME, no cluster-config.yaml in this folder or "
    "its parents): using the example home that ships with runbook. Its cluster is fictional, so it "
    "only runs with --simulate; point --home at your own home to act on your cluster."
)


def _home(ctx: click.Context) -> Home:
    home = find_home(ctx.find_root().meta.get(HOME_KEY))
    if home.example:
        click.echo(EXAMPLE_NOTE, err=True)
    return home


def _own_home(ctx: click.Context, doing: str) -> Home:
    """The home, refusing the example one: ``doing`` would contact a real cluster or write into the home."""
    return _not_example(_home(ctx), doing)


def _not_example(home: Home, doing: str) -> Home:
    if home.example:
        raise HomeError(
            f"{doing} needs your own runbook home, not the example: pass --home DIR, set RUNBOOK_HOME, or run "
            "from inside a folder holding cluster-config.yaml, clusters/ and runbooks/"
        )
    return home


def _remember_home(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().meta[HOME_KEY] = value


def _home_option() -> click.Option:
    return click.Option(
        ["--home"],
        type=click.Path(file_okay=False),
        expose_value=False,
        callback=_remember_home,
        help="Runbook home (folder with cluster-config.yaml, clusters/, runbooks/). "
        "Default: $RUNBOOK_HOME, else the current folder or a parent.",
    )


def _completion_home(ctx: click.Context) -> Home | None:
    try:
        return find_home(ctx.find_root().meta.get(HOME_KEY))
    except (HomeError, RuntimeError):
        return None


def _complete_runbooks(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    home = _completion_home(ctx)
    return [p.stem for p in home.runbook_paths() if p.stem.startswith(incomplete)] if home else []


def _complete_profiles(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    home = _completion_home(ctx)
    return [p.stem for p in home.profile_paths() if p.stem.startswith(incomplete)] if home else []


def _complete_runs(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    home = _completion_home(ctx)
    runs = home.state_dir / "runs" if home else None
    return sorted(p.name for p in runs.iterdir() if p.name.startswith(incomplete)) if runs and runs.is_dir() else []


class _Group(click.Group):
    """A command group whose commands all take the global options, before or after their own name,
    and end the same way on a ``RunbookError``.

    ``runbook --home X list`` and ``runbook list --home X`` mean the same; subgroups are of this
    class too (``group_class = type``), so ``runbook runs show ID --home X`` works as well.
    """

    group_class = type

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(param.name == "home" for param in cmd.params):
            cmd.params.append(_home_option())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a ``RunbookError`` prints its lines on stderr and exits with its code, as
        click does with its own ``ClickException``. Commands raise; none catches to print and exit."""
        try:
            return super().invoke(ctx)
        except RunbookError as exc:
            for line in exc.lines():
                click.echo(line, err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            # Not click's "Aborted!" and exit 1 (which means problems in a runbook): the documented 130.
            click.echo("\ninterrupted", err=True)
            sys.exit(exitcodes.INTERRUPTED)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@click.group(
    cls=_Group, epilog=exitcodes.HELP, context_settings={"help_option_names": ["-h", "--help"]}, params=[_home_option()]
)
@click.version_option(package_name="runbook", prog_name="runbook")
def main() -> None:
    """Run markdown runbooks against a Proxmox VE cluster.

    Without a home of your own, the example home that ships with runbook serves the library and
    --simulate runs. Shell completion: 'runbook completion bash|zsh|fish'.
    """


@main.command("list")
@click.option(
    "--area",
    type=click.Choice([a for a in AREAS if a != "other"]),
    help="Only the runbooks of one area (docs/operations.md lists the operations of each).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def list_cmd(ctx: click.Context, area: str | None, as_json: bool) -> None:
    """List the runbooks in runbooks/ by area, with their parameters."""
    from .runbook.parser import parse_runbook_file

    home = _home(ctx)
    runbooks, problems = [], []
    for path in home.runbook_paths():
        try:
            runbooks.append(parse_runbook_file(path, home.shown(path)))
        except InputError as exc:
            problems.append((home.shown(path), len(exc.problems)))
    order = list(AREAS)
    runbooks = sorted(
        (r for r in runbooks if area is None or r.area == area),
        key=lambda r: (order.index(r.area) if r.area in order else len(order), r.name),
    )
    if as_json:
        _emit_json(
            {
                "runbooks": [
                    {
                        "name": r.name,
                        "description": r.description,
                        "file": r.file,
                        "area": r.area,
                        "requires": list(r.requires),
                        "parameters": [p.as_dict() for p in r.parameters],
                    }
                    for r in runbooks
                ],
                "invalid": [{"file": f, "problems": n} for f, n in problems],
            }
        )
    else:
        table = Table("AREA", "NAME", "DESCRIPTION", "PARAMETERS", keep=2)
        shown = None
        for runbook in runbooks:
            params = ", ".join(
                f"{p.name}*" if p.required else f"{p.name}={json.dumps(p.default)}" for p in runbook.parameters
            )
            needs = ["--profile"] if runbook.needs_profile else []
            group = "" if runbook.area == shown else runbook.area  # the area once, above its runbooks
            shown = runbook.area
            table.add_row(group, runbook.name, runbook.description, "; ".join([*needs, *filter(None, [params])]) or "-")
        table.print()
        if runbooks:
            click.echo("\n* required parameter (no default)")
        for file, count in problems:
            click.echo(f"error: {file}: {count} problem(s); run 'runbook validate {file}'", err=True)
    if problems:
        sys.exit(exitcodes.PROBLEMS)


def _load_runbook(home: Home, name: str) -> tuple[Path, Any]:
    """A runbook by name or path, parsed; ``InputError`` with every problem when it is broken."""
    from .run.session import runbook_path
    from .runbook.parser import parse_runbook_file

    path = runbook_path(home, name)
    return path, parse_runbook_file(path, home.shown(path))


@main.command("show")
@click.argument("name", shell_complete=_complete_runbooks)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def show_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a parsed runbook: parameters, and each step with its source line."""
    _, runbook = _load_runbook(_home(ctx), name)
    if as_json:
        _emit_json(runbook.as_dict())
        return
    click.echo(f"{runbook.name}: {runbook.description}")
    click.echo(f"file: {runbook.file}")
    if runbook.needs_profile:
        click.echo("requires: --profile NAME")
    click.echo("\nparameters:" if runbook.parameters else "\nparameters: none")
    for param in runbook.parameters:
        default = (
            "secret: --secret NAME=env:VAR|pass:PATH, or asked"
            if param.secret
            else "required"
            if param.required
            else f"default {json.dumps(param.default)}"
        )
        extra = {k: v for k, v in param.spec.items() if k not in ("type", "description", "default")}
        constraints = " ".join(f"{k}={json.dumps(v)}" for k, v in extra.items())
        click.echo(
            f"  {param.name} ({param.type}, {default}{', ' + constraints if constraints else ''})"
            f"  [line {param.line}]\n      {param.description}"
        )
    click.echo(f"\nsteps ({len(runbook.steps)}):")
    for number, step in enumerate(runbook.steps, 1):
        attrs = {k: v for k, v in step.attrs.items() if k != "id"}
        id_note = "" if step.id_given else " (id derived from heading)"
        click.echo(f"\n  {number}. [{step.kind}] {step.id}{id_note}  line {step.line}")
        if step.title:
            click.echo(f"     title: {step.title}")
        if attrs:
            click.echo(f"     attributes: {json.dumps(attrs)}")
        inherited = _from_headings(step)
        if inherited:
            click.echo(f"     from headings: {inherited}")
        for body_line in step.body.rstrip("\n").splitlines():
            click.echo(f"     | {body_line}")


def _from_headings(step: Step) -> str:
    """Which of a step's attributes its headings gave, with each heading's line: ``timeout (line 8); when ...``."""
    parts = [f"{name} (line {line})" for name, line in step.inherited().items() if name != "when"]
    inherited_when = [c for c in step.conditions if c.line != step.line]
    if inherited_when:
        parts.append("when " + " and ".join(f"{json.dumps(c.expression)} (line {c.line})" for c in inherited_when))
    return "; ".join(parts)


@main.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def validate_cmd(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Check runbooks, cluster-config.yaml and profiles; report every problem.

    With no PATHS, checks the whole home. PATHS may be runbook files, profile files,
    the cluster config, or folders.
    """
    from .runbook.validate import validate_home

    home = _home(ctx)
    report = validate_home(home, list(paths) or None)
    if as_json:
        _emit_json(report.as_dict())
    else:
        for problem in report.problems:
            click.echo(str(problem))
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
        files = {p.file for p in report.problems}
        if report.ok:
            warned = f", {len(report.warnings)} warning(s)" if report.warnings else ""
            click.echo(f"ok: {len(report.checked)} files checked, no problems{warned}")
        else:
            click.echo(
                f"\n{len(report.problems)} problem(s) in {len(files)} file(s) ({len(report.checked)} files checked)",
                err=True,
            )
    sys.exit(exitcodes.OK if report.ok else exitcodes.PROBLEMS)


@main.group("profiles", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def profiles_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the cluster profiles in clusters/ (see 'profiles show NAME')."""
    if ctx.invoked_subcommand is not None:
        return
    from .load.profiles import load_profiles

    home = _home(ctx)
    config = _config_or_fail(home)
    profiles, problems = load_profiles(home, config)
    if as_json:
        _emit_json(
            {
                "profiles": [_profile_summary(p.data, p.file) for p in profiles],
                "problems": [p.as_dict() for p in problems],
            }
        )
    else:
        table = Table("NAME", "TYPE", "CONTROL PLANES", "WORKERS", "TEMPLATE", "TAGS", keep=5)
        for profile in profiles:
            row = _profile_summary(profile.data, profile.file)
            table.add_row(
                row["name"],
                row["type"],
                str(row["controlplanes"]),
                str(row["workers"]),
                str(row["template"]),
                ", ".join(row["tags"]),
            )
        table.print()
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
    if problems:
        sys.exit(exitcodes.PROBLEMS)


@profiles_cmd.command("new")
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(["generic", "talos"]), default="generic", show_default=True)
@click.option("--description", default="", help="One line saying what the cluster is for.")
@click.option("--controlplanes", type=click.IntRange(0, 100), help="Control-plane VMs (default: talos 3, generic 1).")
@click.option("--workers", type=click.IntRange(0, 100), help="Worker VMs (default: talos 0, generic 2).")
@click.option("--cores", type=click.IntRange(1, 512), default=2, show_default=True, help="vCPUs of each VM.")
@click.option("--memory", type=click.IntRange(16), default=4096, show_default=True, help="Memory of each VM in MB.")
@click.option("--disk", default="32G", show_default=True, help="Disk of each VM, like 32G.")
@click.option("--placement", type=click.Choice(["spread", "pack"]), default="spread", show_default=True)
@click.option("--template", type=int, help="VMID of the template to clone (default: the one your profiles use).")
@click.option("--start-vmid", type=int, help="First VMID (default: after every other profile's).")
@click.option("--tag", "tags", multiple=True, help="A tag every VM carries; repeatable (default: NAME).")
@click.option("--ip", "first_ip", metavar="ADDRESS", help="First VM's address; the others follow it.")
@click.option("--gateway", metavar="ADDRESS")
@click.option("--prefix-length", type=click.IntRange(1, 128))
@click.option("--nameserver", "nameservers", multiple=True, metavar="ADDRESS", help="Repeatable.")
@click.option("--vip", metavar="ADDRESS", help="Talos: the control plane's virtual IP (the API endpoint).")
@click.option("-i", "--interactive", is_flag=True, help="Ask for each value, the flags' values as defaults.")
@click.pass_context
def profiles_new_cmd(ctx: click.Context, name: str, interactive: bool, **given: Any) -> None:
    """Write clusters/NAME.yaml, a new profile, from flags or (with -i) questions. It is checked as
    'runbook validate' checks profiles (names, VMIDs and addresses clear of your other profiles)
    and written only when it passes.
    """
    from .init.newprofile import Answers, defaults, write

    home = _own_home(ctx, "runbook profiles new")
    config = _config_or_fail(home)
    start, template = defaults(home, config)
    answers = Answers(
        name=name,
        type=given["kind"],
        description=given["description"],
        controlplanes=given["controlplanes"],
        workers=given["workers"],
        cores=given["cores"],
        memory=given["memory"],
        disk=given["disk"],
        placement=given["placement"],
        template=given["template"] if given["template"] is not None else template,
        start_vmid=given["start_vmid"] if given["start_vmid"] is not None else start,
        tags=list(given["tags"]),
        first_ip=given["first_ip"],
        gateway=given["gateway"],
        prefix_length=given["prefix_length"],
        nameservers=list(given["nameservers"]),
        vip=given["vip"],
    )
    if interactive:
        _ask_profile(answers)
    missing = [flag for flag, value in (("--template VMID", answers.template),) if value is None]
    if answers.type == "talos":  # the Talos runbooks give every node a static address
        if answers.prefix_length is None:
            answers.prefix_length = 24
        missing += [
            flag
            for flag, value in (
                ("--vip ADDRESS", answers.vip),
                ("--ip ADDRESS", answers.first_ip),
                ("--gateway ADDRESS", answers.gateway),
            )
            if not value
        ]
    if missing:
        raise _BadArgument(f"profiles new {name} needs {' and '.join(missing)} (or -i to be asked)")
    path, data = write(home, config, answers)
    nodes = data["nodes"]
    click.echo(
        f"wrote {home.shown(path)}: {nodes['controlplane']['count']} control plane(s), "
        f"{nodes['workers']['count']} worker(s) from template {data['template']}, tags {', '.join(data['tags'])}"
    )
    click.echo(f"next: runbook run cluster-create --profile {name} --dry-run")


def _ask_profile(answers: Any) -> None:
    """Ask for each value on the terminal, what is known so far as the default."""
    ask = click.prompt
    answers.type = ask("type", default=answers.type, type=click.Choice(["generic", "talos"]), err=True)
    talos = answers.type == "talos"
    answers.controlplanes = ask(
        "control-plane VMs", default=answers.controlplanes or (3 if talos else 1), type=click.IntRange(0, 100), err=True
    )
    answers.workers = ask(
        "worker VMs",
        default=answers.workers if answers.workers is not None else (0 if talos else 2),
        type=int,
        err=True,
    )
    answers.cores = ask("vCPUs per VM", default=answers.cores, type=click.IntRange(1, 512), err=True)
    answers.memory = ask("memory per VM (MB)", default=answers.memory, type=click.IntRange(16), err=True)
    answers.disk = ask("disk per VM", default=answers.disk, err=True)
    answers.placement = ask("placement", default=answers.placement, type=click.Choice(["spread", "pack"]), err=True)
    answers.template = ask("template VMID", default=answers.template, type=int, err=True)
    answers.start_vmid = ask("first VMID", default=answers.start_vmid, type=int, err=True)
    answers.tags = ask("tags (comma-separated)", default=",".join(answers.tags or [answers.name]), err=True).split(",")
    answers.tags = [tag.strip() for tag in answers.tags if tag.strip()]
    answers.first_ip = ask("first VM's address (empty: DHCP)", default=answers.first_ip or "", err=True) or None
    if answers.first_ip:
        answers.gateway = ask("gateway", default=answers.gateway or "", err=True) or None
        answers.prefix_length = ask("prefix length", default=answers.prefix_length or 24, type=int, err=True)
    if talos:
        answers.vip = ask("control-plane VIP", default=answers.vip, err=True)


def _profile_summary(data: dict[str, Any], file: str) -> dict[str, Any]:
    nodes = data["nodes"]
    return {
        "name": data["name"],
        "type": data["type"],
        "file": file,
        "controlplanes": nodes["controlplane"]["count"],
        "workers": (nodes.get("workers") or {}).get("count", 0),
        "template": data["template"],
        "tags": list(data["tags"]),
    }


def _config_or_fail(home: Home) -> Any:
    """The home's cluster config; its problems end the command with exit 3 (no usable home), not 1."""
    from .load.config import load_config

    try:
        return load_config(home)
    except InputError as exc:
        raise _UnusableConfig(exc.problems) from exc


@profiles_cmd.command("show")
@click.argument("name", shell_complete=_complete_profiles)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def profiles_show_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one profile and its computed plan (every VM: name, role, VMID, node, size, tags)."""
    from .load.profiles import load_profile

    home = _home(ctx)
    config = _config_or_fail(home)
    profile = load_profile(home, name, config)
    plan = profile.plan(config)
    if as_json:
        _emit_json({"profile": profile.data, "file": profile.file, "plan": plan.as_dict()})
        return
    data = profile.data
    click.echo(f"{data['name']} ({data['type']}): {data.get('description', '').strip() or profile.file}")
    click.echo(f"file: {profile.file}")
    click.echo(f"template: VMID {data['template']}   tags: {', '.join(data['tags'])}")
    net = data.get("network") or {}
    shown = [f"pods {net['pod_cidr']}"] if "pod_cidr" in net else []
    shown += [f"services {net['service_cidr']}"] if "service_cidr" in net else []
    shown += [f"API endpoint {net['api_endpoint']}"] if net.get("api_endpoint") else []
    if shown:
        click.echo(f"network: {', '.join(shown)}")
    if data.get("talos"):
        talos = data["talos"]
        click.echo(
            f"talos: {talos['version']}, kubernetes {talos['kubernetes_version']}, "
            f"VIP {talos['vip']['ip']} on {talos['vip']['interface']}, "
            f"schematic {talos['factory']['schematic_id'][:12]}..."
        )
    if data.get("flux"):
        flux = data["flux"]
        click.echo(f"flux: {flux['repo']} path {flux['path']} branch {flux.get('branch', 'main')}")
    table = Table(
        "NAME",
        "ROLE",
        "VMID",
        "NODE",
        "IP",
        "CORES",
        "MEMORY",
        "DISK",
        "TAGS",
        keep=8,
        title="plan (without cluster state: VMIDs in use are rechecked at run time)",
    )
    for vm in plan.vms:
        table.add_row(
            vm.name,
            vm.role,
            str(vm.vmid),
            vm.node,
            vm.ip or "dhcp",
            str(vm.cores),
            f"{vm.memory} MB",
            vm.disk,
            ";".join(vm.tags),
        )
    click.echo()
    table.print()


class _Approver:
    """Approves gates from --yes/--approve, else asks on a terminal; never assumes yes without one.

    ``ahead`` is shown the gates a run will meet before its first change (``engine.run.upfront``):
    on a terminal it asks for each one not approved yet, once; the steps approved there run without
    a second question. Without a terminal it only names them, and returns those left unapproved,
    which refuses the run before it changes anything.
    """

    def __init__(self, yes: bool, approve: tuple[str, ...], interactive: bool):
        self.yes = yes
        self.ids = set(approve)
        self.ahead_ids: set[str] = set()  # approved at the terminal before the run started
        self.interactive = interactive
        self.who: str | None = None

    def ahead(self, gates: list[Any], heading: str) -> list[Any]:
        click.echo(f"{heading}:", err=True)
        for gate in gates:
            given = " (approved: --yes)" if self.yes else (" (approved: --approve)" if gate.step in self.ids else "")
            mark = "  gate: " if gate.certain else "  may need approval (known only at run time): "
            click.echo(f"{mark}{gate.describe()}{given}", err=True)
        waiting = [gate for gate in gates if gate.certain and not self.yes and gate.step not in self.ids]
        if not waiting or not self.interactive:
            return waiting
        refused = []
        for gate in waiting:
            click.echo(f"\nGATE: {gate.describe()}", err=True)
            for shown in gate.shown:
                for line in shown.splitlines():
                    click.echo(f"    | {line}", err=True)
            try:
                approved = click.confirm(f"Approve gate '{gate.step}' for this run?", default=False, err=True)
            except (click.Abort, EOFError):
                approved = False
            if approved:
                self.ahead_ids.add(gate.step)
            else:
                refused.append(gate)
                break  # one "no" ends the run before it starts; no need to ask for the rest
        return refused

    def approve(self, entry: Any) -> bool:
        from .run.journal import current_who

        keys = {entry.step_id, f"{entry.step_id}[{entry.item_key}]", entry.label}
        if self.yes or keys & self.ids:
            self.who = f"{current_who()} via {'--yes' if self.yes else '--approve'}"
            return True
        if entry.step_id in self.ahead_ids:
            self.who = f"{current_who()} at the terminal, before the run"
            return True
        if not self.interactive:
            return False
        click.echo(
            f"\nGATE: {entry.label} ({'; '.join(entry.gate_reasons)})",
            err=True,
        )
        for line in entry.display.splitlines():
            click.echo(f"    | {line}", err=True)
        self.who = f"{current_who()} at the terminal"
        try:
            return click.confirm("Run this step?", default=False, err=True)
        except (click.Abort, EOFError, KeyboardInterrupt):
            # End of input or Ctrl-C at the question is a "no": stop before the gate, resumably.
            click.echo("", err=True)
            return False


class _Interrupted(RunbookError):
    """Ctrl-C or SIGTERM before a run was made (while reading the cluster, planning, asking): nothing changed."""

    exit_code = exitcodes.INTERRUPTED


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM during a run: both interrupt the main thread (``KeyboardInterrupt``), which
    ends the run as interrupted (exit 130, its id and resume command printed) once the steps running
    on worker threads have finished theirs; a second one stops that wait. Before a run exists, the
    interruption ends the command with nothing changed."""
    import signal

    presses = 0

    def interrupt(_signum: int, _frame: Any) -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            try:
                click.echo(
                    "\ninterrupted: stopping; steps running on worker threads finish theirs first "
                    "(Ctrl-C again to stop at once)",
                    err=True,
                )
            except (OSError, RuntimeError):  # stderr was being written when the signal came
                pass
        raise KeyboardInterrupt

    before = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        raise _Interrupted("interrupted before any step ran: nothing was changed") from None
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def _params(items: tuple[str, ...]) -> dict[str, str]:
    given: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _BadArgument(f"--param {item!r}: write KEY=VALUE")
        given[key.strip()] = value
    return given


_SECRET_HELP = (
    "Where a secret parameter's value is: env:VAR or pass:PATH (never the value itself); repeatable. "
    "Left out on a terminal, it is asked without echo."
)


def _secrets(items: tuple[str, ...], interactive: bool) -> Any:
    """``--secret NAME=SOURCE`` values, and a hidden prompt for the rest when on a terminal."""
    from .run.secretparams import SecretInput, split_sources

    given: dict[str, str] = {}
    for item in items:
        key, sep, source = item.partition("=")
        if not sep or not key.strip():
            raise _BadArgument(f"--secret {key.strip() or '?'}: write NAME=env:VAR or NAME=pass:PATH")
        given[key] = source

    def ask(param: Any) -> str:
        return str(click.prompt(f"{param.name} ({param.description})", hide_input=True, err=True))

    return SecretInput(split_sources(given), ask if interactive else None)


def _finish(outcome: Any, as_json: bool) -> None:
    for warning in outcome.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not as_json and outcome.run_id and outcome.entries and outcome.session is not None:
        from .report.summary import summary_lines

        for line in summary_lines(outcome.session.runbook, outcome.entries, outcome.changes):
            click.echo(line, err=True)
    if as_json:
        from .report.jsonformat import finished

        # The last line of the JSON-lines stream the progress events started.
        click.echo(
            json.dumps(
                finished(
                    outcome.status,
                    outcome.exit_code,
                    outcome.run_id,
                    outcome.message,
                    outcome.entries,
                    outcome.warnings,
                ),
                default=str,
            )
        )
    elif outcome.status == "succeeded":
        click.echo(outcome.message)
    elif outcome.status == "interrupted":
        click.echo(outcome.message, err=True)
    else:
        click.echo(f"{'error' if outcome.exit_code else 'note'}: {outcome.message}", err=True)
    sys.exit(outcome.exit_code)


@contextmanager
def _executors(home: Home, config: Any, simulate: bool) -> Iterator[Any]:
    """The dispatcher for this invocation: the real cluster's, or a simulated cluster's."""
    from .run.dispatch import Dispatcher

    if not simulate:
        dispatcher = Dispatcher(config.data, home.root)
        try:
            yield dispatcher
        finally:
            dispatcher.close()
        return
    from .run.runlock import LockHeld
    from .sim.wiring import Simulation

    try:
        simulation = Simulation(home, config).__enter__()
    except LockHeld as exc:
        raise LockHeld(f"the simulated cluster is in use by another run: {exc}", exc.holder, exc.path) from exc
    try:
        click.echo(simulation.banner(), err=True)
        dispatcher = simulation.dispatcher()
        try:
            yield dispatcher
        finally:
            dispatcher.close()
    finally:
        simulation.close()


def _temporal_option(doing: str) -> Callable[[Any], Any]:
    """``--temporal ADDRESS`` for a command that reads or resumes runs on Temporal (saying what it does there)."""
    return click.option(
        "--temporal",
        "temporal_address",
        metavar="ADDRESS",
        help=f"Temporal's address (default: execution.temporal in cluster-config.yaml): {doing}. See docs/temporal.md.",
    )


@main.command("run")
@click.argument("name", shell_complete=_complete_runbooks)
@click.option(
    "--profile",
    "profile_name",
    metavar="PROFILE",
    shell_complete=_complete_profiles,
    help="Cluster profile (clusters/PROFILE.yaml).",
)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Runbook parameter; repeatable.")
@click.option("--secret", "secret_sources", multiple=True, metavar="NAME=SOURCE", help=_SECRET_HELP)
@click.option("--dry-run", is_flag=True, help="Show the plan: every step rendered; nothing is changed.")
@click.option("--offline", is_flag=True, help="With --dry-run: contact nothing, not even for read-only steps.")
@click.option(
    "--simulate",
    is_flag=True,
    help="Run against the embedded simulated cluster (kept in .runbook/sim/), not the real one.",
)
@click.option("--yes", is_flag=True, help="Approve every gate (destructive steps run without asking).")
@click.option("--approve", multiple=True, metavar="STEP", help="Approve the gate of one step id; repeatable.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON: the plan (dry-run); else JSON lines, one per event, the last one the report.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="With --dry-run: also write the plan as one self-contained HTML page for review.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="With --dry-run: save the reviewed plan, to run exactly it later with 'runbook apply PATH'.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    metavar="N",
    help="Run at most N items at once (steps with parallel, pipelines); 1 runs one at a time. "
    "Default: 16, and never more than a step's own parallel.",
)
@click.option(
    "--temporal",
    "temporal_address",
    metavar="HOST:PORT",
    help="Run on Temporal at this address (default: execution.temporal in cluster-config.yaml): the run "
    "is a workflow served by 'runbook worker'; this command follows it. See docs/temporal.md.",
)
@click.pass_context
def run_cmd(
    ctx: click.Context,
    name: str,
    profile_name: str | None,
    params: tuple[str, ...],
    secret_sources: tuple[str, ...],
    dry_run: bool,
    offline: bool,
    simulate: bool,
    yes: bool,
    approve: tuple[str, ...],
    as_json: bool,
    html_path: Path | None,
    out_path: Path | None,
    concurrency: int | None,
    temporal_address: str | None,
) -> None:
    """Run runbook NAME against the cluster (with --dry-run: show what it would do; with --out, save
    that plan for 'runbook apply').

    The gates it will meet (destructive steps, or marked confirm) are listed and asked on a terminal
    before the first change; without one the run refuses before changing anything (exit 4) unless
    --yes or --approve STEP approves them. Ctrl-C stops it (exit 130) and prints the resume command.
    """
    from .report.plantext import plan_json

    if dry_run:
        document: Callable[[RunbookError], dict[str, Any]] = lambda exc: plan_json(  # noqa: E731
            None, [], offline=offline, name=name, **_failure(exc)
        )
    else:
        document = _finished_event
    with _json_on_error(as_json, document, indent=dry_run):
        if offline and not dry_run:
            raise _BadArgument("--offline only makes sense with --dry-run")
        if out_path and (not dry_run or offline):
            raise _BadArgument(
                "--out saves a plan made against the live cluster (it records what the plan was checked "
                "against): use it with --dry-run, without --offline"
            )
        if html_path and not dry_run:
            raise _BadArgument(
                "--html only works with --dry-run; for a run, write its page afterwards: "
                "runbook runs show RUN_ID --html PATH"
            )
        home = _home(ctx) if simulate or (dry_run and offline) else _own_home(ctx, "a run against a real cluster")
        given = _params(params)
        config = _config_or_fail(home)
        on_temporal = None if dry_run else _temporal_settings(home, config, temporal_address)
        if on_temporal is not None:
            # Only where the secrets are (env:VAR, pass:PATH) travels: the worker reads their values.
            sources = dict(_secrets(secret_sources, interactive=False).sources)
            run = _TemporalRun(name, profile_name, given, simulate, yes, approve, concurrency)
            _finish(_run_on_temporal(config, on_temporal, run, sources, as_json), as_json)
            return
        if temporal_address is not None:
            raise _BadArgument("--temporal runs a run on Temporal: a dry-run is made here, without it")
        secrets = _secrets(secret_sources, sys.stdin.isatty() and not as_json)
        with _executors(home, config, simulate) as dispatcher:
            if dry_run:
                _dry_run(
                    home,
                    name,
                    profile_name,
                    given,
                    offline,
                    dispatcher,
                    html_path,
                    as_json,
                    out_path,
                    simulate,
                    secrets,
                )
                return
            outcome = _run(
                home, name, profile_name, given, dispatcher, simulate, yes, approve, as_json, concurrency, secrets
            )
        _finish(outcome, as_json)


def _run(
    home: Home,
    name: str,
    profile_name: str | None,
    given: dict[str, str],
    dispatcher: Any,
    simulate: bool,
    yes: bool,
    approve: tuple[str, ...],
    as_json: bool,
    concurrency: int | None,
    secrets: Any,
) -> Any:
    from .report.progress import Progress
    from .run.execution import start_run

    approver = _Approver(yes, approve, interactive=sys.stdin.isatty() and not as_json)
    with _interruptible(), Progress(as_json=as_json, stream=sys.stdout if as_json else sys.stderr) as progress:
        return start_run(
            home,
            name,
            profile_name,
            given,
            dispatcher=dispatcher,
            approver=approver,
            mode="simulate" if simulate else "run",
            on_event=progress,
            concurrency=concurrency,
            ahead=None if yes else approver.ahead,
            secrets=secrets,
        )


def _temporal_settings(home: Home, config: Any, address: str | None) -> Any:
    """Where the run goes on Temporal, or None for a local run; temporalio is not imported for a local one."""
    from .temporal.settings import settings

    return settings(config.data, address, home.root)


class _NoTemporalSdk(RunbookError):
    exit_code = exitcodes.TOOL_MISSING


def _needs_temporal_sdk() -> None:
    """Refuse, saying what to install, when Temporal's SDK is not there (it is an extra: local runs need none)."""
    import importlib.util

    if importlib.util.find_spec("temporalio") is None:
        raise _NoTemporalSdk(
            "runs on Temporal need the temporal extra, which is not installed: pip install 'runbook[temporal]'"
        )


@dataclass(frozen=True)
class _TemporalRun:
    """What ``runbook run`` was asked, for a run on Temporal."""

    name: str
    profile: str | None
    given: dict[str, str]
    simulate: bool
    yes: bool
    approve: tuple[str, ...]
    concurrency: int | None


def _run_start(
    config: Any, settings: Any, run: _TemporalRun, sources: dict[str, str], run_id: str, schedule: str
) -> Any:
    """The workflow's input for ``run``, signed by this command under mutual TLS (who started it).
    A scheduled run has no run id yet (the workflow draws one per run): the schedule is what is signed."""
    from .run.journal import current_who
    from .temporal import contract
    from .temporal.identity import scheduled, started
    from .temporal.settings import approval_timeout

    start = contract.RunStart(
        run_id=run_id,
        runbook=run.name,
        profile=run.profile,
        params=run.given,
        secret_sources=sources,
        approve_all=run.yes,
        approve=list(run.approve),
        started_by=current_who() if not schedule else f"schedule {schedule} (added by {current_who()})",
        simulate=run.simulate,
        concurrency=run.concurrency or 16,
        heartbeat_seconds=settings.heartbeat_seconds,
        approval_timeout_seconds=approval_timeout(config.data),
        schedule=schedule,
    )
    message = scheduled(schedule) if schedule else started(run_id)
    consequence = "No schedule was added" if schedule else "Nothing ran and no run was made"
    start.starter = _signed_as(settings, message, consequence)
    return start


def _run_on_temporal(
    config: Any,
    settings: Any,
    run: _TemporalRun,
    sources: dict[str, str],
    as_json: bool,
    plan: tuple[dict[str, Any], str] | None = None,
) -> Any:
    """Start the run as a workflow on the cluster's task queue and follow it with the usual progress."""
    from datetime import UTC, datetime

    from .report.progress import Progress
    from .run.execution import Outcome
    from .run.journal import new_run_id
    from .run.runner import PlanEntry
    from .temporal.settings import workflow_id

    _needs_temporal_sdk()
    from .temporal.client import start_and_follow

    start = _run_start(config, settings, run, sources, new_run_id(run.name, datetime.now(UTC)), "")
    if plan is not None:  # a saved plan: the worker checks it still holds, and holds each step to it
        start.plan, start.plan_file = plan
    where = workflow_id(config.data, run.profile, run.name)
    started: list[bool] = []

    def begun() -> None:
        started.append(True)
        click.echo(
            f"run {start.run_id} started on Temporal at {settings.address} (workflow {where}, task queue "
            f"{settings.task_queue})",
            err=True,
        )
        if run.simulate:
            click.echo(
                "SIMULATED cluster: the workers' own (their home's .runbook/sim/); no real node is contacted", err=True
            )

    with Progress(as_json=as_json, stream=sys.stdout if as_json else sys.stderr) as progress:
        entries: list[PlanEntry] = []
        held: dict[Any, PlanEntry] = {}

        def shown(event: Any) -> None:
            entry = _followed_entry(held, event)
            if event.kind == "step":
                entries.append(entry)  # for --json's last line, as a local run's
            progress(event.kind, entry)

        try:
            ending = start_and_follow(settings, where, start, shown, begun)
        except KeyboardInterrupt:
            if not started:
                raise _Interrupted("interrupted before the run started: nothing was changed") from None
            return Outcome(
                "interrupted",
                exitcodes.INTERRUPTED,
                f"stopped following run {start.run_id}; it goes on on the workers. Follow it again: temporal "
                f"workflow show --workflow-id {where} --address {settings.address} --follow",
                run_id=start.run_id,
            )
    return Outcome(
        ending.status, ending.exit_code, ending.message, run_id=start.run_id, entries=entries, warnings=ending.warnings
    )


def _followed_entry(held: dict[Any, Any], event: Any) -> Any:
    """One entry per step item across its events, as a local run hands them to Progress, which keys an
    item's lines by its entry (a new object per event could take a finished one's place, and its lines)."""
    from .run.runner import PlanEntry

    key = (event.entry.get("step_id"), event.entry.get("item_key"))
    entry = held.get(key)
    if entry is None:
        entry = held[key] = PlanEntry(**event.entry)
    else:
        entry.__dict__.update(event.entry)
    if event.kind == "step":
        del held[key]
    return entry


def _temporal_of(home: Home, address: str | None) -> Any:
    """Temporal's settings for runs/resume (--temporal or execution.temporal), or None; the SDK checked."""
    settings = _temporal_settings(home, _config_or_fail(home), address)
    if settings is not None:
        _needs_temporal_sdk()
    return settings


def _list_temporal_runs(settings: Any, local: list[Any], as_json: bool) -> None:
    """``runbook runs`` with Temporal: the cluster's runs there, then this home's runs that are not."""
    from .temporal.runs import list_runs

    remote = list_runs(settings)
    ids = {run.run_id for run in remote}
    rows = [
        {
            "run_id": run.run_id,
            "runbook": run.runbook,
            "profile": run.profile,
            "status": run.status,
            "started": run.started.isoformat(timespec="seconds") if run.started else None,
            "finished": run.finished.isoformat(timespec="seconds") if run.finished else None,
            "on": "temporal",
            "workflow_id": run.workflow_id,
            "started_by": run.started_by,
            "mode": "simulate" if run.simulate else "run",
            "resumes": len(run.executions) - 1,
        }
        for run in remote
    ] + [
        {**r.__dict__, "last_step": str(r.last_step) if r.last_step else None, "on": "local"}
        for r in local
        if r.run_id not in ids
    ]
    rows.sort(key=lambda row: row["run_id"], reverse=True)
    if as_json:
        _emit_json({"runs": rows, "temporal": {"address": settings.address, "task_queue": settings.task_queue}})
        return
    if not rows:
        click.echo(f"no runs yet, here or on Temporal at {settings.address} (task queue {settings.task_queue})")
        return
    table = Table("RUN", "RUNBOOK", "PROFILE", "STATUS", "ON", "STARTED", keep=5)
    for row in rows:
        table.add_row(
            row["run_id"], row["runbook"] or "?", row["profile"] or "-", row["status"], row["on"], row["started"] or "?"
        )
    table.print()


def _show_temporal_run(home: Home, settings: Any, run_id: str, as_json: bool, html_path: Path | None) -> None:
    """``runbook runs show`` of a run on Temporal: from its history, on any machine; ``--html`` from the
    journal the history amounts to (``temporal.runs.recorded``), with this home's runbook for the prose."""
    from .run.journal import UnknownRun
    from .temporal.runs import recorded, show_run

    shown = show_run(settings, run_id)
    if shown is None:
        raise UnknownRun(
            f"no run {run_id} on Temporal at {settings.address} (task queue {settings.task_queue}), nor in this home",
            [],
        )
    if html_path:
        from .report.html import run_view

        _write_html(html_path, lambda: run_view(home, recorded(shown)))
    run, start = shown.run, shown.start
    steps = [
        {
            "step": entry["step_id"],
            "item": entry.get("item_key"),
            "label": entry.get("item_label") or entry.get("item_key"),
            "status": entry.get("status"),
            "duration": entry.get("duration"),
            "error": entry.get("error"),
            "reason": entry.get("reason") or None,
        }
        for entry in shown.entries
    ]
    if as_json:
        _emit_json(
            {
                "run_id": run.run_id,
                "status": run.status,
                "on": "temporal",
                "workflow_id": run.workflow_id,
                "resumes": len(run.executions) - 1,
                "meta": {
                    "run_id": run.run_id,
                    "runbook": run.runbook,
                    "profile": run.profile,
                    "who": run.started_by,
                    "started_at": run.started.isoformat(timespec="seconds") if run.started else None,
                    "mode": "simulate" if run.simulate else "run",
                    "parameters": start.params,
                    "secret_parameters": start.secret_sources,
                },
                "steps": steps,
            }
        )
        return
    click.echo(f"run {run.run_id}: {run.runbook}" + (f" on profile {run.profile}" if run.profile else ""))
    click.echo(f"on Temporal at {settings.address}: workflow {run.workflow_id}, task queue {settings.task_queue}")
    resumed = len(run.executions) - 1
    click.echo(
        f"status: {run.status}   started {run.started.isoformat(timespec='seconds') if run.started else '?'} by "
        f"{run.started_by}   mode {'simulate' if run.simulate else 'run'}"
        + (f"   resumed {resumed}x" if resumed else "")
    )
    if start.params:
        click.echo("parameters: " + ", ".join(f"{k}={v!r}" for k, v in start.params.items()))
    if start.secret_sources:
        sources = ", ".join(f"{k} from {v}" for k, v in start.secret_sources.items())
        click.echo(f"secret parameters (values never recorded): {sources}")
    for step in steps:
        took = f" {step['duration']:.1f}s" if step["duration"] is not None else ""
        extra = f": {step['error']}" if step["error"] else (f": {step['reason']}" if step["reason"] else "")
        label = step["step"] + (f"[{step['item']}]" if step["item"] else "")
        click.echo(f"  {step['status']:<9} {label}{took}{extra}")


@dataclass(frozen=True)
class _TemporalResume:
    """What ``runbook resume`` was asked, for a run that may be on Temporal."""

    run_id: str
    force: bool
    secret_sources: tuple[str, ...]
    yes: bool
    approve: tuple[str, ...]
    concurrency: int | None


def _resume_on_temporal(settings: Any, wanted: _TemporalResume, as_json: bool, explicit: bool) -> Any:
    """Resume a run on Temporal (a new workflow execution of it: the workers read its journal and do not
    redo finished steps) or follow it when it still goes; None when Temporal never had it (a local run)."""
    import dataclasses

    from .run.execution import Outcome
    from .run.journal import UnknownRun, current_who
    from .temporal.identity import started
    from .temporal.runs import find_run, original_start

    run = find_run(settings, wanted.run_id)
    if run is None:
        if explicit:
            raise UnknownRun(
                f"no run {wanted.run_id} on Temporal at {settings.address} (task queue {settings.task_queue})", []
            )
        return None
    if wanted.force or wanted.secret_sources:
        raise _BadArgument(
            "--force and --secret are for runs resumed here: a run on Temporal is resumed by its workers, with "
            "the secret sources it was started with"
        )
    if run.status == "succeeded":
        return Outcome(
            "succeeded", exitcodes.OK, f"run {run.run_id} already succeeded; nothing to do", run_id=run.run_id
        )
    if run.going:
        click.echo(
            f"run {run.run_id} is still going on Temporal (workflow {run.workflow_id}, status {run.status}): "
            "following it",
            err=True,
        )
        return _follow_on_temporal(settings, run.run_id, lambda on_event: _follow_run(settings, run, on_event), as_json)
    # Who resumes starts this execution (four-eyes compares approvals with them, signed as for a start);
    # a scheduled run's first input had no run id (its workflow drew it): the run's own is given here.
    start = dataclasses.replace(
        original_start(settings, run),
        run_id=run.run_id,
        resume=True,
        approve_all=wanted.yes,
        approve=list(wanted.approve),
        started_by=current_who(),
        heartbeat_seconds=settings.heartbeat_seconds,
        schedule="",
        starter=_signed_as(settings, started(run.run_id), "Nothing was changed"),
    )
    if wanted.concurrency:
        start = dataclasses.replace(start, concurrency=wanted.concurrency)

    def begun() -> None:
        click.echo(f"run {run.run_id} resumed on Temporal at {settings.address} (workflow {run.workflow_id})", err=True)

    from .temporal.client import start_and_follow

    return _follow_on_temporal(
        settings,
        run.run_id,
        lambda on_event: start_and_follow(settings, run.workflow_id, start, on_event, begun),
        as_json,
    )


def _follow_run(settings: Any, run: Any, on_event: Callable[[Any], None]) -> Any:
    from .temporal.client import follow

    return follow(settings, run.workflow_id, on_event)


def _follow_on_temporal(
    settings: Any, run_id: str, follow: Callable[[Callable[[Any], None]], Any], as_json: bool
) -> Any:
    """Print a run's progress as ``follow`` hands its events, to its ending (an Outcome); Ctrl-C stops following."""
    from .report.progress import Progress
    from .run.execution import Outcome
    from .run.runner import PlanEntry

    entries: list[PlanEntry] = []
    held: dict[Any, PlanEntry] = {}
    with Progress(as_json=as_json, stream=sys.stdout if as_json else sys.stderr) as progress:

        def shown(event: Any) -> None:
            entry = _followed_entry(held, event)
            if event.kind == "step":
                entries.append(entry)
            progress(event.kind, entry)

        try:
            ending = follow(shown)
        except KeyboardInterrupt:
            return Outcome(
                "interrupted",
                exitcodes.INTERRUPTED,
                f"stopped following run {run_id}; it goes on on the workers. Follow it again: runbook resume {run_id}",
                run_id=run_id,
            )
    return Outcome(
        ending.status, ending.exit_code, ending.message, run_id=run_id, entries=entries, warnings=ending.warnings
    )


def _save_plan(path: Path, outcome: Any, name: str, simulate: bool) -> None:
    """Write the reviewed plan, sealed, with what it was made against (see engine/run/savedplan.py)."""
    from .report.plantext import plan_json
    from .run.savedplan import planned_against, seal
    from .run.upfront import gates_ahead

    document = plan_json(outcome.session, outcome.entries, offline=False, changes=outcome.changes, name=name)
    document.update(
        simulated=simulate,
        identity=outcome.cluster.as_dict() if outcome.cluster is not None else None,
        planned_against=planned_against(outcome.facts.reads if outcome.facts is not None else ()),
        gates=[
            {"step": g.step, "items": list(g.items), "reasons": list(g.reasons), "certain": g.certain}
            for g in gates_ahead(outcome.entries, outcome.session.runbook)
        ],
    )
    text = json.dumps(seal(document), indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        raise _BadArgument(f"cannot write the plan to {path}: {exc.strerror or exc}") from None
    click.echo(f"plan saved to {path}; run exactly it with: runbook apply {path}", err=True)


def _dry_run(
    home: Home,
    name: str,
    profile_name: str | None,
    given: dict[str, str],
    offline: bool,
    dispatcher: Any,
    html_path: Path | None,
    as_json: bool,
    out_path: Path | None = None,
    simulate: bool = False,
    secrets: Any = None,
) -> None:
    from .report.plantext import plan_json, plan_text
    from .run.execution import plan_run
    from .run.secretparams import NO_SECRETS

    outcome = plan_run(
        home, name, profile_name, given, offline=offline, dispatcher=dispatcher, secrets=secrets or NO_SECRETS
    )
    if out_path is not None and outcome.session is not None and outcome.status == "planned":
        _save_plan(out_path, outcome, name, simulate)
    for warning in outcome.warnings:
        click.echo(f"warning: {warning}", err=True)
    if html_path and outcome.session is not None:
        from .report.html import plan_view

        stopped = None if outcome.status == "planned" else (outcome.status, outcome.message)
        _write_html(
            html_path,
            lambda: plan_view(
                outcome.session, outcome.entries, offline=offline, outcome=stopped, changes=outcome.changes
            ),
        )
    planned = outcome.session is not None and outcome.status == "planned"
    if as_json:
        # A plan that could not be made is a plan document too, saying why (``error``).
        error = None if planned else outcome.message
        _emit_json(
            plan_json(
                outcome.session,
                outcome.entries,
                offline=offline,
                changes=outcome.changes,
                name=name,
                error=error,
                exit_code=outcome.exit_code,
                warnings=outcome.warnings,
            )
        )
    elif planned:
        click.echo(plan_text(outcome.session, outcome.entries, offline=offline, changes=outcome.changes))
    if not planned:
        click.echo(f"error: {outcome.message}", err=True)
    sys.exit(outcome.exit_code)


def _failure(exc: RunbookError) -> dict[str, Any]:
    """An error as the ``error`` and ``exit_code`` of a JSON document (its lines, without ``error:``)."""
    return {"error": "\n".join(line.removeprefix("error: ") for line in exc.lines()), "exit_code": exc.exit_code}


@contextmanager
def _json_on_error(
    as_json: bool, document: Callable[[RunbookError], dict[str, Any]], *, indent: bool = False
) -> Iterator[None]:
    """With --json, an error before the output began still prints its document (a plan, indented, or
    the last event, one line), so a script always reads one; the error then ends the command as
    usual (its lines on stderr, its exit code)."""
    try:
        yield
    except RunbookError as exc:
        if as_json:
            if indent:
                _emit_json(document(exc))
            else:
                click.echo(json.dumps(document(exc), default=str))
        raise


def _finished_event(exc: RunbookError) -> dict[str, Any]:
    from .report.jsonformat import finished

    failure = _failure(exc)
    status = {
        exitcodes.GATE: "stopped_at_gate",
        exitcodes.LOCKED: "locked",
        exitcodes.REFUSED: "refused",
        exitcodes.INTERRUPTED: "interrupted",
    }.get(exc.exit_code, "failed")
    return finished(status, exc.exit_code, None, failure["error"], [], [])


def _write_html(path: Path, make_view: Callable[[], dict[str, Any]]) -> None:
    from .report.html import write_html

    try:
        write_html(path, make_view())
    except OSError as exc:
        raise _BadArgument(f"cannot write {path}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {path}", err=True)


@main.command("resume")
@click.argument("run_id", shell_complete=_complete_runs)
@click.option("--force", is_flag=True, help="Resume even though the runbook, profile or config changed.")
@click.option("--secret", "secret_sources", multiple=True, metavar="NAME=SOURCE", help=_SECRET_HELP)
@click.option("--yes", is_flag=True, help="Approve every gate.")
@click.option("--approve", multiple=True, metavar="STEP", help="Approve the gate of one step id; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one per event, the last one the report.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    metavar="N",
    help="Run at most N items at once (steps with parallel, pipelines); 1 runs one at a time. "
    "Default: 16, and never more than a step's own parallel.",
)
@_temporal_option("resume a run on Temporal (or follow it, when it is still going)")
@click.pass_context
def resume_cmd(
    ctx: click.Context,
    run_id: str,
    force: bool,
    secret_sources: tuple[str, ...],
    yes: bool,
    approve: tuple[str, ...],
    as_json: bool,
    concurrency: int | None,
    temporal_address: str | None,
) -> None:
    """Continue run RUN_ID where it stopped: finished steps are not redone, a step that started but
    never finished is re-checked (its check guard, or a gate when it has none).

    A run on Temporal (with --temporal or execution.temporal) is resumed there, by the workers; when it
    is still going, this says so and follows it."""
    from .report.progress import Progress
    from .run.execution import resume_run
    from .run.journal import load_run

    with _json_on_error(as_json, _finished_event):
        home = _home(ctx)
        config = _config_or_fail(home)
        on_temporal = _temporal_of(home, temporal_address)
        if on_temporal is not None:
            wanted = _TemporalResume(run_id, force, secret_sources, yes, approve, concurrency)
            outcome = _resume_on_temporal(on_temporal, wanted, as_json, explicit=temporal_address is not None)
            if outcome is not None:
                _finish(outcome, as_json)
        # A simulated run resumes on the simulated cluster and a real one on the real cluster, always.
        simulate = load_run(home.state_dir, run_id).meta.mode == "simulate"
        if not simulate:
            _not_example(home, "resuming a run against a real cluster")
        approver = _Approver(yes, approve, interactive=sys.stdin.isatty() and not as_json)
        with _executors(home, config, simulate) as dispatcher:
            with _interruptible(), Progress(as_json=as_json, stream=sys.stdout if as_json else sys.stderr) as progress:
                outcome = resume_run(
                    home,
                    run_id,
                    dispatcher=dispatcher,
                    approver=approver,
                    force=force,
                    on_event=progress,
                    concurrency=concurrency,
                    ahead=None if yes else approver.ahead,
                    secrets=_secrets(secret_sources, sys.stdin.isatty() and not as_json),
                )
    _finish(outcome, as_json)


class _PlanNotApproved(RunbookError):
    """A saved plan with gates, applied without a terminal and without --yes."""

    exit_code = exitcodes.GATE


@main.command("apply")
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path), metavar="PLAN")
@click.option("--yes", is_flag=True, help="Approve the plan and every gate it lists, without asking.")
@click.option("--secret", "secret_sources", multiple=True, metavar="NAME=SOURCE", help=_SECRET_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one per event, the last one the report.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    metavar="N",
    help="Run at most N items at once (steps with parallel, pipelines); 1 runs one at a time.",
)
@click.option(
    "--temporal",
    "temporal_address",
    metavar="HOST:PORT",
    help="Apply it on Temporal at this address (default: execution.temporal in cluster-config.yaml); its "
    "gates then wait for 'runbook approve' unless --yes. See docs/temporal.md.",
)
@click.pass_context
def apply_cmd(
    ctx: click.Context,
    plan_file: Path,
    yes: bool,
    secret_sources: tuple[str, ...],
    as_json: bool,
    concurrency: int | None,
    temporal_address: str | None,
) -> None:
    """Run exactly the plan saved by 'runbook run NAME --dry-run --out PLAN'.

    Refused (exit 7, nothing changed) when the plan file was edited, when the runbook, profile or
    config changed, or when anything the plan was made against moved on the cluster (a VM's config
    digest, status, existence); exit 8 when another cluster answers. Approving the plan approves
    every gate it lists, asked once before the first change (--yes without a terminal). A step
    that would send anything other than what the plan reviewed stops the run before it is sent.
    """
    from .report.progress import Progress
    from .run.execution import apply_plan
    from .run.savedplan import unseal

    with _json_on_error(as_json, _finished_event):
        home = _home(ctx)
        try:
            text = plan_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise _BadArgument(f"cannot read the plan {plan_file}: {exc.strerror or exc}") from None
        document = unseal(text, str(plan_file))
        simulate = bool(document.get("simulated"))
        if not simulate:
            _not_example(home, "applying a plan to a real cluster")
        config = _config_or_fail(home)
        on_temporal = _temporal_settings(home, config, temporal_address)
        if on_temporal is not None:
            # Its gates wait in the workflow for runbook approve (--yes: approved with the plan).
            sources = dict(_secrets(secret_sources, interactive=False).sources)
            run = _TemporalRun(str(document["runbook"]), document.get("profile"), {}, simulate, yes, (), concurrency)
            plan = (dict(document), str(plan_file))
            _finish(_run_on_temporal(config, on_temporal, run, sources, as_json, plan), as_json)
            return
        gates = [str(gate["step"]) for gate in document.get("gates") or () if gate.get("certain")]
        interactive = sys.stdin.isatty() and not as_json
        click.echo(f"plan {plan_file}: {document.get('runbook')} — {document.get('change_summary')}", err=True)
        if gates and not yes:
            listed = ", ".join(gates)
            if not interactive:
                raise _PlanNotApproved(
                    f"this plan has gates ({listed}); nothing was changed. Approving the plan approves them: "
                    f"runbook apply {plan_file} --yes"
                )
            if not click.confirm(f"Apply this plan, approving its gates ({listed})?", default=False, err=True):
                raise _PlanNotApproved("not approved; nothing was changed")
        approver = _Approver(yes, tuple(gates), interactive=interactive)
        with _executors(home, config, simulate) as dispatcher:
            with _interruptible(), Progress(as_json=as_json, stream=sys.stdout if as_json else sys.stderr) as progress:
                outcome = apply_plan(
                    home,
                    document,
                    str(plan_file),
                    dispatcher=dispatcher,
                    approver=approver,
                    mode="simulate" if simulate else "run",
                    on_event=progress,
                    concurrency=concurrency,
                    secrets=_secrets(secret_sources, interactive),
                )
    _finish(outcome, as_json)


@main.group("runs", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_temporal_option("list the cluster's runs on Temporal too, from any machine")
@click.pass_context
def runs_cmd(ctx: click.Context, as_json: bool, temporal_address: str | None) -> None:
    """List runs, newest first, with their status (see 'runs show RUN_ID')."""
    if ctx.invoked_subcommand is not None:
        return
    from .run.journal import list_runs

    home = _home(ctx)
    runs = list_runs(home.state_dir)
    on_temporal = _temporal_of(home, temporal_address)
    if on_temporal is not None:
        _list_temporal_runs(on_temporal, runs, as_json)
        return
    if as_json:
        _emit_json({"runs": [{**r.__dict__, "last_step": str(r.last_step) if r.last_step else None} for r in runs]})
        return
    if not runs:
        click.echo(f"no runs yet in {home.shown(home.state_dir)}/runs")
        return
    table = Table("RUN", "RUNBOOK", "PROFILE", "STATUS", "STARTED", "LAST STEP", keep=4)
    for run in runs:
        table.add_row(
            run.run_id,
            run.runbook or "?",
            run.profile or "-",
            run.status,
            run.started or "?",
            str(run.last_step) if run.last_step else (run.problem or "-"),
        )
    table.print()


@runs_cmd.command("show")
@click.argument("run_id", shell_complete=_complete_runs)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Also write the run as one self-contained HTML page (steps in the runbook's prose).",
)
@_temporal_option("show a run on Temporal, from any machine (a run in this home is shown from its journal)")
@click.pass_context
def runs_show_cmd(
    ctx: click.Context, run_id: str, as_json: bool, html_path: Path | None, temporal_address: str | None
) -> None:
    """Show one run: its inputs, and each step's outcome, duration and error."""
    from .run.journal import RUN_FILE, load_run

    home = _home(ctx)
    on_temporal = _temporal_of(home, temporal_address)
    if on_temporal is not None and (temporal_address or not (home.state_dir / "runs" / run_id / RUN_FILE).exists()):
        _show_temporal_run(home, on_temporal, run_id, as_json, html_path)
        return
    run = load_run(home.state_dir, run_id)
    if html_path:
        from .report.html import run_view

        _write_html(html_path, lambda: run_view(home, run))
    state = run.state
    if as_json:
        from .report.jsonformat import recorded_run
        from .run.journal import run_status

        _emit_json(recorded_run(run.meta.as_dict(), state, run_status(state), run.warnings))
        return
    meta = run.meta
    click.echo(f"run {meta.run_id}: {meta.runbook}" + (f" on profile {meta.profile}" if meta.profile else ""))
    click.echo(
        f"status: {state.status}   started {meta.started_at} by {meta.who}   mode {meta.mode}"
        + (f"   resumed {state.resumes}x" if state.resumes else "")
    )
    if meta.parameters:
        click.echo("parameters: " + ", ".join(f"{k}={v!r}" for k, v in meta.parameters.items()))
    if meta.secret_parameters:
        sources = ", ".join(f"{k} from {v}" for k, v in meta.secret_parameters.items())
        click.echo(f"secret parameters (values never recorded): {sources}")
    for warning in run.warnings:
        click.echo(f"warning: {warning}")
    origins = _call_origins(home, meta.runbook)
    for key, step in state.steps.items():
        took = f" {step.duration:.1f}s" if step.duration is not None else ""
        extra = f": {step.error}" if step.error else (f": {step.reason}" if step.reason else "")
        origin = f"  (from {origins[key.step]})" if key.step in origins else ""
        click.echo(f"  {step.status:<9} {key}{took}{origin}{extra}")
    if state.gate:
        click.echo(f"waiting at gate: {state.gate}")


def _call_origins(home: Home, name: str) -> dict[str, str]:
    """Where each step that came through a call comes from (``inner#the-sequence, runbooks/inner.md``), by
    step id, as the runbook reads now; nothing when it no longer loads."""
    from .run.session import runbook_path, with_calls
    from .runbook.parser import parse_runbook_file

    try:
        path = runbook_path(home, name)
        runbook, _ = with_calls(home, parse_runbook_file(path, home.shown(path)))
    except InputError:
        return {}
    return {s.id: f"{s.call.target}, {s.call.runbook.file}" for s in runbook.steps if s.call is not None}


@main.command("ingest")
@click.argument("source")
@click.option("--name", help="Runbook name (default: from the page's title).")
@click.option("--yes", is_flag=True, help="Write the runbook without asking.")
@click.option("--force", is_flag=True, help="Overwrite runbooks/NAME.md when it exists.")
@click.pass_context
def ingest_cmd(ctx: click.Context, source: str, name: str | None, yes: bool, force: bool) -> None:
    """Make a runbook from a procedure page: an http(s) URL or a markdown, HTML or text file.

    Shows the proposed runbook, every adaptation to this cluster's conventions and every warning,
    then asks before writing runbooks/NAME.md. The runbook can be dry-run at once; it runs for
    real once reviewed: 'runbook trust NAME'.
    """
    from .ingest.fetch import read_source
    from .ingest.pipeline import IngestError, check_name, propose, write

    home = _own_home(ctx, "ingest (it writes into runbooks/)")
    config = _config_or_fail(home)
    if name is not None:
        check_name(name)
        if (home.runbooks_dir / f"{name}.md").exists() and not force:
            raise IngestError(
                f"{home.shown(home.runbooks_dir / f'{name}.md')} already exists; use --force to "
                "overwrite it, or --name to choose another name"
            )
    proposal = propose(home, config, read_source(source), name)
    if proposal.path.exists() and not force:
        raise IngestError(
            f"{home.shown(proposal.path)} already exists; use --force to overwrite it, or --name to choose another name"
        )
    shown = home.shown(proposal.path)
    click.echo(f"# proposed {shown} ({proposal.steps} steps)\n")
    click.echo(proposal.text)
    click.echo(f"adaptations ({len(proposal.changes)}):")
    for change in proposal.changes:
        click.echo(f"  - {change}")
    for warning in proposal.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not yes:
        if not sys.stdin.isatty():
            raise _NotConfirmed(f"nothing written: confirm on a terminal, or pass --yes to write {shown}")
        if not click.confirm(f"Write {shown}?", default=False, err=True):
            click.echo("nothing written", err=True)
            sys.exit(exitcodes.GATE)
    write(proposal, force)
    review = f" (steps marked review: {', '.join(proposal.review_steps)})" if proposal.review_steps else ""
    click.echo(
        f"wrote {shown}. Try it: runbook run {proposal.name} --dry-run. It runs for real once you have "
        f"reviewed it{review}: runbook trust {proposal.name}"
    )


@main.command("trust")
@click.argument("name", shell_complete=_complete_runbooks)
@click.option("--yes", is_flag=True, help="Record the review without asking.")
@click.pass_context
def trust_cmd(ctx: click.Context, name: str, yes: bool) -> None:
    """Record that you reviewed ingested runbook NAME as it is now; any later edit needs a new review."""
    from .ingest.trust import content_hash, needs_review, record, review_of
    from .runbook.validate import validate_home

    home = _own_home(ctx, "trust (it records a review in the home)")
    path, runbook = _load_runbook(home, name)
    if not needs_review(runbook):
        click.echo(f"{runbook.name} has no origin (it was not ingested): it runs without a review record")
        return
    report = validate_home(home, [path])
    if not report.ok:
        raise InputError([*report.problems, Problem(runbook.file, None, None, "fix these before trusting it")])
    digest = content_hash(path)
    review = review_of(home, runbook.name)
    if review is not None and review.sha256 == digest:
        click.echo(f"{runbook.name} is already trusted as it is (reviewed by {review.by}, {review.at})")
        return
    origin = runbook.frontmatter["origin"]
    click.echo(
        f"{runbook.name}: {runbook.description}\nfrom {origin.get('source')} (fetched {origin.get('fetched')})"
        f"\nsha256 {digest}"
    )
    if review is not None:
        click.echo(f"changed since {review.by} reviewed it ({review.at})")
    flagged = [s.id for s in runbook.steps if s.attrs.get("review")]
    click.echo(
        f"{len(runbook.steps)} steps"
        + (f"; marked review (still gated at every run): {', '.join(flagged)}" if flagged else "")
    )
    if not yes:
        if not sys.stdin.isatty():
            raise _NotConfirmed(f"not recorded: confirm on a terminal, or pass --yes after reading {runbook.file}")
        if not click.confirm("Have you read every step, and may it run for real?", default=False, err=True):
            click.echo("not recorded", err=True)
            sys.exit(exitcodes.GATE)
    done = record(home, runbook, path)
    click.echo(
        f"trusted {runbook.name} (sha256 {done.sha256[:16]}..., by {done.by}): real runs are allowed until "
        "the file changes"
    )


@main.group("sim")
def sim_cmd() -> None:
    """The embedded simulated cluster that --simulate runs against (kept in .runbook/sim/)."""


@sim_cmd.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def sim_status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show the simulated cluster: nodes, VMs and their state, and simulated Talos nodes."""
    from .sim.status import sim_status

    home = _home(ctx)
    status = sim_status(home, _config_or_fail(home))
    if status is None:
        message = (
            "no simulated cluster yet: the first 'runbook run ... --simulate' creates one from "
            "cluster-config.yaml and the profiles"
        )
        if as_json:
            _emit_json({"exists": False, "message": message})
        else:
            click.echo(message)
        return
    if as_json:
        _emit_json(status.as_dict())
        return
    click.echo(f"SIMULATED cluster ({status.state_file})")
    click.echo("nodes: " + ", ".join(f"{n['name']} ({'online' if n['online'] else 'offline'})" for n in status.nodes))
    table = Table("VMID", "NAME", "NODE", "STATUS", "CORES", "MEMORY", "TAGS", keep=6)
    for vm in status.vms:
        table.add_row(
            str(vm["vmid"]),
            vm["name"],
            vm["node"],
            "template" if vm["template"] else vm["status"],
            str(vm["cores"] or "-"),
            f"{vm['memory']} MB" if vm["memory"] else "-",
            vm["tags"],
        )
    table.print()
    if status.talos:
        click.echo("\nTalos:")
        for row in status.talos:
            click.echo(
                f"  {row['ip']:<15} {row.get('hostname') or '-':<12} {row.get('role') or '-':<13} "
                f"{row['state']:<12} talos {row.get('talos_version') or '-'}  "
                f"kubernetes {row.get('kubernetes_version') or '-'}"
            )


@sim_cmd.command("reset")
@click.pass_context
def sim_reset_cmd(ctx: click.Context) -> None:
    """Forget the simulated cluster; the next --simulate run starts from a fresh one."""
    import shutil

    from .run.runlock import LockHeld, ProfileLock
    from .sim.server import sim_dir
    from .sim.wiring import LOCK_NAME

    home = _home(ctx)
    folder = sim_dir(home)
    lock = ProfileLock(home.state_dir, LOCK_NAME, "sim-reset")
    try:
        lock.acquire()
    except LockHeld as exc:
        raise LockHeld(f"the simulated cluster is in use by a run; not reset: {exc}", exc.holder, exc.path) from exc
    try:
        existed = folder.exists()
        if existed:
            shutil.rmtree(folder)
    finally:
        lock.release()
    click.echo(
        f"simulated cluster reset ({home.shown(folder)} removed)" if existed else "no simulated cluster to reset"
    )


@main.command("server")
@click.option("--port", type=click.IntRange(1, 65535), default=7233, show_default=True, help="The gRPC port.")
@click.option(
    "--ui-port",
    type=click.IntRange(1, 65535),
    help="The web UI's port (default: the gRPC port + 1000); see --headless.",
)
@click.option("--headless", is_flag=True, help="No web UI.")
@click.pass_context
def server_cmd(ctx: click.Context, port: int, ui_port: int | None, headless: bool) -> None:
    """Start the embedded Temporal dev server, for runs on Temporal on this machine (docs/temporal.md).

    On loopback only, in the foreground (Ctrl-C stops it), its state in .runbook/temporal.db, so runs
    and their history outlive it. For a team across machines, point execution.temporal in
    cluster-config.yaml at a production Temporal cluster instead.
    """
    import signal
    import subprocess

    from .temporal.server import DB_FILE, command

    home = _own_home(ctx, "runbook server (its state is kept in the home)")
    home.state_dir.mkdir(parents=True, exist_ok=True)
    db = home.state_dir / DB_FILE
    argv = command(db, port, None if headless else (ui_port or port + 1000))
    click.echo(f"Temporal dev server on 127.0.0.1:{port}, state in {home.shown(db)}; Ctrl-C stops it", err=True)
    if not headless:
        click.echo(f"web UI: http://127.0.0.1:{ui_port or port + 1000}", err=True)
    child = subprocess.Popen(argv, start_new_session=True)
    before = signal.signal(signal.SIGTERM, lambda _n, _f: child.terminate())
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.terminate()  # the server stops cleanly on SIGTERM, its database closed
        code = child.wait()
        click.echo("Temporal dev server stopped", err=True)
        code = 0
    finally:
        signal.signal(signal.SIGTERM, before)
    sys.exit(0 if code in (0, -signal.SIGTERM) else code)


@main.command("worker")
@click.option(
    "--temporal",
    "temporal_address",
    metavar="HOST:PORT",
    help="Temporal's address (default: execution.temporal in cluster-config.yaml).",
)
@click.pass_context
def worker_cmd(ctx: click.Context, temporal_address: str | None) -> None:
    """Serve runs on Temporal for this home's cluster (one task queue per cluster) until Ctrl-C.

    Steps run here, with this machine's credentials (its pass store or environment), which never
    enter the workflow's history; each run's journal is kept in this home, as for a local run.
    Several workers may serve one cluster when they share this home (docs/temporal.md): a run stays
    on the worker that opened it, and another takes it over from its journal when that one is lost.
    """
    home = _home(ctx)
    config = _config_or_fail(home)
    settings = _temporal_settings(home, config, temporal_address)
    if settings is None:
        raise _BadArgument(
            "runbook worker needs Temporal's address: --temporal HOST:PORT, or execution.temporal in "
            f"{home.shown(home.config_path)}"
        )
    _needs_temporal_sdk()
    from .temporal.worker import serve

    def ready(own: str) -> None:
        click.echo(
            f"worker for cluster {config.data['cluster']['name']}: task queue {settings.task_queue} at "
            f"{settings.address} (namespace {settings.namespace}), and {own} for the runs it holds; "
            "Ctrl-C stops it",
            err=True,
        )

    serve(home, config, settings, ready)


def _no_home(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise click.UsageError("init makes a home in DIRECTORY (runbook init DIR); --home names one that exists")


@main.command("init")
@click.argument("directory", type=click.Path(file_okay=True, path_type=Path), default=".")
@click.option("--home", hidden=True, expose_value=False, callback=_no_home)
@click.option("--from", "from_url", metavar="https://NODE:8006", help="Read this cluster to write cluster-config.yaml.")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --from: the cluster CA (/etc/pve/pve-root-ca.pem on a node) to verify the node with.",
)
@click.option("--fingerprint", metavar="SHA256", help="With --from: the node certificate's SHA-256 fingerprint.")
@click.option("--pass-path", metavar="ENTRY", help="With --from: the pass entry holding the API token.")
@click.option(
    "--token-env",
    metavar="VAR",
    default="PROXMOX_API_TOKEN",
    show_default=True,
    help="With --from: the variable holding user@realm!tokenid=secret, used instead of pass when set.",
)
@click.option("--ssh-user", default="root", show_default=True, help="With --from: the user SSH steps log in as.")
@click.option("--simulate", is_flag=True, help="Read the simulated cluster instead of a real one (to try init out).")
@click.pass_context
def init_cmd(
    ctx: click.Context,
    directory: Path,
    from_url: str | None,
    ca_file: Path | None,
    fingerprint: str | None,
    pass_path: str | None,
    token_env: str,
    ssh_user: str,
    simulate: bool,
) -> None:
    """Make a new runbook home in DIRECTORY (default: here): cluster-config.yaml, clusters/ with an
    example profile, and runbooks/ with the shipped library and its manifest. Never overwrites.

    With --from (or --simulate), cluster-config.yaml is written from what the cluster reports: its
    nodes, storages, bridges, templates and the VMIDs in use, each guess marked GUESSED. The node's
    certificate is checked before the token is sent: with --ca-file, --fingerprint, or (with
    neither) by showing its fingerprint for you to confirm on a terminal.
    """
    from .init.scaffold import check_target, make_home

    check_target(directory)
    if from_url is None and not simulate:
        if ca_file or fingerprint or pass_path:
            raise _BadArgument("--ca-file, --fingerprint and --pass-path go with --from https://NODE:8006")
        _init_done(make_home(directory), "the example cluster-config.yaml: edit it for your cluster")
        return
    written = _init_read(directory, from_url, ca_file, fingerprint, pass_path, token_env, ssh_user, simulate)
    home = make_home(directory, written.config, written.profile)
    seen = written.discovery
    _init_done(
        home,
        f"cluster {seen.name}: {len(seen.nodes)} node(s), {len(seen.templates)} template(s), "
        f"{len(seen.vmids)} VMIDs in use; {written.guessed} line(s) marked GUESSED to check",
    )


def _init_read(
    directory: Path,
    from_url: str | None,
    ca_file: Path | None,
    fingerprint: str | None,
    pass_path: str | None,
    token_env: str,
    ssh_user: str,
    simulate: bool,
) -> Any:
    """Read the cluster for ``runbook init --from`` (or the simulated one): the texts to write."""
    from .init import contact
    from .init.configtext import Access
    from .init.fromcluster import from_cluster
    from .run.dispatch import Dispatcher

    if simulate:
        if from_url or ca_file or fingerprint:
            raise _BadArgument("--simulate reads the simulated cluster: leave out --from, --ca-file and --fingerprint")
        from .load.config import load_config
        from .load.home import example_home

        example = example_home()
        access = Access(8006, pass_path, token_env, "~/.config/runbook/pve-root-ca.pem", None, ssh_user)
        with _executors(example, load_config(example), True) as dispatcher:
            return from_cluster(dispatcher, None, access, simulated=True)
    assert from_url is not None
    endpoint = contact.parse_endpoint(from_url)
    if ca_file and fingerprint:
        raise _BadArgument("--ca-file and --fingerprint both given: a node's certificate is checked one way; give one")
    if not pass_path and token_env not in os.environ:
        raise _BadArgument(
            f"init --from needs the API token: give --pass-path ENTRY (a pass entry: line 1 user@realm!tokenid, "
            f"line 2 the secret), or export {token_env}=user@realm!tokenid=secret"
        )
    ca = contact.ca_file(ca_file) if ca_file else None
    pin = contact.normal_fingerprint(fingerprint) if fingerprint else None
    if ca is None and pin is None:
        pin = _confirm_fingerprint(endpoint, contact.presented_fingerprint(endpoint))
    credentials: dict[str, Any] = {"token_env": token_env, "ssh_user": ssh_user}
    if pass_path:
        credentials["pass_path"] = pass_path
    tls = {"ca_file": ca} if ca else {"fingerprint": pin}
    dispatcher = Dispatcher(contact.provisional_config(endpoint, credentials, tls), directory.resolve())
    try:
        access = Access(endpoint.port, pass_path, token_env, ca, pin, ssh_user)
        return from_cluster(dispatcher, endpoint.host, access)
    except RunbookError as exc:
        raise _NotRead(f"cannot read the cluster at {endpoint.url}: {exc}\nNothing was written") from None
    finally:
        dispatcher.close()


class _NotRead(RunbookError):
    """init --from could not read the cluster (unreachable, TLS, token): nothing was written."""

    exit_code = exitcodes.NOT_STARTED


def _confirm_fingerprint(endpoint: Any, presented: str) -> str:
    """Show the node certificate's fingerprint and have the operator confirm it on a terminal."""
    shown = (
        f"{endpoint.url} presents a certificate with SHA-256 fingerprint\n  {presented}\n"
        "Compare it with the node's own (on the node: pvenode cert info, or openssl x509 -noout -fingerprint "
        "-sha256 -in /etc/pve/local/pve-ssl.pem)."
    )
    if not sys.stdin.isatty():
        raise _NotConfirmed(
            f"{shown} Nothing was sent. Once it matches, run again with --fingerprint {presented} "
            "(or verify with the cluster CA: --ca-file)"
        )
    click.echo(shown, err=True)
    if not click.confirm("Is it the same?", default=False, err=True):
        raise _NotConfirmed("the fingerprint was not confirmed; nothing was sent and nothing was written")
    return presented


def _init_done(home: Home, config_note: str) -> None:
    from .init.library import MANIFEST

    click.echo(f"new runbook home in {home.root}")
    click.echo(f"  cluster-config.yaml   {config_note}")
    click.echo("  clusters/             an example profile (dev-generic.yaml); 'runbook profiles new NAME' adds yours")
    click.echo(f"  runbooks/             the shipped library; runbooks/{MANIFEST} records it as shipped")
    click.echo(f"next: cd {home.root} && runbook validate")


@main.group("library")
def library_cmd() -> None:
    """The shipped runbook library in your home: what a newer runbook changed, what you edited."""


@library_cmd.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def library_status_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the shipped runbooks that the installed runbook changed or added, and those you edited.

    \b
    update            unedited here, changed in the installed version: 'runbook library update' copies it
    new               shipped by the installed version, not in this home yet: update adds it
    edited            you changed it; the installed version ships what you started from
    edited+changed    you changed it and so did the installed version: update shows the difference
    removed           you deleted it: update leaves it deleted
    no longer shipped the installed version dropped it: yours stays
    """
    from .init import library

    home = _own_home(ctx, "runbook library status")
    entries = library.status(home)
    if as_json:
        _emit_json([{"file": e.file, "state": e.state} for e in entries])
        return
    changed = [e for e in entries if e.state != library.CURRENT]
    current = len(entries) - len(changed)
    if not changed:
        click.echo(f"all {current} shipped runbooks are as the installed version ships them")
        return
    table = Table("RUNBOOK", "STATE")
    for entry in changed:
        table.add_row(entry.file, entry.state)
    table.print()
    click.echo(f"{current} more as shipped")


@library_cmd.command("update")
@click.option("--adopt", is_flag=True, help="In a home without a manifest, record the files equal to the shipped ones.")
@click.pass_context
def library_update_cmd(ctx: click.Context, adopt: bool) -> None:
    """Bring the runbooks you did not edit up to the installed version; never overwrite an edited one
    (its difference to the shipped one is shown instead).
    """
    from .init import library

    home = _own_home(ctx, "runbook library update")
    report = library.update(home, adopt=adopt)
    for name in report.copied:
        click.echo(f"updated  runbooks/{name}")
    for name, diff in report.kept:
        click.echo(f"kept     runbooks/{name}: you edited it and the installed version changed it; merge by hand:")
        click.echo(diff, nl=False)
    for name in report.reviews_void:
        click.echo(
            f"note: your review of {name} was of its old content; review it again before a real run: runbook trust {name}"
        )
    if not report.copied and not report.kept:
        click.echo("nothing to update: every runbook you did not edit is as the installed version ships it")


def _signed_as(settings: Any, message: str, consequence: str) -> Any:
    """This command's identity, signed with its mTLS client key when it has one (engine/temporal/identity.py)."""
    from .temporal.identity import of_this_process

    return of_this_process(settings.tls, message, consequence)


def _on_temporal_for(ctx: click.Context, temporal_address: str | None, doing: str) -> Any:
    home = _home(ctx)
    config = _config_or_fail(home)
    settings = _temporal_settings(home, config, temporal_address)
    if settings is None:
        raise _BadArgument(
            f"{doing} needs Temporal's address: --temporal HOST:PORT, or execution.temporal in "
            f"{home.shown(home.config_path)}"
        )
    _needs_temporal_sdk()
    return settings


_TEMPORAL_OPTION = click.option(
    "--temporal",
    "temporal_address",
    metavar="HOST:PORT",
    help="Temporal's address (default: execution.temporal in cluster-config.yaml).",
)


@main.command("approvals")
@_TEMPORAL_OPTION
@click.option("--json", "as_json", is_flag=True, help="The waiting gates as a JSON list.")
@click.pass_context
def approvals_cmd(ctx: click.Context, temporal_address: str | None, as_json: bool) -> None:
    """List the gates runs on Temporal wait at, for this home's cluster, each with its change set.

    Approve one with 'runbook approve RUN_ID STEP', or end its run there with 'runbook reject'.
    """
    settings = _on_temporal_for(ctx, temporal_address, "runbook approvals")
    from .temporal.client import waiting

    gates = waiting(settings)
    if as_json:
        _emit_json([asdict(gate) for gate in gates])
        return
    if not gates:
        click.echo(f"no gate waits on Temporal at {settings.address} (task queue {settings.task_queue})")
        return
    for gate in gates:
        click.echo(f"{gate.run_id}  {gate.label}  waiting since {gate.since}: {'; '.join(gate.reasons)}")
        if gate.display:
            click.echo("  would run: " + gate.display.replace("\n", "\n    "))
        for line in gate.changes:
            click.echo(line)


def _decide(
    ctx: click.Context, temporal_address: str | None, run_id: str, step: str, approve: bool, reason: str
) -> None:
    settings = _on_temporal_for(ctx, temporal_address, "runbook approve" if approve else "runbook reject")
    from .temporal import contract
    from .temporal.client import decide
    from .temporal.identity import decided

    def make(gate: Any) -> Any:
        decision = contract.Decision(run_id, gate.step, gate.item, approve, contract.Identity(""), reason)
        decision.by = _signed_as(settings, decided(decision), "Nothing was decided")
        return decision

    done = decide(settings, run_id, step, make)
    verb = "approved" if approve else "rejected"
    click.echo(f"{verb} {step} of run {run_id} as {done.by.name} ({done.by.how}) at {done.at}")


@main.command("approve")
@click.argument("run_id")
@click.argument("step")
@_TEMPORAL_OPTION
@click.pass_context
def approve_cmd(ctx: click.Context, run_id: str, step: str, temporal_address: str | None) -> None:
    """Approve the gate a run on Temporal waits at (STEP, or STEP[ITEM]); the run goes on.

    Who approves is the subject of this machine's mTLS client certificate (execution.temporal.tls),
    checked by the worker; without one, the OS user, recorded as unauthenticated.
    """
    _decide(ctx, temporal_address, run_id, step, True, "")


@main.command("reject")
@click.argument("run_id")
@click.argument("step")
@click.option("--reason", default="", help="Why, recorded in the run's journal.")
@_TEMPORAL_OPTION
@click.pass_context
def reject_cmd(ctx: click.Context, run_id: str, step: str, reason: str, temporal_address: str | None) -> None:
    """Reject the gate a run on Temporal waits at: the run ends there (failed), nothing of the step runs."""
    _decide(ctx, temporal_address, run_id, step, False, reason)


@main.group("schedule")
def schedule_cmd() -> None:
    """Recurring runs on Temporal Schedules (docs/temporal.md): add, list, trigger, remove.

    A time that comes while a run the schedule started still goes is skipped (overlap policy: skip).
    """


def _schedule_of(ctx: click.Context, temporal_address: str | None, name: str, profile: str | None) -> Any:
    settings = _on_temporal_for(ctx, temporal_address, "runbook schedule")
    config = _config_or_fail(_home(ctx))
    from .temporal.schedules import schedule_id

    return settings, config, schedule_id(config.data["cluster"]["name"], name, profile)


@schedule_cmd.command("add")
@click.argument("name", shell_complete=_complete_runbooks)
@click.option("--cron", required=True, metavar="EXPR", help="When, as a cron expression in UTC: '0 3 * * *'.")
@click.option("--profile", "profile_name", metavar="P", shell_complete=_complete_profiles, help="The profile.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter; repeatable.")
@click.option("--secret", "secret_sources", multiple=True, metavar="NAME=SOURCE", help=_SECRET_HELP)
@click.option("--simulate", is_flag=True, help="Each run against the workers' simulated cluster.")
@_TEMPORAL_OPTION
@click.pass_context
def schedule_add_cmd(
    ctx: click.Context,
    name: str,
    cron: str,
    profile_name: str | None,
    params: tuple[str, ...],
    secret_sources: tuple[str, ...],
    simulate: bool,
    temporal_address: str | None,
) -> None:
    """Run NAME at every time --cron names, on this home's cluster. Its gates wait for 'runbook approve'
    (listed by 'runbook approvals') for at most gates.approval_timeout, then the run fails there."""
    settings, config, sid = _schedule_of(ctx, temporal_address, name, profile_name)
    _load_runbook(_home(ctx), name)  # a runbook that is not there is named now, not at 3 a.m.
    from .temporal.schedules import add
    from .temporal.settings import workflow_id

    sources = dict(_secrets(secret_sources, interactive=False).sources)
    run = _TemporalRun(name, profile_name, _params(params), simulate, False, (), None)
    start = _run_start(config, settings, run, sources, "", sid)
    add(settings, sid, workflow_id(config.data, profile_name, name), cron, start)
    click.echo(f"schedule {sid}: {name} at '{cron}' (UTC); a run still going when the next time comes: skipped")


@schedule_cmd.command("list")
@_TEMPORAL_OPTION
@click.option("--json", "as_json", is_flag=True, help="The schedules as a JSON list.")
@click.pass_context
def schedule_list_cmd(ctx: click.Context, temporal_address: str | None, as_json: bool) -> None:
    """The schedules of this home's cluster: when, what, the next time, runs started and skipped."""
    settings = _on_temporal_for(ctx, temporal_address, "runbook schedule")
    config = _config_or_fail(_home(ctx))
    from .temporal.schedules import listed

    found = listed(settings, f"runbook/{config.data['cluster']['name']}/schedule/")
    if as_json:
        _emit_json([asdict(entry) for entry in found])
        return
    if not found:
        click.echo(f"no schedule on Temporal at {settings.address} for cluster {config.data['cluster']['name']}")
    for entry in found:
        nxt = entry.next_runs[0] if entry.next_runs else "never"
        going = f", running: {', '.join(entry.running)}" if entry.running else ""
        click.echo(
            f"{entry.id}  '{entry.cron}'  {entry.runbook}{' --profile ' + entry.profile if entry.profile else ''}  "
            f"next {nxt}; {entry.runs} started, {entry.skipped} skipped (a run still going){going}; "
            f"added by {entry.added_by}"
        )


@schedule_cmd.command("trigger")
@click.argument("name", shell_complete=_complete_runbooks)
@click.option("--profile", "profile_name", metavar="P", shell_complete=_complete_profiles, help="The profile.")
@_TEMPORAL_OPTION
@click.pass_context
def schedule_trigger_cmd(ctx: click.Context, name: str, profile_name: str | None, temporal_address: str | None) -> None:
    """Start the schedule's run now (skipped, as at its times, while a run it started still goes)."""
    settings, _, sid = _schedule_of(ctx, temporal_address, name, profile_name)
    from .temporal.schedules import trigger

    trigger(settings, sid)
    click.echo(f"schedule {sid} triggered")


@schedule_cmd.command("remove")
@click.argument("name", shell_complete=_complete_runbooks)
@click.option("--profile", "profile_name", metavar="P", shell_complete=_complete_profiles, help="The profile.")
@_TEMPORAL_OPTION
@click.pass_context
def schedule_remove_cmd(ctx: click.Context, name: str, profile_name: str | None, temporal_address: str | None) -> None:
    """Remove the schedule: no run starts from it any more (a run it started goes on)."""
    settings, _, sid = _schedule_of(ctx, temporal_address, name, profile_name)
    from .temporal.schedules import remove

    remove(settings, sid)
    click.echo(f"schedule {sid} removed")


@main.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_cmd(shell: str) -> None:
    """Print the shell completion script for SHELL (commands, options, runbook, profile and run names).

    \b
    bash: add   eval "$(runbook completion bash)"   to ~/.bashrc
    zsh:  add   eval "$(runbook completion zsh)"    to ~/.zshrc
    fish: run   runbook completion fish > ~/.config/fish/completions/runbook.fish
    """
    from click.shell_completion import get_completion_class

    completion = get_completion_class(shell)
    assert completion is not None  # click ships all three
    click.echo(completion(main, {}, "runbook", "_RUNBOOK_COMPLETE").source())


def entry() -> None:
    """The ``runbook`` command: ``main``, except that once a command used Temporal's SDK the process
    ends with ``os._exit`` after its output is flushed. The SDK's Rust runtime keeps threads that can
    abort CPython's finalisation ("PyGILState_Release", temporalio sdk-python issue 300), which would
    turn a clean exit code into SIGABRT."""
    try:
        main()
    except SystemExit as exc:
        if "temporalio" not in sys.modules:
            raise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        import os

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
