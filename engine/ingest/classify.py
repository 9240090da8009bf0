"""Commands to step drafts: which kind of step each command becomes, and what it says.

- ``curl`` to ``.../api2/json/...`` -> ``api``: method from ``-X`` (else POST with data, GET
  without), parameters from ``-d``/``--data*`` and the query string, ``| jq FILTER`` -> ``extract``.
  Headers, ``-u``, cookies and TLS options are dropped: the engine authenticates and verifies TLS
  from cluster-config.yaml.
- ``pvesh get|ls|create|set|delete PATH --k v`` -> ``api`` (also when run over ssh).
- ``qm``/``pct`` subcommands that are one call of the API (``create``, ``start``, ``destroy``...) -> ``api``.
- ``ssh user@host 'cmd'`` and other node commands (``qm``, ``pct``, ``pveum``, ``pvesm``, ...) -> ``ssh``.
- ``talosctl ...`` -> ``talosctl`` (``-o json | jq F`` -> ``json`` and ``extract``).
- ``for X in a b c; do ONE COMMAND; done`` -> that command's step with ``foreach``.
- anything else -> ``local``.
- ``ssh``, ``local`` and ``talosctl`` steps say what they change (``changes``), or that they only read
  (``changes: []``), from ``effects``; an unknown effect is ``review: true`` (gated on every run).
  Commands that need a terminal become no step: the page's text stays, quoted, as prose.
- the page's shell state is followed: ``NAME=literal`` and ``export NAME=literal`` are values (each
  draft keeps those in force where it stood), a curl URL built from them is read with them,
  ``echo $VAR | jq F`` after ``VAR=$(curl ...)`` is the API step's extract, and a block opening with
  ``cd DIR`` sets the folder the later local steps run in.

Values stay as the page wrote them (``$VMID``, ``<NODE_HOST>``, ``local-zfs``) for ``adapt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ..shell.curl import DATA_OPTIONS, parse_curl
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
from . import effects
from .commands import NODE_COMMANDS
from .page import Code

PLACEHOLDER = re.compile(r"(?<![<\w])<([A-Za-z][A-Za-z0-9_-]*)>(?!>)")
OPEN, CLOSE = "\u27e8", "\u27e9"  # placeholders are protected as ⟨NAME⟩ so '<' is not read as a redirection
_CREDENTIAL_NAME = re.compile(r"(?i)(token|secret|passw|passphrase|api_?key|credential|ticket|csrf|cookie)")
_PRINTS_TOKEN = re.compile(r"\bpveum\s+user\s+token\s+add\b")  # also over ssh, in a loop, in a script
_STATE_COMMANDS = frozenset({"cd", "pushd", "popd", "source", ".", "set", "alias", "read", "shift", "trap", "umask"})
_NODE_PATHS = re.compile(r"^/(var/lib/vz|etc/pve|var/lib/pve|mnt/pve)/")
_PVESH_METHODS = {"get": "GET", "ls": "GET", "create": "POST", "set": "PUT", "delete": "DELETE"}
_SSH_VALUE_OPTS = frozenset("bcDEeFIiJLlmOopQRSWw")
_GUEST_POWER = ("start", "stop", "shutdown", "reboot", "reset", "suspend", "resume")
_JQ_VALUE_OPTS = frozenset({"--arg", "--argjson", "--slurpfile", "--rawfile", "--indent", "-L", "-f", "--from-file"})
#: ``qm``/``pct`` subcommands that are one call of PVE's API: (tool, subcommand) -> (method, path
#: after /nodes/{node}/{qemu|lxc}, the positional arguments in order; those not in the path are parameters).
_GUEST_CALLS: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {
    **{
        (tool, sub): call
        for tool in ("qm", "pct")
        for sub, call in {
            "create": ("POST", "", ("vmid",)),
            "set": ("PUT", "/{vmid}/config", ("vmid",)),
            "destroy": ("DELETE", "/{vmid}", ("vmid",)),
            "clone": ("POST", "/{vmid}/clone", ("vmid", "newid")),
            "template": ("POST", "/{vmid}/template", ("vmid",)),
            "resize": ("PUT", "/{vmid}/resize", ("vmid", "disk", "size")),
            "migrate": ("POST", "/{vmid}/migrate", ("vmid", "target")),
            "snapshot": ("POST", "/{vmid}/snapshot", ("vmid", "snapname")),
            "rollback": ("POST", "/{vmid}/snapshot/{snapname}/rollback", ("vmid", "snapname")),
            "delsnapshot": ("DELETE", "/{vmid}/snapshot/{snapname}", ("vmid", "snapname")),
            **{power: ("POST", f"/{{vmid}}/status/{power}", ("vmid",)) for power in _GUEST_POWER},
        }.items()
        if (tool, sub) != ("pct", "reset")
    },
    ("pct", "create"): ("POST", "", ("vmid", "ostemplate")),
    ("qm", "disk resize"): ("PUT", "/{vmid}/resize", ("vmid", "disk", "size")),
    ("qm", "move-disk"): ("POST", "/{vmid}/move_disk", ("vmid", "disk", "storage")),
    ("qm", "move_disk"): ("POST", "/{vmid}/move_disk", ("vmid", "disk", "storage")),
    ("qm", "disk move"): ("POST", "/{vmid}/move_disk", ("vmid", "disk", "storage")),
    ("pct", "move-volume"): ("POST", "/{vmid}/move_volume", ("vmid", "volume", "storage")),
}
#: API calls that lose state or interrupt a guest (besides DELETE): marked ``destructive``, which
#: ``runbook trust`` never lifts.
_DESTRUCTIVE_CALL = re.compile(r"/status/(stop|shutdown|reboot|reset|suspend)$|/snapshot/[^/]+/rollback$")


@dataclass
class Draft:
    """One step to be: its kind, what it does, and how it came from the page."""

    kind: str  # api | ssh | talosctl | local
    line: int  # line of the code block in the page
    heading: str | None
    comment: list[str] = field(default_factory=list)
    hint: str = ""  # words for an id when there is no comment or heading
    attrs: dict[str, object] = field(default_factory=dict)
    # api
    method: str = ""
    path: str = ""
    params: list[tuple[str, str]] = field(default_factory=list)
    extract: Word | None = None
    extract_args: list[tuple[str, Word]] = field(default_factory=list)
    extract_wraps_data: bool = True  # curl answers {"data": ...}; the api executor gives what is inside
    register_var: str | None = None  # VAR in VAR=$(curl ...)
    # ssh | talosctl | local: a span of ``source`` with its words, some spans cut out
    source: str = ""
    span: tuple[int, int] = (0, 0)
    cuts: list[tuple[int, int]] = field(default_factory=list)
    commands: list[Simple] = field(default_factory=list)
    defined: set[str] = field(default_factory=set)  # shell variables the body sets itself
    host: str | None = None  # ssh: the host as written (user@ stripped)
    user: str | None = None
    # foreach
    loop_var: str | None = None
    loop_items: list[str] | None = None
    # what a script step changes (its ``changes:``), from engine/data/ingest-effects.yaml
    effects: tuple[effects.Effect, ...] = ()
    loop_expr: str | None = None  # a foreach expression (``plan.controlplanes``) instead of the items
    # the page's shell state where the command stood
    page_vars: dict[str, str] = field(default_factory=dict)  # NAME=literal in force at this command
    workdir: str | None = None  # the directory an earlier block cd'ed into
    mapped: dict[str, str] = field(default_factory=dict)  # a word of the page -> the expression it becomes
    # what the reader must know
    notes: list[str] = field(default_factory=list)  # changes made while classifying
    warnings: list[str] = field(default_factory=list)
    excerpt: str = ""
    original: str = ""  # the command as the page wrote it (placeholders restored)


@dataclass
class Skipped:
    """A command that becomes no step (credential handling, a value that became a parameter)."""

    line: int
    what: str


def protect(text: str) -> str:
    """``<NAME>`` placeholders as ``⟨NAME⟩``, so that shell parsing does not read them as redirections."""
    return PLACEHOLDER.sub(lambda m: f"{OPEN}{m[1]}{CLOSE}", text)


def shown(text: str) -> str:
    """Text with protected placeholders back in the page's form, for messages."""
    return text.replace(OPEN, "<").replace(CLOSE, ">")


