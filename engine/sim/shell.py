"""Simulated PVE nodes for ``ssh`` steps: a small shell interpreter over the simulated cluster.

``SimShellExecutor`` takes the place of ``SshExecutor`` under ``--simulate``. It reads the script with
the parser ingest uses (``engine/shell/parse.py``) and runs it the way bash would under ``set -eu``
(the whole script is parsed before anything runs, so a command the simulation does not know fails
the step before its first line, with nothing done), command by command against two small
interfaces, so it can be wired to any simulated cluster:

- ``VmOps`` (the PVE side): find a VM by vmid, list VMs, change a VM's config, make it a template,
  and say which nodes and storages exist;
- ``NodeFiles`` (files on the nodes): a JSON-able dict ``{node: {path: {"type", "size", ...}}}``,
  the ``files`` section of the simulation state. Files have a size and a source, never content.

What is simulated: ``qm set/template/config/list/status``, ``wget``, ``curl``, ``xz -d``/``unxz``,
``test``/``[``, ``rm``, ``mkdir``, ``echo``, ``cd``, ``hostname``, ``true``/``false``/``:``, ``set``,
``exit``, ``export``/``NAME=value``, and ``grep``/``head``/``tail`` as filters in a pipe. The
shell part: ``;``, ``&&``, ``||``, ``|``, ``!``, comments, ``\\`` continuations, single and double quotes,
``$'...'``, ``$VAR``/``${VAR}``/``${VAR:-default}`` (an unset variable is an error, as under ``set -u``),
``NAME=value``/``NAME+=value``, ``~``, ``*`` globs over the node's files, and the redirections ``>``,
``>>``, ``2>``, ``2>&1``, ``>&2``, ``&>`` (to ``/dev/null`` or a file). Anything else (``if``, loops, ``$(...)``, here-documents, other programs)
fails clearly, saying what is simulated.
"""

from __future__ import annotations

import fnmatch
import math
import posixpath
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..executors.base import Change, Progress
from ..executors.preview import shell_changes
from ..load.facts import Facts
from ..runbook.actions import Result, ShellCommand, StepFailed
from ..shell.curl import parse_curl, takes_value
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
from .http import Factory, image_sizes, is_factory_url, parse_image_url

SIMULATED = "simulated: qm set/template/config/list/status, wget, curl, xz -d, test -f, rm -f, mkdir -p, echo"
DEFAULT_DOWNLOAD_SIZE = 50 * 1024 * 1024  # size given to a non-factory download


# ---------------------------------------------------------------- interfaces


@dataclass
class VmInfo:
    """What the simulation needs to know of a PVE VM.

    ``config`` is the VM's config as the API shows it (``{"scsi0": "local-lvm:vm-101-disk-0,size=1246M",
    "name": ..., ...}``). ``uid`` is anything that changes when a VM is destroyed and created again
    under the same vmid (``vmgenid``, a creation counter); None when unknown.
    """

    vmid: int
    name: str
    node: str
    status: str = "stopped"
    template: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    uid: str | None = None


class VmOps(Protocol):
    """The PVE side of the simulated cluster, as the simulated nodes see it."""

    def get_vm(self, vmid: int) -> VmInfo | None:
        """The VM with this vmid, wherever it is; None when there is none."""

    def list_vms(self) -> list[VmInfo]:
        """Every VM (templates included)."""

    def set_config(self, vmid: int, changes: Mapping[str, str | None]) -> None:
        """Set config keys (a None value deletes the key)."""

    def make_template(self, vmid: int) -> None:
        """Mark the VM as a template (the disks were already renamed through ``set_config``)."""

    def node_status(self, node: str) -> str | None:
        """``"online"``, ``"offline"``, or None when the cluster has no such node."""

    def storage_exists(self, node: str, storage: str) -> bool:
        """Whether the storage is defined and enabled on that node."""


STANDARD_DIRS = frozenset(
    {
        "/",
        "/root",
        "/tmp",
        "/var",
        "/var/tmp",
        "/var/lib",
        "/var/lib/vz",
        "/var/lib/vz/template",
        "/var/lib/vz/template/iso",
        "/var/lib/vz/template/cache",
        "/var/lib/vz/images",
        "/var/lib/vz/dump",
        "/var/lib/vz/snippets",
        "/var/lib/vz/import",
        "/etc",
        "/etc/pve",
        "/usr",
        "/usr/local",
        "/usr/local/bin",
        "/opt",
        "/mnt",
        "/mnt/pve",
        "/dev",
        "/home",
        "/srv",
    }
)
SPECIAL_FILES = frozenset({"/dev/null", "/dev/zero", "/dev/urandom"})


