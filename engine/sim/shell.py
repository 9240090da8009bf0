"""Simulated PVE nodes for ``ssh`` steps: a small shell interpreter over the simulated cluster.

``SimShellExecutor`` takes the place of ``SshExecutor`` under ``--simulate``. It reads the script with
the parser ingest uses (``engine/shell/parse.py``) and runs it the way bash would under ``set -eu``
(the whole script is parsed before anything runs, so a command the simulation does not know fails
the step before its first line, with nothing done), command by command against two small
interfaces, so it can be wired to any simulated cluster:

- ``VmOps`` (the PVE side): find a VM by vmid, list VMs, change a VM's config, make it a template,
  and say which nodes and storages exist;
- ``NodeFiles`` (files on the nodes): a JSON-able dict ``{node: {path: {"type", "size", ...}}}``,
  the ``files`` section of the simulation state. Files have a size and a source; their content is
  simulated (``nodefiles.file_content``: a download stands for a line naming its URL).

What is simulated: ``qm set/template/config/list/status``, ``wget``, ``curl``, ``xz -d``/``unxz``,
``sha256sum``/``sha512sum`` (and ``--check``), ``test``/``[``, ``rm``, ``mv``, ``mkdir``, ``echo``, ``cd``, ``hostname``, ``true``/``false``/``:``, ``set``,
``exit``, ``export``/``NAME=value``, and ``grep``/``head``/``tail`` as filters in a pipe. The
shell part: ``;``, ``&&``, ``||``, ``|``, ``!``, comments, ``\\`` continuations, single and double quotes,
``$'...'``, ``$VAR``/``${VAR}``/``${VAR:-default}`` (an unset variable is an error, as under ``set -u``),
``NAME=value``/``NAME+=value``, ``~``, ``*`` globs over the node's files, and the redirections ``>``,
``>>``, ``2>``, ``2>&1``, ``>&2``, ``&>`` (to ``/dev/null`` or a file). Anything else (``if``, loops, ``$(...)``, here-documents, other programs)
fails clearly, saying what is simulated.

Each command is a module of ``engine.sim.commands``, found through its ``COMMANDS`` registry; the
files on the nodes are ``engine.sim.nodefiles.NodeFiles``.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from ..executors.base import Change, Progress
from ..executors.preview import shell_changes
from ..load.facts import Facts
from ..runbook.actions import Result, ShellCommand, StepFailed
from ..shell.parse import (
    AndOr,
    Compound,
    Pipeline,
    Script,
    ShellSyntaxError,
    Simple,
    Word,
    assignment,
    iter_simple,
    parse,
)
from .commands import COMMANDS
from .commands.base import NAME, Exit, Out
from .http import Factory
from .nodefiles import NodeFiles
from .state import SimVm

SIMULATED = (
    "simulated: qm set/template/config/list/status, wget, curl, xz -d, sha256sum, sha512sum, test -f, rm -f, mv, "
    "mkdir -p, echo"
)


# ---------------------------------------------------------------- interfaces


class VmOps(Protocol):
    """The PVE side of the simulated cluster, as the simulated nodes see it: ``SimCluster`` under
    ``--simulate``, which hands out copies of the VMs fakepve keeps, as ``SimVm``."""

    def get_vm(self, vmid: int) -> SimVm | None:
        """The VM with this vmid, wherever it is; None when there is none."""

    def list_vms(self) -> list[SimVm]:
        """Every VM (templates included)."""

    def set_config(self, vmid: int, changes: Mapping[str, str | None]) -> None:
        """Set config keys (a None value deletes the key)."""

    def make_template(self, vmid: int) -> None:
        """Mark the VM as a template (the disks were already renamed through ``set_config``)."""

    def node_status(self, node: str) -> str | None:
        """``"online"``, ``"offline"``, or None when the cluster has no such node."""

    def storage_exists(self, node: str, storage: str) -> bool:
        """Whether the storage is defined and enabled on that node."""


# ---------------------------------------------------------------- the executor


class SimShellExecutor:
    """Runs ``ShellCommand`` scripts (``node`` set) on a simulated PVE node.

    ``vms`` is the PVE side (``VmOps``); ``files`` the nodes' files; ``factory`` answers downloads
    from factory.talos.dev (a fresh ``Factory`` when not given).
    """

    kind = "ssh"

    def __init__(self, vms: VmOps, files: NodeFiles, factory: Factory | None = None):
        self.vms = vms
        self.files = files
        self.factory = factory if factory is not None else Factory()
        self._lock = threading.Lock()

    def missing(self, command: ShellCommand) -> list[str]:
        """Nothing on this machine: the simulated nodes' shell is part of this process."""
        return []

    def preview(self, command: ShellCommand, facts: Facts) -> list[Change]:
        return shell_changes(command, facts)

    def close(self) -> None:
        """Nothing to release: the simulated nodes' state belongs to the simulation."""

    def execute(self, command: ShellCommand, progress: Progress | None = None) -> Result:
        node = command.node
        if node is None:
            raise StepFailed(
                "simulation: the simulated nodes run ssh steps only; local steps run on this machine",
                sent=False,
            )
        status = self.vms.node_status(node)
        if status is None:
            raise StepFailed(
                f"ssh to node {node} failed: the host name does not resolve (simulation: the simulated "
                "cluster has no such node).",
                sent=False,
            )
        if status != "online":
            raise StepFailed(
                f"ssh to node {node} failed: the host is unreachable (simulation: node {node} is offline).",
                retryable=True,
                sent=False,
            )
        try:
            script = parse(command.script)
            _check(script)
        except ShellSyntaxError as exc:
            raise StepFailed(
                f"script on node {node} (simulated) did not run: bash: line {exc.line}: {exc}",
                sent=False,
            ) from None
        unsupported = _first_unsupported(script)
        if unsupported is not None:
            raise StepFailed(unsupported, sent=False, data={"stdout": "", "stderr": "", "exit_code": None})
        env = {
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "SHELL": "/bin/bash",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": node,
        }
        env.update(command.env)
        with self._lock:
            run = Run(self, script, node, env, progress)
            code = run.program()
        data = {"stdout": run.stdout_text(), "stderr": run.stderr_text(), "exit_code": code}
        if run.unsupported is not None:
            raise StepFailed(run.unsupported, data=data)
        if code != 0:
            tail = data["stderr"].rstrip("\n").splitlines()[-20:]
            shown = "\n".join("  " + line for line in tail) or "  (nothing on stderr)"
            raise StepFailed(f"script on node {node} (simulated) exited with {code}; stderr:\n{shown}", data=data)
        return Result(data=data, summary=f"{node}: done (simulated)")