def _excerpt(text: str) -> str:
    line = " ".join(shown(text).replace("\\\n", " ").split())
    return line if len(line) <= 90 else line[:87] + "..."


class Classifier:
    """Classifies the code blocks of one page; remembers literal variables set on the page."""

    def __init__(self) -> None:
        self.page_vars: dict[str, str] = {}  # NAME=literal set on the page (become parameters)
        self.captured: dict[str, Draft] = {}  # NAME=$(curl ...) -> the api draft it became
        self.secret_vars: set[str] = set()  # NAME=... holding a credential (not copied)
        self.workdir: str | None = None  # the directory the page cd'ed into, for the blocks after it
        self.skipped: list[Skipped] = []

    def block(self, code: Code) -> list[Draft]:
        drafts = self._block(code)
        for draft in drafts:
            if draft.kind in ("ssh", "local") and _PRINTS_TOKEN.search(draft.source[draft.span[0] : draft.span[1]]):
                draft.warnings.append(
                    "it creates an API token, whose secret it prints once: that output would be shown and "
                    "journaled. Make it an api step (POST /access/users/USER/token/TOKENID) with to_pass"
                )
            if draft.kind in ("ssh", "local", "talosctl"):
                _settle(draft)  # a step kept with a warning is gated until someone has read it
            elif draft.kind == "api" and (draft.method == "DELETE" or _DESTRUCTIVE_CALL.search(draft.path)):
                draft.attrs["destructive"] = True  # said in the runbook; the engine's gates hold it anyway
        return drafts

    def _stamp(self, drafts: list[Draft]) -> list[Draft]:
        """The page's shell state where these commands stood: ``VMID=120`` in one block and
        ``VMID=121`` in the next are two values, and a ``cd`` holds for the blocks after it."""
        for draft in drafts:
            draft.page_vars = dict(self.page_vars)
            draft.workdir = self.workdir
        return drafts

    def _block(self, code: Code) -> list[Draft]:
        text = protect(code.text)
        try:
            script = parse(text)
        except ShellSyntaxError as exc:
            draft = self._shell(code, text, (0, len(text.rstrip("\n"))), [], "local")
            draft.warnings.append(f"kept as one shell script: it could not be parsed ({exc})")
            draft.original = shown(text)
            return [draft]
        if not script.units:
            return []
        prefix = _cd_prefix(script)
        if prefix is None or _node_side(iter_simple(script.units)):  # a cd on a node stays in its ssh script
            return self._script(code, text, script)
        count, workdir = prefix
        made = self._cd(code, Script(text, script.units[:count], script.comments), workdir)
        rest = script.units[count:]
        return made + (self._script(code, text, Script(text, rest, script.comments)) if rest else [])

    def _script(self, code: Code, text: str, script: Script) -> list[Draft]:
        """The commands of a block (or of what follows its ``cd``): one step each, or one shell step
        when they share shell state."""
        state = _shared_state(script)
        if state:
            simple = iter_simple(script.units)
            node = _node_side(simple)
            draft = self._shell(
                code,
                text,
                (script.units[0].start, script.units[-1].end),
                simple,
                "ssh" if node else "local",
                comments=_comments_before(script, script.units[0].start, 0),
            )
            draft.defined = _defined(simple, script)
            draft.warnings.append(f"kept as one shell script because its commands share shell state ({state})")
            draft.original = shown(text)
            return self._stamp([draft])
        node_block = _node_side(iter_simple(script.units))
        drafts: list[Draft] = []
        previous_end = 0
        for unit in script.units:
            comments = _comments_before(script, unit.start, previous_end)
            previous_end = unit.end
            made = self._stamp(self._unit(code, script, unit, node_block))
            if made:
                made[0].comment = comments + made[0].comment
            for draft in made:
                draft.original = draft.original or shown(text[unit.start : unit.end])
            drafts += made
        return drafts

    def _cd(self, code: Code, script: Script, workdir: str) -> list[Draft]:
        """A block that makes a folder and ``cd``s into it: the folder is made by a step, and the
        blocks after it run there (``adapt`` writes the ``cd`` into each later shell step)."""
        self.skipped.append(
            Skipped(code.line, f"'cd {workdir}' is not a step: the steps after it run in {workdir}, as on the page")
        )
        drafts = []
        for pipeline in (p for unit in script.units for p in unit.pipelines):
            command = pipeline.commands[0]
            if isinstance(command, Simple) and command.name == "mkdir":
                draft = self._shell(code, script.source, (pipeline.start, pipeline.end), [command], "local")
                draft.original = shown(script.source[pipeline.start : pipeline.end])
                drafts.append(draft)
        self._stamp(drafts)  # the folder is made where the page stood before its cd
        self.workdir = workdir
        return drafts

    # -- one line of a script

    def _unit(self, code: Code, script: Script, unit: AndOr, node_block: bool) -> list[Draft]:
        text = script.source
        if unit.background:
            return [self._flagged(code, text, unit, node_block, "runs in the background (&)")]
        if "||" in unit.ops:
            return [self._flagged(code, text, unit, node_block, "uses || (a fallback when a command fails)")]
        drafts = []
        for pipeline in unit.pipelines:  # a && b: run a, then b; a failed step stops the run the same way
            drafts += self._pipeline(code, text, pipeline, node_block)
        return drafts

    def _flagged(self, code: Code, text: str, unit: AndOr, node_block: bool, why: str) -> Draft:
        simple = iter_simple([unit])
        kind = "ssh" if node_block and _node_side(simple) else "local"
        draft = self._shell(code, text, (unit.start, unit.end), simple, kind)
        draft.defined = _defined(simple, None)
        draft.warnings.append(f"kept as a shell command: it {why}")
        return draft

    def _pipeline(self, code: Code, text: str, pipeline: Pipeline, node_block: bool) -> list[Draft]:
        first = pipeline.commands[0]
        if isinstance(first, Compound):
            if first.kind == "for" and len(pipeline.commands) == 1:
                return [self._for(code, text, first, node_block)]
            simple = iter_simple([AndOr([pipeline], [], pipeline.start, pipeline.end)])
            draft = self._shell(
                code,
                text,
                (pipeline.start, pipeline.end),
                simple,
                "ssh" if node_block and _node_side(simple) else "local",
            )
            draft.defined = _defined(simple, None)
            draft.warnings.append(
                f"kept as a shell script: a '{first.kind}' "
                f"{'loop' if first.kind in ('for', 'while', 'until', 'select') else 'block'} "
                "runs several commands, so it cannot be one step per command"
            )
            return [draft]
        if first.heredoc or any(isinstance(c, Compound) for c in pipeline.commands):
            return [
                self._flagged(
                    code,
                    text,
                    AndOr([pipeline], [], pipeline.start, pipeline.end),
                    node_block,
                    "feeds a here-document or a loop",
                )
            ]
        if not first.words:
            return self._assignments(code, text, first, pipeline)
        if _literal_export(first, pipeline):
            return self._assignments(code, text, Simple([], first.words[1:], [], first.start, first.end), pipeline)
        if self._shows_capture(code, text, pipeline):
            return []
        return [self._command(code, text, pipeline, node_block)]

    def _shows_capture(self, code: Code, text: str, pipeline: Pipeline) -> bool:
        """``echo $RESPONSE | jq F`` after ``RESPONSE=$(curl ...)``: the API step that replaced the
        capture shows its answer (``F`` as its extract), so no step reads a variable that is gone."""
        first = pipeline.commands[0]
        if not isinstance(first, Simple) or first.name not in ("echo", "printf") or len(first.words) != 2:
            return False
        names = first.words[1].variables
        if len(names) != 1 or names[0] not in self.captured or first.words[1].literal is not None:
            return False
        draft = self.captured[names[0]]
        rest = pipeline.commands[1:]
        if len(rest) > 1 or (rest and not (isinstance(rest[0], Simple) and rest[0].name == "jq")):
            return False
        how = "shows its answer"
        if rest and draft.extract is None:
            filter_word, args, problem = _jq(rest[0].words)  # type: ignore[union-attr]
            if problem:
                return False
            if filter_word is not None:
                draft.extract, draft.extract_args = filter_word, args
                how = f"shows its answer through the page's jq filter (extract: {_excerpt(filter_word.text)})"
        draft.attrs["show"] = True
        self.skipped.append(
            Skipped(
                code.line,
                f"'{_excerpt(text[pipeline.start : pipeline.end])}' is not a step: ${names[0]} is the answer of the API "
                f"step that replaced its assignment, which {how}",
            )
        )
        return True

    def _assignments(self, code: Code, text: str, command: Simple, pipeline: Pipeline) -> list[Draft]:
        drafts = []
        for word in command.assigns:
            name, value = assignment(word)
            if _CREDENTIAL_NAME.search(name) or "[redacted]" in value.text:
                self.secret_vars.add(name)
                self.skipped.append(
                    Skipped(
                        code.line,
                        f"{name}=... holds a credential; not copied (the engine fetches the API token itself)",
                    )
                )
                continue
            if value.literal is not None:
                self.page_vars[name] = value.literal
                self.skipped.append(
                    Skipped(
                        code.line,
                        f"{name}={_excerpt(value.literal)} is not a step: where the "
                        f"page uses ${name} after this, the runbook uses this value: as a "
                        "parameter or the config's value (listed below)",
                    )
                )
                continue
            substitutions = value.substitutions
            if len(value.parts) == 1 and len(substitutions) == 1 and substitutions[0].startswith("$("):
                inner = substitutions[0][2:-1]
                try:
                    script = parse(inner)
                except ShellSyntaxError:
                    script = None
                if script and len(script.units) == 1 and len(script.units[0].pipelines) == 1:
                    made = self._pipeline(code, inner, script.units[0].pipelines[0], False)
                    if len(made) == 1 and made[0].kind == "api":
                        made[0].register_var = name
                        self.captured[name] = made[0]
                        drafts += made
                        continue
            draft = self._shell(code, text, (pipeline.start, pipeline.end), [command], "local")
            draft.warnings.append(
                f"kept as a shell command: {name} is set from a command whose output later steps cannot see this way"
            )
            drafts.append(draft)
        return drafts

    def _command(self, code: Code, text: str, pipeline: Pipeline, node_block: bool) -> Draft:
        commands = [c for c in pipeline.commands if isinstance(c, Simple)]
        first = commands[0]
        words = first.words
        notes = []
        if first.name == "sudo" and len(words) > 1:
            words = words[1:]
            notes.append("dropped sudo: ssh steps run as credentials.ssh_user")
        name = words[0].literal or ""
        why = effects.interactive(first)
        if why:
            return _interactive(code, text[pipeline.start : pipeline.end], why)
        guest_call = self._qm_pct(code, text, pipeline, words, None) if name in ("qm", "pct") else None
        expanded = [self._expand(w) for w in words] if name == "curl" else []
        if guest_call is not None:
            draft = guest_call
        elif name == "curl" and any("/api2/json" in w for w in expanded):
            draft = self._curl(code, text, pipeline, words, expanded)
        elif name == "pvesh":
            draft = self._pvesh(code, text, pipeline, words)
        elif name == "ssh":
            draft = self._ssh(code, text, pipeline, words)
        elif name == "talosctl":
            draft = self._talosctl(code, text, pipeline, first, words)
        elif _new_token(words):
            draft = self._pveum_token(code, text, pipeline, words)
        elif name == "pass":
            self.skipped.append(
                Skipped(
                    code.line,
                    "a 'pass' command (credential handling) was left out: the engine fetches the API token itself",
                )
            )
            return _nothing(code)
        elif name in NODE_COMMANDS or (name in ("wget", "curl") and _writes_node_storage(words)):
            draft = self._shell(code, text, (pipeline.start, pipeline.end), commands, "ssh")
        else:
            draft = self._local(code, text, pipeline, commands, node_block)
        draft.notes[:0] = notes
        return draft

    def _local(self, code: Code, text: str, pipeline: Pipeline, commands: list[Simple], node_block: bool) -> Draft:
        first = commands[0]
        cuts = []
        token_env = None
        for word in first.assigns:
            name, value = assignment(word)
            if _CREDENTIAL_NAME.search(name) or "[redacted]" in value.text:
                token_env = name
                cuts.append((word.start, _after_space(text, word.end)))
        if node_block and not token_env:
            draft = self._shell(code, text, (pipeline.start, pipeline.end), commands, "ssh")
            draft.attrs["review"] = True
            draft.warnings.append(
                f"'{first.name}' is not a Proxmox command, but the commands around it run on the "
                "node, so it runs there too: check that it should"
            )
            return draft
        draft = self._shell(code, text, (pipeline.start, pipeline.end), commands, "local")
        draft.cuts += cuts
        if token_env and re.fullmatch(r"[A-Z_][A-Z0-9_]*", token_env):
            draft.attrs["api_token_env"] = token_env
            draft.notes.append(
                f"the API token reaches the command as ${token_env} (api_token_env), fetched at run "
                "time; the page's way of reading it was not copied"
            )
        elif token_env:
            draft.warnings.append(f"a credential in {token_env} was removed; the command needs it from elsewhere")
        return draft

    # -- kinds

    def _shell(
        self,
        code: Code,
        text: str,
        span: tuple[int, int],
        commands: list[Simple],
        kind: str,
        comments: list[str] | None = None,
    ) -> Draft:
        draft = Draft(
            kind,
            code.line,
            code.heading,
            comment=comments or [],
            source=text,
            span=span,
            commands=commands,
            excerpt=_excerpt(text[span[0] : span[1]]),
        )
        draft.hint = (
            " ".join((commands[0].words[0].literal or "", *[w.literal or "" for w in commands[0].words[1:2]]))
            if commands and commands[0].words
            else kind
        )
        return draft

    def _expand(self, word: Word) -> str:
        """A curl word with the page's own variables put in (``"$PVE/nodes"`` with ``PVE=https://...``;
        a credential variable as ``[redacted]``), so the call is read as the page meant it."""
        out = []
        for part in word.parts:
            if part.kind == "var" and part.text in self.page_vars:
                out.append(self.page_vars[part.text])
            elif part.kind == "var" and part.text in self.secret_vars:
                out.append("[redacted]")
            else:
                out.append(part.text if part.kind == "lit" else part.raw)
        return "".join(out)

    def _curl(self, code: Code, text: str, pipeline: Pipeline, words: list[Word], expanded: list[str]) -> Draft:
        draft = Draft("api", code.line, code.heading, excerpt=_excerpt(text[pipeline.start : pipeline.end]))
        call = parse_curl(expanded[1:])
        used = sorted({v for w in words for v in w.variables if v in self.page_vars})
        if used:
            draft.notes.append(
                "read the call with the page's " + ", ".join(f"${v} ({_excerpt(self.page_vars[v])})" for v in used)
            )
        if len(call.urls) > 1:
            return self._review(code, text, pipeline, "calls more than one URL")
        data: list[tuple[str, str]] = []
        for option, value in call.data:
            if option == "--data-urlencode":
                key, sep, val = value.partition("=")
                if not sep or "@" in key:
                    return self._review(code, text, pipeline, "sends url-encoded data from a file or without a name")
                data.append((key, val))
            elif value.startswith("@"):
                return self._review(code, text, pipeline, "sends data from a file (@file)")
            else:
                data += [(unquote(k), unquote(v)) for k, v in _pairs(value)]  # '+10G' means +10G
        dropped: set[str] = set()
        for option, value in call.options:
            if option in ("-X", "--request", "-G", "--get", *DATA_OPTIONS):
                pass  # the method and the parameters, read above
            elif option in ("-H", "--header"):
                written = (value or "").split(":", 1)[0].strip()
                header = written.lower()
                if header in ("authorization", "cookie", "csrfpreventiontoken") or "[redacted]" in (value or ""):
                    dropped.add(f"the {written} header (the engine sends the API token itself)")
                elif header not in ("content-type", "accept"):
                    draft.warnings.append(f"curl header '{header}' was not kept (api steps send PVE's own headers)")
            elif option in ("-u", "--user", "-b", "--cookie", "-c", "--cookie-jar"):
                dropped.add("credentials given to curl (-u/--cookie); the engine authenticates with the API token")
            elif option in ("-k", "--insecure", "--cacert", "--capath", "--cert", "--key", "--pinnedpubkey"):
                dropped.add("curl's TLS options (-k/--cacert): TLS is verified as cluster-config.yaml's tls says")
            elif option in ("-m", "--max-time"):
                if value and re.fullmatch(r"\d+(\.\d+)?", value):
                    draft.attrs["timeout"] = float(value) if "." in value else int(value)
            elif option == "--retry":
                if value and value.isdigit():
                    draft.attrs["retries"] = min(int(value), 20)
            elif option in ("-o", "--output"):
                if value != "/dev/null":
                    draft.warnings.append(f"curl wrote its answer to {value}; the step keeps it as its output instead")
            elif option in ("-w", "--write-out"):
                dropped.add("curl's -w output format (the step reports the answer itself)")
            elif option in (
                "-s",
                "--silent",
                "-S",
                "--show-error",
                "-f",
                "--fail",
                "-L",
                "--location",
                "-v",
                "--verbose",
                "--compressed",
                "-i",
                "--include",
                "--connect-timeout",
                "--retry-delay",
                "--retry-max-time",
                "-A",
                "--user-agent",
                "-4",
                "-6",
                "--http1.1",
                "--http2",
                "-#",
                "--progress-bar",
                "-N",
                "--no-buffer",
            ):
                pass
            else:
                draft.warnings.append(f"curl option {option} has no equivalent in an api step and was left out")
        if not call.urls:
            return self._review(code, text, pipeline, "has no URL")
        url, had_userinfo = _without_userinfo(call.urls[0])
        if had_userinfo:
            dropped.add("the user and password in the URL (the engine authenticates with the API token)")
        try:
            split = urlsplit(url)
            split.hostname  # noqa: B018 - raises ValueError on a host that is no host ("[x]")
        except ValueError:
            return self._review(code, text, pipeline, "calls a URL that cannot be read")
        path = split.path
        if "/api2/json" not in path:
            return self._review(code, text, pipeline, "calls a URL outside /api2/json")
        path = path.split("/api2/json", 1)[1] or "/"
        query = [(unquote(k), unquote(v)) for k, v in (_pair(q) for q in split.query.split("&") if q)]
        method = call.method or ("POST" if data and not call.has("-G", "--get") else "GET")
        if method not in ("GET", "POST", "PUT", "DELETE"):
            return self._review(code, text, pipeline, f"uses the method {method}, which the PVE API does not have")
        if re.match(r"^/access/(ticket|password)\b", path):
            self.skipped.append(
                Skipped(
                    code.line,
                    f"the call to {path} logs in or sets a password; left out: the engine "
                    "authenticates with the API token",
                )
            )
            return _nothing(code)
        params = query + data  # a credential among them becomes a secret parameter (adapt)
        draft.method, draft.path, draft.params = method, unquote(path), params
        draft.hint = _api_hint(method, path)
        draft.notes += sorted(f"dropped {what}" for what in dropped)
        host = split.hostname or split.netloc
        if host:
            draft.notes.append(
                f"the host {shown(split.netloc)} was dropped: api steps call the cluster's nodes "
                "from cluster-config.yaml"
            )
        return self._after(code, text, pipeline, draft, wraps_data=True)

    def _qm_pct(self, code: Code, text: str, pipeline: Pipeline, words: list[Word], host: str | None) -> Draft | None:
        """``qm start 100`` as ``POST /nodes/{node}/qemu/100/status/start``: a call of PVE's API, whose
        review shows the change (engine/data/pve-changes.yaml) and which the API schema checks. None when
        the command is not one of those calls, or cannot be written as one (a pipe, a redirection, a
        computed argument): it stays an ``ssh`` step."""
        tool = words[0].literal
        names = [w.literal or "" for w in words[1:3]]
        sub = " ".join(names) if names[:1] == ["disk"] else names[0] if names else ""
        call = _GUEST_CALLS.get((tool or "", sub))
        first = pipeline.commands[0]
        if call is None or len(pipeline.commands) > 1 or not isinstance(first, Simple) or first.redirects:
            return None
        method, suffix, positional = call
        rest = words[1 + len(sub.split()) :]
        args, options = rest[: len(positional)], rest[len(positional) :]
        if (
            len(args) < len(positional)
            or any(w.text.startswith("-") for w in args)
            or any(w.substitutions for w in rest)
        ):
            return None
        values = {key: word.text for key, word in zip(positional, args, strict=True)}
        guest = "qemu" if tool == "qm" else "lxc"
        node = host or f"{OPEN}NODE{CLOSE}"
        path = f"/nodes/{node}/{guest}" + suffix.format(**values)
        draft = Draft(
            "api",
            code.line,
            code.heading,
            method=method,
            path=path,
            excerpt=_excerpt(text[pipeline.start : pipeline.end]),
        )
        draft.params = [(k, v) for k, v in values.items() if "{" + k + "}" not in suffix]
        index = 0
        while index < len(options):
            word = options[index].text
            if not re.match(r"^--?[A-Za-z]", word):
                return None  # an argument the API call has no place for
            key, sep, value = word.lstrip("-").partition("=")
            if not sep:
                following = options[index + 1].text if index + 1 < len(options) else None
                if following is not None and not re.match(r"^--?[A-Za-z]", following):
                    value, index = following, index + 1
                else:
                    value = "1"
            draft.params.append((key, value))
            index += 1
        draft.hint = f"{tool} {sub}"
        call_path = f"/nodes/NODE/{guest}" + suffix.format(**values)
        draft.notes.append(f"'{tool} {sub}' became the API call it makes ({method} {shown(call_path)})")
        return draft

    def _pvesh(self, code: Code, text: str, pipeline: Pipeline, words: list[Word]) -> Draft:
        verb = words[1].literal if len(words) > 1 else None
        if verb not in _PVESH_METHODS or len(words) < 3:
            return self._review(code, text, pipeline, f"is 'pvesh {verb or ''}', which is not a call of the API")
        draft = Draft(
            "api",
            code.line,
            code.heading,
            method=_PVESH_METHODS[verb],
            path=words[2].text,
            excerpt=_excerpt(text[pipeline.start : pipeline.end]),
        )
        index = 3
        while index < len(words):
            word = words[index].text
            if not word.startswith("--"):
                return self._review(code, text, pipeline, f"has an argument pvesh does not take here ({word})")
            key, sep, value = word[2:].partition("=")
            if not sep:
                following = words[index + 1].text if index + 1 < len(words) else None
                if following is not None and not following.startswith("--"):
                    value, index = following, index + 1
                else:
                    value = "1"
            index += 1
            if key in ("output-format", "noproxy", "quiet", "human-readable"):
                continue
            draft.params.append((key, value))
        draft.hint = _api_hint(draft.method, draft.path)
        if not draft.path.startswith("/"):
            draft.path = "/" + draft.path
        draft.notes.append(f"'pvesh {verb}' became an API {draft.method} (pvesh is a client of the same API)")
        return self._after(code, text, pipeline, draft, wraps_data=False)

    def _pveum_token(self, code: Code, text: str, pipeline: Pipeline, words: list[Word]) -> Draft:
        """``pveum user token add USER TOKENID --opt v``: the API call it makes, so that the secret PVE
        answers with goes into pass (adapt adds ``to_pass``) instead of a terminal or a journal."""
        args = [w.text for w in words[5 if words[0].literal == "sudo" else 4 :]]
        if len(args) < 2 or args[0].startswith("-") or args[1].startswith("-"):
            return self._review(code, text, pipeline, "is 'pveum user token add' without a user and a token id")
        draft = Draft(
            "api",
            code.line,
            code.heading,
            method="POST",
            path=f"/access/users/{args[0]}/token/{args[1]}",
            excerpt=_excerpt(text[pipeline.start : pipeline.end]),
        )
        index = 2
        while index < len(args):
            key, sep, value = args[index].removeprefix("--").partition("=")
            if not args[index].startswith("--"):
                return self._review(code, text, pipeline, f"has an argument pveum does not take here ({args[index]})")
            if not sep:
                following = args[index + 1] if index + 1 < len(args) else None
                value, index = (following, index + 1) if following and not following.startswith("--") else ("1", index)
            if key not in ("output-format", "noborder", "noheader", "quiet"):
                draft.params.append((key, value))
            index += 1
        draft.hint = "post users token"
        draft.notes.append(
            "'pveum user token add' became the API call it makes (POST /access/users/USER/token/TOKENID)"
        )
        return self._after(code, text, pipeline, draft, wraps_data=False)

    def _after(self, code: Code, text: str, pipeline: Pipeline, draft: Draft, *, wraps_data: bool) -> Draft:
        """The pipeline after an API call: ``| jq FILTER`` becomes the extract; anything else is dropped."""
        rest = [c for c in pipeline.commands[1:]]
        if not rest:
            return draft
        jq = rest[0]
        if isinstance(jq, Simple) and jq.name == "jq":
            filter_word, args, problem = _jq(jq.words)
            if problem:
                draft.warnings.append(f"the jq after this call was left out: {problem}")
            elif filter_word is not None:
                draft.extract, draft.extract_args, draft.extract_wraps_data = filter_word, args, wraps_data
            rest = rest[1:]
        if rest:
            tail = text[rest[0].start : pipeline.end]
            draft.warnings.append(
                f"'| {_excerpt(tail)}' after the call was left out: a step's output is its (extracted) answer"
            )
        return draft

    def _ssh(self, code: Code, text: str, pipeline: Pipeline, words: list[Word]) -> Draft:
        index, host, user = 1, None, None
        while index < len(words):
            word = words[index].text
            if word.startswith("-") and len(word) > 1:
                if word[-1] in _SSH_VALUE_OPTS and len(word) == 2:
                    if word == "-l" and index + 1 < len(words):
                        user = words[index + 1].text
                    index += 2
                else:
                    index += 1
                continue
            host = word
            index += 1
            break
        remote_words = words[index:]
        if host is None:
            return self._review(code, text, pipeline, "is an ssh without a host")
        if "@" in host:
            user, host = host.split("@", 1)
        if not remote_words:
            return _interactive(code, text[pipeline.start : pipeline.end], "opens an interactive login on the host")
        if len(pipeline.commands) > 1:
            return self._review(code, text, pipeline, "pipes the node's output into commands on this machine")
        remote = " ".join(w.text for w in remote_words) if len(remote_words) > 1 else remote_words[0].text
        try:
            script = parse(remote)
        except ShellSyntaxError as exc:
            draft = Draft(
                "ssh",
                code.line,
                code.heading,
                source=remote,
                span=(0, len(remote)),
                host=host,
                user=user,
                excerpt=_excerpt(remote),
            )
            draft.warnings.append(f"the command sent over ssh could not be parsed ({exc}); kept as written")
            draft.attrs["review"] = True
            return draft
        units = script.units
        if len(units) == 1 and len(units[0].pipelines) == 1 and not units[0].ops:
            only = units[0].pipelines[0].commands[0]
            if isinstance(only, Simple) and only.name == "pvesh":
                draft = self._pvesh(code, remote, units[0].pipelines[0], only.words)
                draft.notes.append("the ssh around pvesh was dropped: the API is called directly")
                return draft
            if isinstance(only, Simple) and only.name in ("qm", "pct"):
                call = self._qm_pct(code, remote, units[0].pipelines[0], only.words, host)
                if call is not None:
                    call.notes.append(f"the ssh around {only.name} was dropped: the API is called directly")
                    return call
            if isinstance(only, Simple) and _new_token(only.words):
                draft = self._pveum_token(code, remote, units[0].pipelines[0], only.words)
                draft.notes.append("the ssh around pveum was dropped: the API is called directly")
                return draft
        simple = iter_simple(units)
        why = next((effects.interactive(c) for c in simple if effects.interactive(c)), "")
        if why:
            return _interactive(code, text[pipeline.start : pipeline.end], why)
        draft = Draft(
            "ssh",
            code.line,
            code.heading,
            source=remote,
            span=(units[0].start, units[-1].end) if units else (0, len(remote)),
            commands=simple,
            host=host,
            user=user,
            excerpt=_excerpt(remote),
            defined=_defined(simple, script),
        )
        draft.hint = " ".join(w.literal or "" for w in simple[0].words[:2]) if simple and simple[0].words else "ssh"
        draft.notes.append("'ssh HOST' became an ssh step on the node; the engine connects as credentials.ssh_user")
        return draft

    def _talosctl(self, code: Code, text: str, pipeline: Pipeline, command: Simple, words: list[Word]) -> Draft:
        for word in words:
            if word.substitutions:
                return self._review(
                    code,
                    text,
                    pipeline,
                    "computes an argument with $(...) or `...`, and talosctl steps run without a shell",
                )
        if command.redirects:
            return self._review(
                code, text, pipeline, "redirects talosctl's output, and talosctl steps run without a shell"
            )
        draft = Draft(
            "talosctl",
            code.line,
            code.heading,
            source=text,
            span=(words[0].start, command.end),
            commands=[command],
            excerpt=_excerpt(text[pipeline.start : pipeline.end]),
        )
        draft.hint = " ".join(["talosctl", *_talos_subcommand(words)])
        for index, word in enumerate(words):
            if word.text == "--talosconfig" and index + 1 < len(words):
                draft.cuts.append((word.start, _after_space(text, words[index + 1].end)))
                draft.notes.append("dropped --talosconfig: talosctl steps use the profile's talos.config_dir")
            elif word.text.startswith("--talosconfig="):
                draft.cuts.append((word.start, _after_space(text, word.end)))
                draft.notes.append("dropped --talosconfig: talosctl steps use the profile's talos.config_dir")
        for word in command.assigns:
            draft.notes.append(f"dropped {assignment(word)[0]}=...: talosctl steps run with the profile's TALOSCONFIG")
        rest = pipeline.commands[1:]
        if rest:
            jq = rest[0]
            if len(rest) == 1 and isinstance(jq, Simple) and jq.name == "jq":
                filter_word, args, problem = _jq(jq.words)
                if problem or filter_word is None:
                    return self._review(
                        code,
                        text,
                        pipeline,
                        f"pipes talosctl into jq in a way a step cannot ({problem or 'no filter'})",
                    )
                draft.attrs["json"] = True
                draft.extract, draft.extract_args, draft.extract_wraps_data = filter_word, args, False
                draft.notes.append("'| jq' became the step's extract (json: true parses talosctl's output)")
            else:
                return self._review(code, text, pipeline, "pipes talosctl's output into other commands")
        return draft

    def _review(self, code: Code, text: str, pipeline: Pipeline, why: str) -> Draft:
        simple = [c for c in pipeline.commands if isinstance(c, Simple)]
        draft = self._shell(code, text, (pipeline.start, pipeline.end), simple, "local")
        draft.warnings.append(f"kept as a local shell command: it {why}")
        return draft

    def _for(self, code: Code, text: str, loop: Compound, node_block: bool) -> Draft:
        body = loop.body
        single = (
            len(body) == 1
            and len(body[0].pipelines) == 1
            and not body[0].ops
            and not body[0].background
            and isinstance(body[0].pipelines[0].commands[0], Simple)
            and body[0].pipelines[0].commands[0].words
        )
        items = loop.items
        if single and items and loop.var:
            made = self._pipeline(code, text, body[0].pipelines[0], node_block)
            literal_items = _loop_items(items)
            if len(made) == 1 and literal_items is not None:
                draft = made[0]
                draft.loop_var, draft.loop_items = loop.var, literal_items
                draft.excerpt = _excerpt(text[loop.start : loop.end])
                return draft
        simple = iter_simple(body)
        kind = "ssh" if node_block and _node_side(simple) else "local"
        draft = self._shell(code, text, (loop.start, loop.end), simple, kind)
        draft.defined = _defined(simple, None) | {loop.var or ""}
        draft.attrs["review"] = True
        why = "its body has several commands" if not single else "its list is computed at run time"
        draft.warnings.append(f"this 'for' loop stays a shell loop, because {why}: check it")
        return draft