class NodeFiles:
    """Files and folders on the simulated nodes, in a JSON-able dict (kept by reference, mutated in place).

    Layout: ``{node: {absolute path: {"type": "file", "size": int, "source": str, ...}}}``; folders a
    script created are ``{"type": "dir"}``. The usual PVE folders (``STANDARD_DIRS``) exist on every
    node without being listed, and so does every parent of a listed path.
    """

    def __init__(self, data: dict[str, dict[str, dict[str, Any]]] | None = None):
        self.data = data if data is not None else {}

    def _node(self, node: str) -> dict[str, dict[str, Any]]:
        return self.data.setdefault(node, {})

    def get(self, node: str, path: str) -> dict[str, Any] | None:
        """The file's record, or None (also for folders)."""
        entry = self.data.get(node, {}).get(path)
        return entry if entry is not None and entry.get("type", "file") == "file" else None

    def is_file(self, node: str, path: str) -> bool:
        return path in SPECIAL_FILES or self.get(node, path) is not None

    def is_dir(self, node: str, path: str) -> bool:
        if path in STANDARD_DIRS:
            return True
        entries = self.data.get(node, {})
        entry = entries.get(path)
        if entry is not None:
            return entry.get("type") == "dir"
        prefix = path.rstrip("/") + "/"
        return any(other.startswith(prefix) for other in entries)

    def exists(self, node: str, path: str) -> bool:
        return self.is_file(node, path) or self.is_dir(node, path)

    def put(self, node: str, path: str, size: int, **meta: Any) -> dict[str, Any]:
        """Record a file (replacing any file there) and return its record."""
        record = {"type": "file", "size": int(size), **meta}
        self._node(node)[path] = record
        return record

    def mkdir(self, node: str, path: str) -> None:
        if not self.is_dir(node, path):
            self._node(node)[path] = {"type": "dir"}

    def remove(self, node: str, path: str) -> None:
        """Remove a file, or a folder with everything under it."""
        entries = self._node(node)
        prefix = path.rstrip("/") + "/"
        for other in [p for p in entries if p == path or p.startswith(prefix)]:
            del entries[other]

    def paths(self, node: str) -> list[str]:
        return sorted(self.data.get(node, {}))


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
            run = _Run(self, script, node, env, progress)
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
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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

_COMMANDS = {
    "qm",
    "wget",
    "curl",
    "xz",
    "unxz",
    "test",
    "[",
    "rm",
    "mkdir",
    "echo",
    "cd",
    "hostname",
    "true",
    "false",
    ":",
    "set",
    "exit",
    "export",
    "grep",
    "head",
    "tail",
}
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
                        if part.kind == "lit" or (part.kind == "var" and _NAME.fullmatch(part.text)):
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
                if name not in _COMMANDS:
                    return _not_simulated(name) + where
                if name == "qm":
                    sub = command.words[1].literal if len(command.words) > 1 else ""
                    if sub is not None and sub not in _QM:
                        return _not_simulated(f"qm {sub}".strip()) + where
    return None


# ---------------------------------------------------------------- running


class _Exit(Exception):
    def __init__(self, code: int):
        self.code = code


@dataclass
class _Out:
    status: int = 0
    out: str = ""
    err: str = ""


class _Run:
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
        except _Exit as stop:
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

    def command(self, command: Simple, stdin: str) -> _Out:
        self.line = self.script.line(command.start)
        try:
            return self._command(command, stdin)
        except _Unbound as exc:
            # set -u: the shell itself stops, whatever && or || says
            self.emit("", f"bash: line {self.line}: {exc.name}: unbound variable\n")
            raise _Exit(1) from None

    def _command(self, command: Simple, stdin: str) -> _Out:
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
            return self.redirect(command, _Out())
        name = args[0]
        if name not in _COMMANDS or (name == "qm" and len(args) > 1 and args[1] not in _QM):
            shown = f"qm {args[1]}" if name == "qm" and len(args) > 1 else name
            self.unsupported = _not_simulated(shown) + f" (script line {self.line})"
            raise _Exit(127)
        saved = dict(self.vars)
        self.vars.update(assigns)  # NAME=value before a command: for that command only
        try:
            result = _BUILTINS[name](self, args, stdin)
        finally:
            if assigns:
                self.vars = saved
        return self.redirect(command, result)

    def redirect(self, command: Simple, result: _Out) -> _Out:
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
        routed = _Out(status=result.status)
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


# ---------------------------------------------------------------- commands


def _echo(run: _Run, args: list[str], stdin: str) -> _Out:
    words = args[1:]
    newline = True
    while words and re.fullmatch(r"-[neE]+", words[0]):
        if "n" in words[0]:
            newline = False
        words = words[1:]
    return _Out(out=" ".join(words) + ("\n" if newline else ""))


def _true(run: _Run, args: list[str], stdin: str) -> _Out:
    return _Out()


def _false(run: _Run, args: list[str], stdin: str) -> _Out:
    return _Out(status=1)


def _exit(run: _Run, args: list[str], stdin: str) -> _Out:
    code = int(args[1]) if len(args) > 1 and args[1].lstrip("-").isdigit() else 0
    raise _Exit(code & 255)


def _export(run: _Run, args: list[str], stdin: str) -> _Out:
    for arg in args[1:]:
        if arg.startswith("-"):
            continue
        name, eq, value = arg.partition("=")
        if not _NAME.fullmatch(name):
            return _Out(status=1, err=f"bash: line {run.line}: export: `{arg}': not a valid identifier\n")
        if eq:
            run.vars[name] = value
    return _Out()