# ---------------------------------------------------------------- reading the script

# ``${NAME:-default}`` (and ``${NAME-default}``, read the same way): the expansions beyond $NAME that run.
_PARAMETER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-(.*)\}", re.S)
_REDIRECT = re.compile(r"(\d*)(.+)")


def _check(script: Script) -> None:
    """Refuse, as bash's parser would, what cannot run at all: ``>&`` to anything but a descriptor."""
    for command in iter_simple(script.units):
        for op, target in command.redirects:
            if op.lstrip("0123456789") in (">&", "<&") and not (target and (target.literal or "").isdigit()):
                raise ShellSyntaxError(f"syntax error near `{op}'", script.line(command.start))


def _redirect(op: str) -> tuple[int, str]:
    """(file descriptor, operator) of a redirection as the parser gives it (``2>&`` -> (2, ">&"))."""
    match = _REDIRECT.fullmatch(op)
    assert match is not None
    fd, kind = match.groups()
    kind = ">" if kind == ">|" else kind
    return (int(fd) if fd else (0 if kind.startswith("<") else 1)), kind


# ---------------------------------------------------------------- what is supported

_QM = {"set", "template", "config", "list", "status"}
_COMPOUNDS = {
    "subshell": "subshells and groups ( ... ) are not simulated",
    "function": "shell functions are not simulated",
}


def _not_simulated(name: str) -> str:
    return f"simulation: '{name}' is not simulated on PVE nodes ({SIMULATED})"