def _interactive(code: Code, command: str, why: str) -> Draft:
    """A command that needs a terminal: kept in the runbook as prose, never a step."""
    draft = Draft("prose", code.line, code.heading, original=shown(command), excerpt=_excerpt(command))
    draft.warnings.append(f"'{_excerpt(command)}' is interactive (it {why}): run it yourself in a terminal")
    return draft


def _settle(draft: Draft) -> None:
    """What a script step changes (``changes``; ``[]`` when it only reads), or, when unknown, that it
    stays gated (``review: true``).

    A read is ``changes: []``, not ``readonly: true``: a dry-run runs read-only steps, and a dry-run
    of a runbook nobody reviewed yet must not run the page's shell commands on the cluster, however
    harmless the table says they are. A step kept with a warning (shared shell state, a loop, text
    that could not be parsed) is gated whatever its commands are: the warning is why someone must
    read it."""
    reading = effects.read_commands(draft.commands)
    if draft.warnings or reading.kind not in ("change", "read") or not draft.commands:
        draft.attrs["review"] = True
        return
    draft.effects = reading.effects
    if reading.destructive:
        draft.attrs["destructive"] = True


def _literal_export(command: Simple, pipeline: Pipeline) -> bool:
    """``export NAME=literal ...``: values set on the page, like plain assignments."""
    words = command.words
    return (
        command.name == "export"
        and len(pipeline.commands) == 1
        and len(words) > 1
        and all(re.match(r"^[A-Za-z_]\w*=", w.text) and assignment(w)[1].literal is not None for w in words[1:])
    )