def _set(run: _Run, args: list[str], stdin: str) -> _Out:
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in ("-o", "+o"):
            option = rest.pop(0) if rest else ""
            on = arg == "-o"
            if option == "pipefail":
                run.pipefail = on
            elif option == "errexit":
                run.errexit = on
            elif option == "nounset":
                run.nounset = on
            elif option not in ("xtrace", "verbose", "noclobber"):
                return _Out(status=2, err=f"bash: line {run.line}: set: {option}: invalid option name\n")
            continue
        if arg[:1] not in ("-", "+"):
            run.unsupported = (
                f"simulation: 'set' with positional arguments is not simulated on PVE nodes (script line {run.line})"
            )
            raise _Exit(127)
        on = arg[0] == "-"
        for letter in arg[1:]:
            if letter == "e":
                run.errexit = on
            elif letter == "u":
                run.nounset = on
            elif letter == "o":
                option = rest.pop(0) if rest else ""
                if option == "pipefail":
                    run.pipefail = on
            elif letter not in "xv":
                return _Out(status=2, err=f"bash: line {run.line}: set: -{letter}: invalid option\n")
    return _Out()


def _cd(run: _Run, args: list[str], stdin: str) -> _Out:
    target = run.path(args[1]) if len(args) > 1 else run.vars.get("HOME", "/root")
    if not run.x.files.is_dir(run.node, target):
        return _Out(
            status=1,
            err=f"bash: line {run.line}: cd: {args[1] if len(args) > 1 else target}: No such file or directory\n",
        )
    run.cwd = target
    return _Out()


def _hostname(run: _Run, args: list[str], stdin: str) -> _Out:
    return _Out(out=run.node + "\n")


def _test(run: _Run, args: list[str], stdin: str) -> _Out:
    words = args[1:]
    if args[0] == "[":
        if not words or words[-1] != "]":
            return _Out(status=2, err=f"bash: line {run.line}: [: missing `]'\n")
        words = words[:-1]
    negate = False
    while words and words[0] == "!" and len(words) > 1:
        negate = not negate
        words = words[1:]
    try:
        result = _test_expr(run, words)
    except ValueError as exc:
        return _Out(status=2, err=f"bash: line {run.line}: {args[0]}: {exc}\n")
    if negate:
        result = not result
    return _Out(status=0 if result else 1)


def _test_expr(run: _Run, words: list[str]) -> bool:
    files = run.x.files
    if not words:
        return False
    if len(words) == 1:
        return words[0] != ""
    if len(words) == 2:
        op, operand = words
        if op in ("-n", "-z"):
            return (operand != "") == (op == "-n")
        path = run.path(operand)
        if op == "-f":
            return files.is_file(run.node, path)
        if op == "-d":
            return files.is_dir(run.node, path)
        if op in ("-e", "-r", "-w", "-a"):
            return files.exists(run.node, path)
        if op == "-s":
            record = files.get(run.node, path)
            return bool(record and record.get("size", 0) > 0) or files.is_dir(run.node, path)
        if op == "-x":
            return files.is_dir(run.node, path)
        raise ValueError(f"{op}: unary operator expected")
    if len(words) == 3:
        left, op, right = words
        if op in ("=", "=="):
            return left == right
        if op == "!=":
            return left != right
        if op in ("-eq", "-ne", "-lt", "-le", "-gt", "-ge"):
            try:
                a, b = int(left), int(right)
            except ValueError:
                raise ValueError(
                    f"{left if not left.lstrip('-').isdigit() else right}: integer expression expected"
                ) from None
            return {"-eq": a == b, "-ne": a != b, "-lt": a < b, "-le": a <= b, "-gt": a > b, "-ge": a >= b}[op]
        raise ValueError(f"{op}: binary operator expected")
    raise ValueError("too many arguments")


def _rm(run: _Run, args: list[str], stdin: str) -> _Out:
    force = recursive = False
    paths = []
    options = True
    for arg in args[1:]:
        if options and arg == "--":
            options = False
        elif options and arg in ("--force",):
            force = True
        elif options and arg in ("--recursive",):
            recursive = True
        elif options and re.fullmatch(r"-[frRv]+", arg):
            force = force or "f" in arg
            recursive = recursive or "r" in arg or "R" in arg
        elif options and arg.startswith("-") and arg != "-":
            return _Out(status=1, err=f"rm: invalid option -- '{arg.lstrip('-')[:1]}'\n")
        else:
            paths.append(arg)
    if not paths and not force:
        return _Out(status=1, err="rm: missing operand\n")
    result = _Out()
    for arg in paths:
        path = run.path(arg)
        if path == "/" or path in STANDARD_DIRS and recursive:
            result.status = 1
            result.err += f"rm: refusing to remove '{arg}' (simulation: a system folder)\n"
        elif run.x.files.is_file(run.node, path):
            if path not in SPECIAL_FILES:
                run.x.files.remove(run.node, path)
        elif run.x.files.is_dir(run.node, path):
            if not recursive:
                result.status = 1
                result.err += f"rm: cannot remove '{arg}': Is a directory\n"
            else:
                run.x.files.remove(run.node, path)
        elif not force:
            result.status = 1
            result.err += f"rm: cannot remove '{arg}': No such file or directory\n"
    return result