def _first_unsupported(script: Script) -> str | None:
    """The message for the first construct the simulation cannot run, checked before anything runs."""
    for unit in script.units:
        for pipeline in unit.pipelines:
            for command in pipeline.commands:
                where = f" (script line {script.line(command.start)})"
                if isinstance(command, Compound):
                    if command.kind in _COMPOUNDS:
                        return f"simulation: {_COMPOUNDS[command.kind]} on PVE nodes{where}"
                    return _not_simulated("{" if command.kind == "group" else command.kind) + where
                if command.heredoc:
                    return f"simulation: here-documents (<<) are not simulated on PVE nodes{where}"
                if unit.background and command is unit.pipelines[-1].commands[-1]:
                    return f"simulation: background jobs (&) are not simulated on PVE nodes{where}"
                for word in command.assigns + command.words + [w for _, w in command.redirects if w is not None]:
                    for part in word.parts:
                        if part.kind == "lit" or (part.kind == "var" and NAME.fullmatch(part.text)):
                            continue
                        if part.kind == "subst" and _PARAMETER.fullmatch(part.raw):
                            continue
                        what = (
                            "command substitution" if part.raw.startswith(("$(", "`")) else f"the expansion {part.raw}"
                        )
                        return f"simulation: {what} is not simulated on PVE nodes{where}"
                if not command.words:
                    continue
                name = command.words[0].literal
                if name is None:
                    continue  # a variable as command name: checked when it runs
                if name not in COMMANDS:
                    return _not_simulated(name) + where
                if name == "qm":
                    sub = command.words[1].literal if len(command.words) > 1 else ""
                    if sub is not None and sub not in _QM:
                        return _not_simulated(f"qm {sub}".strip()) + where
    return None


# ---------------------------------------------------------------- running