def _cd_prefix(script: Script) -> tuple[int, str] | None:
    """(lines, folder) when a block starts by making a folder and ``cd``-ing into it (``mkdir -p D &&
    cd D``, or ``cd D`` alone), on lines of their own; None otherwise."""
    for count, unit in enumerate(script.units, start=1):
        commands = [c for p in unit.pipelines for c in p.commands]
        if unit.background or "||" in unit.ops:
            return None
        if not all(isinstance(c, Simple) and c.name in ("cd", "mkdir") and not c.redirects for c in commands):
            return None
        cds = [c for c in commands if isinstance(c, Simple) and c.name == "cd"]
        if not cds:
            continue
        last = commands[-1]
        if cds != [last] or not isinstance(last, Simple) or len(last.words) != 2:
            return None
        folder = last.words[1].literal
        return None if folder in (None, "-") else (count, folder)
    return None


def _new_token(words: list[Word]) -> bool:
    """``[sudo] pveum user token add ...``: a command that prints a new API token's secret."""
    literal = [w.literal for w in words[:5]]
    return literal[literal[:1] == ["sudo"] :][:4] == ["pveum", "user", "token", "add"]


def _without_userinfo(url: str) -> tuple[str, bool]:
    """``url`` without ``user:password@`` (redacted or not), and whether it had one."""
    stripped = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/?#\s]*@", r"\1", url, flags=re.I)
    return stripped, stripped != url