def _mkdir(run: _Run, args: list[str], stdin: str) -> _Out:
    parents = False
    paths = []
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in ("-p", "--parents"):
            parents = True
        elif arg in ("-v", "--verbose"):
            pass
        elif arg == "-m" and rest:
            rest.pop(0)
        elif arg.startswith("--mode="):
            pass
        elif re.fullmatch(r"-[pv]+", arg):
            parents = parents or "p" in arg
        elif arg.startswith("-") and arg != "-":
            return _Out(status=1, err=f"mkdir: invalid option -- '{arg.lstrip('-')[:1]}'\n")
        else:
            paths.append(arg)
    if not paths:
        return _Out(status=1, err="mkdir: missing operand\n")
    result = _Out()
    files = run.x.files
    for arg in paths:
        path = run.path(arg)
        if files.is_file(run.node, path):
            result.status = 1
            result.err += f"mkdir: cannot create directory '{arg}': File exists\n"
            continue
        if files.is_dir(run.node, path):
            if not parents:
                result.status = 1
                result.err += f"mkdir: cannot create directory '{arg}': File exists\n"
            continue
        if not parents and not files.is_dir(run.node, posixpath.dirname(path)):
            result.status = 1
            result.err += f"mkdir: cannot create directory '{arg}': No such file or directory\n"
            continue
        if parents:
            missing = []
            current = path
            while not files.is_dir(run.node, current):
                if files.is_file(run.node, current):
                    result.status = 1
                    result.err += f"mkdir: cannot create directory '{arg}': Not a directory\n"
                    missing = []
                    break
                missing.append(current)
                current = posixpath.dirname(current)
            for folder in reversed(missing):
                files.mkdir(run.node, folder)
        else:
            files.mkdir(run.node, path)
    return result


def _grep(run: _Run, args: list[str], stdin: str) -> _Out:
    extended = fixed = quiet = invert = ignore = count = whole_line = False
    pattern: str | None = None
    rest = args[1:]
    operands = []
    while rest:
        arg = rest.pop(0)
        if arg == "-e" and rest:
            pattern = rest.pop(0)
        elif re.fullmatch(r"-[EFqvicx]+", arg):
            extended |= "E" in arg
            fixed |= "F" in arg
            quiet |= "q" in arg
            invert |= "v" in arg
            ignore |= "i" in arg
            count |= "c" in arg
            whole_line |= "x" in arg
        elif arg.startswith("-") and arg != "-":
            run.unsupported = f"simulation: grep option {arg} is not simulated on PVE nodes (script line {run.line})"
            raise _Exit(127)
        else:
            operands.append(arg)
    if pattern is None:
        if not operands:
            return _Out(status=2, err="Usage: grep [OPTION]... PATTERNS [FILE]...\n")
        pattern = operands.pop(0)
    if operands:
        run.unsupported = (
            f"simulation: grep reads only piped input on PVE nodes (files have no content in the "
            f"simulation; use test -f to check a file) (script line {run.line})"
        )
        raise _Exit(127)
    if fixed:
        regex = re.escape(pattern)
    elif extended:
        regex = pattern
    else:  # basic regular expressions: \( \) \| \{ \} are the operators, bare ones are literal
        regex = re.sub(r"\\([(){}|+?])|([(){}|+?])", lambda m: m.group(1) or "\\" + m.group(2), pattern)
    try:
        compiled = re.compile(f"(?:{regex})\\Z" if whole_line else regex, re.I if ignore else 0)
    except re.error as exc:
        return _Out(status=2, err=f"grep: {exc}\n")
    lines = [
        line
        for line in stdin.splitlines()
        if bool(compiled.match(line) if whole_line else compiled.search(line)) != invert
    ]
    status = 0 if lines else 1
    if quiet:
        return _Out(status=status)
    if count:
        return _Out(status=status, out=f"{len(lines)}\n")
    return _Out(status=status, out="".join(line + "\n" for line in lines))


def _head_tail(run: _Run, args: list[str], stdin: str) -> _Out:
    count = 10
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg == "-n" and rest:
            value = rest.pop(0)
        elif arg.startswith("-n"):
            value = arg[2:]
        elif re.fullmatch(r"-\d+", arg):
            value = arg[1:]
        else:
            run.unsupported = (
                f"simulation: {args[0]} {arg} is not simulated on PVE nodes; {args[0]} filters piped "
                f"input only (script line {run.line})"
            )
            raise _Exit(127)
        if not value.lstrip("+-").isdigit():
            return _Out(status=1, err=f"{args[0]}: invalid number of lines: '{value}'\n")
        count = abs(int(value))
    lines = stdin.splitlines()
    chosen = lines[:count] if args[0] == "head" else (lines[-count:] if count else [])
    return _Out(out="".join(line + "\n" for line in chosen))