class Run:
    """One script's run: variables, working folder, errexit and the collected output."""

    def __init__(
        self, executor: SimShellExecutor, script: Script, node: str, env: dict[str, str], progress: Progress | None
    ):
        self.x = executor
        self.script = script
        self.node = node
        self.vars = dict(env)
        self.cwd = "/root"
        self.errexit = True
        self.nounset = True
        self.pipefail = False
        self.progress = progress
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self.unsupported: str | None = None
        self.line = 0

    # -- output

    def emit(self, out: str, err: str) -> None:
        for text, sink in ((out, self._stdout), (err, self._stderr)):
            if text:
                sink.append(text)
                if self.progress is not None:
                    for line in text.rstrip("\n").split("\n"):
                        self.progress(line)

    def stdout_text(self) -> str:
        return "".join(self._stdout)

    def stderr_text(self) -> str:
        return "".join(self._stderr)

    # -- structure

    def program(self) -> int:
        status = 0
        try:
            for and_or in self.script.units:
                status, last_is_final = self.and_or(and_or)
                if status != 0 and self.errexit and last_is_final:
                    return status
        except Exit as stop:
            return stop.code
        return status

    def and_or(self, and_or: AndOr) -> tuple[int, bool]:
        status = 0
        ran_last = False
        for index, pipeline in enumerate(and_or.pipelines):
            connector = and_or.ops[index - 1] if index else ""
            if connector == "&&" and status != 0:
                continue
            if connector == "||" and status == 0:
                continue
            status = self.pipeline(pipeline)
            ran_last = index == len(and_or.pipelines) - 1 and not pipeline.negated
        return status, ran_last

    def pipeline(self, pipeline: Pipeline) -> int:
        data = ""
        statuses = []
        for index, command in enumerate(pipeline.commands):
            last = index == len(pipeline.commands) - 1
            assert isinstance(command, Simple)  # compounds were refused before the run
            result = self.command(command, data)
            statuses.append(result.status)
            if last:
                self.emit(result.out, result.err)
            else:
                self.emit("", result.err)
                data = result.out
        status = statuses[-1]
        if self.pipefail:
            status = next((s for s in reversed(statuses) if s != 0), 0)
        if pipeline.negated:
            status = 0 if status else 1
        return status

    def command(self, command: Simple, stdin: str) -> Out:
        self.line = self.script.line(command.start)
        try:
            return self._command(command, stdin)
        except _Unbound as exc:
            # set -u: the shell itself stops, whatever && or || says
            self.emit("", f"bash: line {self.line}: {exc.name}: unbound variable\n")
            raise Exit(1) from None

    def _command(self, command: Simple, stdin: str) -> Out:
        assigns = []
        for word in command.assigns:
            name, value = assignment(word)
            text = self.expand_one(value, tilde=False)
            assigns.append((name, self.vars.get(name, "") + text if word.text.startswith(name + "+=") else text))
        args: list[str] = []
        for word in command.words:
            args += self.expand(word)
        if not args:
            for name, value in assigns:
                self.vars[name] = value
            return self.redirect(command, Out())
        name = args[0]
        if name not in COMMANDS or (name == "qm" and len(args) > 1 and args[1] not in _QM):
            shown = f"qm {args[1]}" if name == "qm" and len(args) > 1 else name
            self.unsupported = _not_simulated(shown) + f" (script line {self.line})"
            raise Exit(127)
        saved = dict(self.vars)
        self.vars.update(assigns)  # NAME=value before a command: for that command only
        try:
            result = COMMANDS[name](self, args, stdin)
        finally:
            if assigns:
                self.vars = saved
        return self.redirect(command, result)

    def redirect(self, command: Simple, result: Out) -> Out:
        if not command.redirects:
            return result
        streams = {1: result.out, 2: result.err}
        targets: dict[int, Any] = {1: "out", 2: "err"}
        for op, target in command.redirects:
            fd, kind = _redirect(op)
            if kind.startswith("<"):
                continue  # input is never read by the simulated commands
            assert target is not None  # the parser wants a word after each redirection
            if kind == ">&":
                targets[fd] = targets.get(int(target.literal or "1"), "out")
                continue
            path = self.path(self.expand_one(target))
            destination = "null" if path == "/dev/null" else ("file", path, kind.endswith(">>"))
            for each in (1, 2) if kind.startswith("&>") else (fd,):
                targets[each] = destination
        routed = Out(status=result.status)
        written: dict[str, tuple[int, bool]] = {}
        for fd in (1, 2):
            target = targets.get(fd, "out")
            text = streams[fd]
            if target == "out":
                routed.out += text
            elif target == "err":
                routed.err += text
            elif isinstance(target, tuple):
                _, path, append = target
                size, app = written.get(path, (0, append))
                written[path] = (size + len(text.encode()), app)
        for path, (size, append) in written.items():
            parent = posixpath.dirname(path)
            if not self.x.files.is_dir(self.node, parent):
                routed.err += f"bash: line {self.line}: {path}: No such file or directory\n"
                routed.status = 1
                continue
            old = self.x.files.get(self.node, path)
            base = int(old.get("size", 0)) if (old and append) else 0
            self.x.files.put(self.node, path, base + size, source="shell redirection")
        return routed

    # -- words

    def expand(self, word: Word) -> list[str]:
        text = self.expand_one(word)
        has_glob = any(
            part.kind == "lit"
            and not part.quote
            and not part.raw.startswith("\\")
            and any(ch in part.text for ch in "*?")
            for part in word.parts
        )
        if not has_glob:
            return [text]
        pattern = self.path(text)
        matches = [
            p
            for p in self.x.files.paths(self.node)
            if fnmatch.fnmatchcase(p, pattern) and posixpath.dirname(p) == posixpath.dirname(pattern)
        ]
        if not matches:
            return [text]
        if text.startswith("/"):
            return matches
        return [posixpath.relpath(p, self.cwd) for p in matches]

    def expand_one(self, word: Word, *, tilde: bool = True) -> str:
        """The word's value; ``tilde``: a leading ``~`` alone or before ``/`` is $HOME (not in an assignment)."""
        out = []
        for index, part in enumerate(word.parts):
            if part.kind == "lit":
                text = part.text
                if index == 0 and tilde and not part.quote and (word.raw == "~" or word.raw.startswith("~/")):
                    out.append(self.variable("HOME", None))
                    text = text[1:]
                out.append(text)
            elif part.kind == "var":
                out.append(self.variable(part.text, None))
            else:
                parameter = _PARAMETER.fullmatch(part.raw)
                assert parameter is not None  # other expansions were refused before the run
                out.append(self.variable(parameter[1], parameter[2]))
        return "".join(out)

    def variable(self, name: str, default: str | None) -> str:
        """$name, or ``default`` when it is unset or empty; unset without a default is an error under set -u."""
        if name in self.vars and (self.vars[name] != "" or default is None):
            return self.vars[name]
        if default is not None:
            return default
        if name == "PWD":
            return self.cwd
        if self.nounset:
            raise _Unbound(name)
        return ""

    def path(self, text: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd, text)) if text else self.cwd


class _Unbound(Exception):
    def __init__(self, name: str):
        self.name = name