def _nothing(code: Code) -> Draft:
    return Draft("none", code.line, code.heading)


def _loop_items(words: list[Word]) -> list[str] | None:
    """The items of a for loop, when written out (or as {a..b} / $(seq a b)); None when computed."""
    out: list[str] = []
    for word in words:
        text = word.text
        brace = re.fullmatch(r"\{(\d+)\.\.(\d+)\}", text)
        seq = re.fullmatch(r"\$\(seq (\d+) (\d+)\)", text)
        match = brace or seq
        if match:
            low, high = int(match[1]), int(match[2])
            if high - low > 200:
                return None
            out += [str(n) for n in range(low, high + 1)]
        elif word.substitutions:
            return None
        else:
            out.append(text)
    return out


def _pair(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key, value


def _pairs(data: str) -> list[tuple[str, str]]:
    pairs = []
    for item in data.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((key, value))
    return pairs


def _jq(words: list[Word]) -> tuple[Word | None, list[tuple[str, Word]], str | None]:
    """(filter, --arg pairs, problem) of a jq command; the filter keeps its parts (shell variables)."""
    filter_word: Word | None = None
    args: list[tuple[str, Word]] = []
    index = 1
    while index < len(words):
        word = words[index].text
        if word in ("--arg", "--argjson") and index + 2 < len(words):
            args.append((words[index + 1].text, words[index + 2]))
            index += 3
            continue
        if word in _JQ_VALUE_OPTS:
            return None, [], f"jq {word} reads files"
        if word in ("-s", "--slurp", "-n", "--null-input"):
            return None, [], f"jq {word} changes what the filter reads"
        if word.startswith("-") and len(word) > 1:
            index += 1
            continue
        if filter_word is None:
            filter_word = words[index]
        else:
            return None, [], "jq reads a file"
        index += 1
    return filter_word, args, None


def _writes_node_storage(words: list[Word]) -> bool:
    for index, word in enumerate(words):
        text = word.text
        if text in ("-O", "-o", "-P", "--output", "--output-document", "--directory-prefix") and index + 1 < len(words):
            if _NODE_PATHS.match(words[index + 1].text):
                return True
        if re.match(r"^(-[OoP]|--output(-document)?=|--directory-prefix=)/", text) and _NODE_PATHS.match(
            re.sub(r"^(-[OoP]|--[\w-]+=)", "", text)
        ):
            return True
    return False


def _node_side(commands: list[Simple]) -> bool:
    return any(
        (c.name in NODE_COMMANDS) or (c.name in ("wget", "curl") and _writes_node_storage(c.words)) for c in commands
    )


def _shared_state(script: Script) -> str:
    """Why the commands of a block depend on each other's shell state ('' when they do not)."""
    simple = iter_simple(script.units)
    for command in simple:
        if command.name in _STATE_COMMANDS or (
            command.name == "export"
            and any(assignment(w)[1].literal is None for w in command.words[1:] if "=" in w.text)
        ):
            return f"'{command.name}'"
    for unit in script.units:
        for pipeline in unit.pipelines:
            for command in pipeline.commands:
                if isinstance(command, Compound) and command.kind == "function":
                    return "a shell function"
    # A variable set from a command's output, used by a later command (not an API call's capture).
    computed = set()
    for unit in script.units:
        for pipeline in unit.pipelines:
            command = pipeline.commands[0]
            if isinstance(command, Simple) and not command.words:
                for word in command.assigns:
                    name, value = assignment(word)
                    if value.literal is None and not _is_api_capture(value):
                        computed.add(name)
    if computed:
        for command in simple:
            for word in command.words:
                used = set(word.variables) & computed
                if used:
                    return f"${sorted(used)[0]} is set by an earlier command"
    return ""


def _is_api_capture(value: Word) -> bool:
    subs = value.substitutions
    return len(value.parts) == 1 and len(subs) == 1 and "/api2/json" in subs[0] and subs[0].startswith("$(")


def _defined(commands: list[Simple], script: Script | None) -> set[str]:
    """Shell variables a body sets itself (assignments, read, for), which stay shell variables."""
    names: set[str] = set()
    for command in commands:
        for word in command.assigns:
            names.add(assignment(word)[0])
        if command.name == "read":
            names |= {w.text for w in command.words[1:] if not w.text.startswith("-")}
        if command.name == "export":
            names |= {w.text.split("=")[0] for w in command.words[1:]}
    if script is not None:

        def loops(units: list[AndOr]) -> None:
            for unit in units:
                for pipeline in unit.pipelines:
                    for command in pipeline.commands:
                        if isinstance(command, Compound):
                            if command.var:
                                names.add(command.var)
                            loops(command.body)

        loops(script.units)
    return names


def _comments_before(script: Script, start: int, after: int) -> list[str]:
    return [
        re.sub(r"^#+\s?", "", text).strip()
        for offset, text in script.comments
        if after <= offset < start and re.sub(r"^#+\s?", "", text).strip()
    ]


def _after_space(text: str, end: int) -> int:
    while end < len(text) and text[end] in " \t":
        end += 1
    if text.startswith("\\\n", end):
        end += 2
        while end < len(text) and text[end] in " \t":
            end += 1
    return end


_TALOS_VALUE_OPTS = frozenset(
    {
        "-n",
        "--nodes",
        "-e",
        "--endpoints",
        "--talosconfig",
        "--context",
        "-o",
        "--output",
        "--cluster",
        "-f",
        "--file",
        "--image",
        "--to",
        "-i",
        "--insecure-image",
    }
)


def _talos_subcommand(words: list[Word]) -> list[str]:
    """The subcommand words of a talosctl command (``get members``), skipping options and their values."""
    out: list[str] = []
    index = 1
    while index < len(words) and len(out) < 2:
        text = words[index].literal or ""
        if text in _TALOS_VALUE_OPTS:
            index += 2
            continue
        if not text.startswith("-") and re.fullmatch(r"[a-z][a-z-]*", text):
            out.append(text)
        elif out:
            break
        index += 1
    return out


def _api_hint(method: str, path: str) -> str:
    """Words for an API step's id: the method and the path's fixed words (``post qemu status start``)."""
    segments = [seg for seg in path.split("/") if seg]
    words, skip = [], False
    for segment in segments:
        if skip or not re.fullmatch(r"[a-z][a-z_-]*", segment):
            skip = False
            continue
        if segment == "nodes":
            skip = True
            continue
        words.append(segment)
        skip = segment in ("qemu", "lxc", "storage", "tasks", "snapshot", "users", "groups", "roles", "pools")
    return " ".join([method.lower(), *words])