# ---- downloads


def _download(run: _Run, tool: str, url: str, path: str, shown_path: str, quiet: bool, fail: bool) -> _Out:
    """Fetch ``url`` into node file ``path`` (simulated): checks the URL and the folder, records the file."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        if tool == "wget":
            return _Out(
                status=1,
                err=f"{url}: Unsupported scheme '{parts.scheme}'.\n" if parts.scheme else f"{url}: Scheme missing.\n",
            )
        return _Out(
            status=1 if parts.scheme else 3,
            err=f'curl: (1) Protocol "{parts.scheme}" not supported\n'
            if parts.scheme
            else "curl: (3) URL rejected: No host part in the URL\n",
        )
    size: int
    raw: int | None = None
    content_type = "application/octet-stream"
    if is_factory_url(url):
        reply = run.x.factory.respond("GET", url)
        if reply.status >= 400:
            if tool == "wget":
                return _Out(
                    status=8,
                    err=f"--  {url}\nHTTP request sent, awaiting response... {reply.status} {reply.reason}\n"
                    f"ERROR {reply.status}: {reply.reason}.\n",
                )
            if fail:
                return _Out(status=22, err=f"curl: (22) The requested URL returned error: {reply.status}\n")
            size = len(reply.body.encode())
        else:
            content_type = reply.headers.get("content-type", content_type)
            image = parse_image_url(url)
            if image is not None:
                size, raw = image_sizes(*image)
            else:
                size = len(reply.body.encode())
    else:
        size = DEFAULT_DOWNLOAD_SIZE
    if path == "-":
        return _Out(status=0, out="")
    parent = posixpath.dirname(path)
    if not run.x.files.is_dir(run.node, parent):
        if tool == "wget":
            return _Out(status=3, err=f"{shown_path}: No such file or directory\n")
        return _Out(status=23, err="curl: (23) Failure writing output to destination\n")
    if run.x.files.is_dir(run.node, path):
        if tool == "wget":
            return _Out(status=3, err=f"{shown_path}: Is a directory\n")
        return _Out(status=23, err="curl: (23) Failure writing output to destination\n")
    meta: dict[str, Any] = {"source": url}
    if raw is not None:
        meta["uncompressed_size"] = raw
    run.x.files.put(run.node, path, size, **meta)
    if quiet:
        return _Out()
    if tool == "wget":
        return _Out(
            err=(
                f"--  {url}\nResolving {parts.hostname} ({parts.hostname})... simulated\n"
                f"HTTP request sent, awaiting response... 200 OK\n"
                f"Length: {size} ({_human(size)}) [{content_type}]\nSaving to: '{shown_path}'\n\n"
                f"'{shown_path}' saved [{size}/{size}]\n"
            )
        )
    return _Out(err=f"  % Total    % Received  Xferd\n100 {_human(size)}  100 {_human(size)}  (simulated)\n")


def _wget(run: _Run, args: list[str], stdin: str) -> _Out:
    quiet = False
    output: str | None = None
    prefix: str | None = None
    urls = []
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in (
            "-q",
            "--quiet",
            "-nv",
            "--no-verbose",
            "-c",
            "--continue",
            "-N",
            "--timestamping",
            "--no-check-certificate",
            "--show-progress",
            "-nc",
            "--no-clobber",
        ):
            quiet = quiet or arg in ("-q", "--quiet")
        elif arg.startswith("--progress=") or arg.startswith("--tries=") or arg.startswith("--timeout="):
            pass
        elif arg in ("-O", "--output-document", "-P", "--directory-prefix"):
            if not rest:
                return _Out(status=2, err=f"wget: option requires an argument -- '{arg.lstrip('-')[:1]}'\n")
            value = rest.pop(0)
            if arg in ("-O", "--output-document"):
                output = value
            else:
                prefix = value
        elif arg.startswith("--output-document="):
            output = arg.split("=", 1)[1]
        elif arg.startswith("--directory-prefix="):
            prefix = arg.split("=", 1)[1]
        elif arg.startswith("-O") and len(arg) > 2:
            output = arg[2:]
        elif re.fullmatch(r"-q[cN]*O", arg) or re.fullmatch(r"-[cN]*qO", arg):
            quiet = True
            if not rest:
                return _Out(status=2, err="wget: option requires an argument -- 'O'\n")
            output = rest.pop(0)
        elif re.fullmatch(r"-[qcN]+", arg):
            quiet = quiet or "q" in arg
        elif arg.startswith("-"):
            run.unsupported = f"simulation: wget option {arg} is not simulated on PVE nodes (script line {run.line})"
            raise _Exit(127)
        else:
            urls.append(arg)
    if not urls:
        return _Out(status=1, err="wget: missing URL\nUsage: wget [OPTION]... [URL]...\n")
    result = _Out()
    for url in urls:
        if output is not None:
            shown = output
        else:
            name = posixpath.basename(urlsplit(url).path) or "index.html"
            shown = posixpath.join(prefix, name) if prefix else name
            base = run.path(shown)
            number = 1
            while run.x.files.exists(run.node, run.path(shown)):  # wget keeps the old file: name.1, name.2
                shown = f"{base}.{number}" if prefix or shown.startswith("/") else f"{name}.{number}"
                number += 1
        one = _download(run, "wget", url, run.path(shown) if shown != "-" else "-", shown, quiet, True)
        result.out += one.out
        result.err += one.err
        if one.status:
            result.status = one.status
            break
    return result


def _curl(run: _Run, args: list[str], stdin: str) -> _Out:
    call = parse_curl(args[1:])
    for option, value in call.options:
        if option not in _CURL_SIMULATED:
            run.unsupported = f"simulation: curl option {option} is not simulated on PVE nodes (script line {run.line})"
            raise _Exit(127)
        if value is None and takes_value(option):
            return _Out(status=2, err=f"curl: option {option}: requires parameter\n")
    fail = call.has("-f", "--fail", "--fail-with-body")
    silent = call.has("-s", "--silent")
    show_error = call.has("-S", "--show-error")
    output = call.value("-o", "--output")
    urls = call.urls
    if not urls:
        return _Out(status=2, err="curl: no URL specified!\n")
    url = urls[0]
    if output is None and call.has("-O", "--remote-name"):
        output = posixpath.basename(urlsplit(url).path)
    if output is None:
        # to stdout: text answers (the factory's JSON) are printed; a binary image is not
        if is_factory_url(url) and parse_image_url(url) is None:
            reply = run.x.factory.respond("GET", url)
            if reply.status >= 400 and fail:
                return _Out(
                    status=22,
                    err=f"curl: (22) The requested URL returned error: {reply.status}\n"
                    if (not silent or show_error)
                    else "",
                )
            return _Out(out=reply.body)
        one = _download(run, "curl", url, "-", "-", True, fail)
        if one.status:
            return one
        return _Out(
            status=23,
            err='Warning: Binary output can mess up your terminal. Use "--output -" to tell\n'
            'Warning: curl to output it to your terminal anyway, or consider "--output\n'
            'Warning: <FILE>" to save to a file.\n',
        )
    path = run.path(output)
    if call.has("--create-dirs"):
        folder = posixpath.dirname(path)
        while not run.x.files.is_dir(run.node, folder):
            run.x.files.mkdir(run.node, folder)
            folder = posixpath.dirname(folder)
    one = _download(run, "curl", url, path, output, silent, fail)
    if one.status and silent and not show_error:
        one.err = ""
    return one


def _xz(run: _Run, args: list[str], stdin: str) -> _Out:
    decompress = args[0] == "unxz"
    force = keep = verbose = False
    paths = []
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in ("--decompress", "--uncompress"):
            decompress = True
        elif arg == "--force":
            force = True
        elif arg == "--keep":
            keep = True
        elif arg == "--verbose":
            verbose = True
        elif arg == "-T" and rest:
            rest.pop(0)
        elif arg.startswith("--threads=") or re.fullmatch(r"-T\d+", arg):
            pass
        elif re.fullmatch(r"-[dfkvqT0-9]+", arg):
            decompress |= "d" in arg
            force |= "f" in arg
            keep |= "k" in arg
            verbose |= "v" in arg
        elif arg.startswith("-"):
            run.unsupported = f"simulation: xz option {arg} is not simulated on PVE nodes (script line {run.line})"
            raise _Exit(127)
        else:
            paths.append(arg)
    if not decompress:
        run.unsupported = (
            f"simulation: xz compression is not simulated on PVE nodes, only xz -d (script line {run.line})"
        )
        raise _Exit(127)
    if not paths:
        run.unsupported = (
            f"simulation: xz reading standard input is not simulated on PVE nodes (script line {run.line})"
        )
        raise _Exit(127)
    result = _Out()
    files = run.x.files
    for arg in paths:
        path = run.path(arg)
        record = files.get(run.node, path)
        if record is None:
            result.status = 1
            result.err += f"xz: {arg}: {'Is a directory, skipping' if files.is_dir(run.node, path) else 'No such file or directory'}\n"
            continue
        if not path.endswith((".xz", ".txz")):
            result.status = 1
            result.err += f"xz: {arg}: Filename has an unknown suffix, skipping\n"
            continue
        target = path[:-3] if path.endswith(".xz") else path[:-4] + ".tar"
        if files.exists(run.node, target) and not force:
            result.status = 1
            result.err += f"xz: {target if arg.startswith('/') else arg[:-3]}: File exists\n"
            continue
        size = int(record.get("uncompressed_size") or record.get("size", 0) * 12)
        files.put(run.node, target, size, source=record.get("source", ""), decompressed_from=path)
        if not keep:
            files.remove(run.node, path)
        if verbose:
            result.err += f"{arg} (1/1)\n  100 %   {_human(int(record.get('size', 0)))} / {_human(size)}\n"
    return result


# Options the simulated curl knows: those it acts on, and those that change nothing in a simulation.
_CURL_SIMULATED = frozenset(
    {
        "-f",
        "--fail",
        "--fail-with-body",
        "-s",
        "--silent",
        "-S",
        "--show-error",
        "-o",
        "--output",
        "-O",
        "--remote-name",
        "--create-dirs",
        "-L",
        "--location",
        "-k",
        "--insecure",
        "--progress-bar",
        "-#",
        "--compressed",
        "--retry-all-errors",
        "--retry",
        "--retry-delay",
        "--retry-max-time",
        "--connect-timeout",
        "--max-time",
        "-m",
        "-C",
        "--continue-at",
    }
)

# ---- qm

_DISK_KEY = re.compile(r"(scsi|virtio|sata|ide)\d+\Z|efidisk0\Z|tpmstate0\Z")
_KEY = re.compile(r"[a-z][a-z0-9_-]*\Z")


def _qm(run: _Run, args: list[str], stdin: str) -> _Out:
    if len(args) < 2:
        return _Out(status=255, err="ERROR: no command specified\n")
    sub = args[1]
    if sub == "list":
        return _qm_list(run, args[2:])
    if len(args) < 3:
        return _Out(status=255, err=f"400 not enough arguments\nqm {sub} <vmid>\n")
    vmid_text = args[2]
    if not vmid_text.isdigit():
        return _Out(
            status=255,
            err=f"400 Parameter verification failed.\nvmid: type check ('integer') failed - got '{vmid_text}'\n",
        )
    vmid = int(vmid_text)
    vm = run.x.vms.get_vm(vmid)
    if vm is None or vm.node != run.node:
        return _Out(status=2, err=f"Configuration file 'nodes/{run.node}/qemu-server/{vmid}.conf' does not exist\n")
    if sub == "config":
        return _Out(out="".join(f"{key}: {vm.config[key]}\n" for key in sorted(vm.config)))
    if sub == "status":
        return _Out(out=f"status: {vm.status}\n")
    if sub == "template":
        return _qm_template(run, vm, args[3:])
    return _qm_set(run, vm, args[3:])


def _qm_list(run: _Run, args: list[str]) -> _Out:
    rows = [vm for vm in run.x.vms.list_vms() if vm.node == run.node]
    lines = [f"{'VMID':>10} {'NAME':<20} {'STATUS':<10} {'MEM(MB)':>10} {'BOOTDISK(GB)':>12} {'PID':>10}"]
    for vm in sorted(rows, key=lambda v: v.vmid):
        memory = str(vm.config.get("memory", 2048))
        disk = _disk_gb(vm.config)
        pid = str(10000 + vm.vmid) if vm.status == "running" else "0"
        lines.append(f"{vm.vmid:>10} {vm.name[:20]:<20} {vm.status:<10} {memory:>10} {disk:>12} {pid:>10}")
    return _Out(out="\n".join(lines) + "\n")


def _disk_gb(config: Mapping[str, Any]) -> str:
    for key in ("scsi0", "virtio0", "sata0", "ide0"):
        value = str(config.get(key, ""))
        match = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", value)
        if match:
            number = float(match.group(1))
            factor = {"K": 1 / 1024 / 1024, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024**3}[match.group(2)]
            return f"{number * factor:.2f}"
    return "0.00"


def _qm_template(run: _Run, vm: VmInfo, extra: list[str]) -> _Out:
    if extra and not (len(extra) == 2 and extra[0] == "--disk"):
        return _Out(status=255, err="400 too many arguments\nqm template <vmid> [OPTIONS]\n")
    if vm.template:
        return _Out(status=255, err="you can't convert a template to a template\n")
    if vm.status == "running":
        return _Out(status=255, err="you can't convert a VM to template if VM is running\n")
    changes: dict[str, str | None] = {}
    err = ""
    for key, value in vm.config.items():
        if not (_DISK_KEY.match(key) and isinstance(value, str)):
            continue
        renamed = re.sub(rf"\bvm-{vm.vmid}-disk-(\d+)", rf"base-{vm.vmid}-disk-\1", value)
        if renamed != value:
            changes[key] = renamed
            old = re.search(rf"vm-{vm.vmid}-disk-\d+", value)
            assert old is not None
            new = old.group(0).replace("vm-", "base-", 1)
            err += f'  Renamed "{old.group(0)}" to "{new}" in volume group "pve"\n  Logical volume pve/{new} changed.\n'
    if changes:
        run.x.vms.set_config(vm.vmid, changes)
    run.x.vms.make_template(vm.vmid)
    return _Out(err=err)


def _qm_set(run: _Run, vm: VmInfo, options: list[str]) -> _Out:
    pairs: list[tuple[str, str]] = []
    rest = list(options)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-"):
            return _Out(status=255, err="400 too many arguments\nqm set <vmid> [OPTIONS]\n")
        key, eq, value = arg.lstrip("-").partition("=")
        if key == "skiplock":
            continue
        if not eq:
            if not rest:
                return _Out(status=255, err=f"400 Parameter verification failed.\n{key}: property is missing a value\n")
            value = rest.pop(0)
        if not _KEY.match(key):
            return _Out(status=255, err=f"Unknown option: {key}\n400 unable to parse option\n")
        pairs.append((key, value))
    if not pairs:
        return _Out(status=255, err="400 no options specified\n")
    shown = " ".join(f"-{key} {value}" for key, value in pairs)
    out = f"update VM {vm.vmid}: {shown}\n"
    changes: dict[str, str | None] = {}
    config = dict(vm.config)
    for key, value in pairs:
        if key == "delete":
            for name in filter(None, re.split(r"[,;\s]+", value)):
                changes[name] = None
                config.pop(name, None)
            continue
        if key == "digest":
            continue
        if _DISK_KEY.match(key):
            result = _allocate_disk(run, vm, key, value, config)
            if isinstance(result, _Out):
                result.out = out + result.out
                return result
            value, message = result
            out += message
        changes[key] = value
        config[key] = value
    run.x.vms.set_config(vm.vmid, changes)
    return _Out(out=out)


def _allocate_disk(run: _Run, vm: VmInfo, key: str, value: str, config: dict[str, Any]) -> tuple[str, str] | _Out:
    """The config value for a disk option, allocating or importing a volume (STORAGE:SIZE, import-from=)."""
    first, _, opts_text = value.partition(",")
    options = [opt for opt in opts_text.split(",") if opt] if opts_text else []
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9._-]*):(\d+(?:\.\d+)?|cloudinit)", first)
    if not match:
        return value, ""  # an existing volume, none, cdrom, an iso: set as given
    storage, size_text = match.groups()
    if not run.x.vms.storage_exists(run.node, storage):
        return _Out(status=255, err=f"storage '{storage}' does not exist\n")
    if size_text == "cloudinit":
        return (
            f"{storage}:vm-{vm.vmid}-cloudinit,media=cdrom",
            f"{key}: successfully created disk '{storage}:vm-{vm.vmid}-cloudinit,media=cdrom'\n",
        )
    kept = [opt for opt in options if not opt.startswith("import-from=")]
    imports = [opt.split("=", 1)[1] for opt in options if opt.startswith("import-from=")]
    volume = f"vm-{vm.vmid}-disk-{_next_disk(vm.vmid, config)}"
    message = ""
    if imports:
        source = imports[0]
        if not source.startswith("/"):
            return _Out(
                status=255,
                err=f"400 Parameter verification failed.\n{key}: import-from: '{source}' is not an absolute path (simulation: only node paths are simulated)\n",
            )
        record = run.x.files.get(run.node, source)
        if record is None:
            return _Out(
                status=255,
                err=f"qemu-img: Could not open '{source}': Could not open '{source}': No such file or directory\n"
                f"import-from: could not get file size of {source}\n",
            )
        if source.endswith((".xz", ".gz", ".zst", ".bz2")):
            return _Out(
                status=255,
                err=f"import-from: '{source}' is compressed, which qemu-img cannot read: decompress it first (xz -d)\n",
            )
        size_bytes = int(record.get("size", 0))
        size = _pve_size(size_bytes)
        message = (
            f"importing disk '{source}' to VM {vm.vmid} ...\n"
            f'  Logical volume "{volume}" created.\n'
            f"transferred 0.0 B of {_human(size_bytes)} (0.00%)\n"
            f"transferred {_human(size_bytes)} of {_human(size_bytes)} (100.00%)\n"
        )
    elif key == "efidisk0" or key == "tpmstate0":
        size = "4M"
    else:
        size = _pve_size(int(float(size_text) * 1024**3))
    result = ",".join([f"{storage}:{volume}", *kept, f"size={size}"])
    message += f"{key}: successfully created disk '{result}'\n"
    return result, message


def _next_disk(vmid: int, config: Mapping[str, Any]) -> int:
    used = set()
    for value in config.values():
        for match in re.finditer(rf"(?:vm|base)-{vmid}-disk-(\d+)", str(value)):
            used.add(int(match.group(1)))
    number = 0
    while number in used:
        number += 1
    return number


def _pve_size(size: int) -> str:
    """A byte count as PVE writes disk sizes: whole G when exact, else M rounded up."""
    if size > 0 and size % 1024**3 == 0:
        return f"{size // 1024**3}G"
    return f"{max(1, math.ceil(size / 1024**2))}M"


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{size} B"


_BUILTINS: dict[str, Callable[[_Run, list[str], str], _Out]] = {
    "echo": _echo,
    "true": _true,
    ":": _true,
    "false": _false,
    "exit": _exit,
    "export": _export,
    "set": _set,
    "cd": _cd,
    "hostname": _hostname,
    "test": _test,
    "[": _test,
    "rm": _rm,
    "mkdir": _mkdir,
    "grep": _grep,
    "head": _head_tail,
    "tail": _head_tail,
    "wget": _wget,
    "curl": _curl,
    "xz": _xz,
    "unxz": _xz,
    "qm": _qm,
}
