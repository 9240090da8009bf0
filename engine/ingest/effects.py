"""What a command ingest keeps as an ``ssh``, ``local`` or ``talosctl`` step does: reads, changes, or needs a terminal.

A review shows what a run changes (docs/reviews.md); an ``api`` step's effect comes from the PVE
call itself, but a script step must declare it (``changes:``), or the review can only say "unknown
effect". This module reads that from one table, ``engine/data/ingest-effects.yaml``: ``qm importdisk``
changes a VM, ``pveum user add`` creates a user, ``talosctl apply-config`` applies a config to a
Talos node, ``qm list`` and ``talosctl get`` only read, ``talosctl dashboard`` and ``kubectl edit``
need a terminal and are never steps. A command the table does not know has an unknown effect, and
its step stays gated (``review: true``); the table errs on the side of "unknown".

Ids are left as the page's words (``Word``) or text, for ``adapt`` to turn into this cluster's values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from ..resources import data
from ..shell.parse import Simple, Word

TABLE_FILE = "ingest-effects.yaml"
_TOKEN = re.compile(r"\{([^{}]*)\}")
_OPTION = re.compile(r"^--?[A-Za-z][\w-]*")
#: The node prefix of a file on a PVE node (``NODE:/path``): the step's own node on an ssh step.
NODE = object()


@dataclass(frozen=True)
class Effect:
    """One ``changes:`` entry: its pieces are fixed text, ``NODE``, or a value of the page to adapt."""

    action: str
    resource: str
    ids: tuple[tuple[object, ...], ...]  # one id per tuple; each piece str (fixed), Word or Value, or NODE
    destructive: bool = False


@dataclass(frozen=True)
class Value:
    """A value of the page that is part of a word (``--nodes=10.0.0.5``): adapted like any value."""

    text: str


@dataclass(frozen=True)
class Reading:
    """What commands do: ``read``, ``change`` (with ``effects``), ``interactive`` (``why``) or ``unknown``."""

    kind: str
    effects: tuple[Effect, ...] = ()
    why: str = ""

    @property
    def destructive(self) -> bool:
        return any(e.destructive or e.action == "destroy" for e in self.effects)


@lru_cache(maxsize=1)
def table() -> Mapping[str, Any]:
    """The table of commands, loaded once from the package data."""
    loaded = yaml.safe_load((data() / TABLE_FILE).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), TABLE_FILE
    return loaded


def interactive(command: Simple) -> str:
    """Why ``command`` needs a terminal ('' when it does not)."""
    reading = read_command(command)
    return reading.why if reading.kind == "interactive" else ""


def read_commands(commands: Iterable[Simple]) -> Reading:
    """What a step of these commands does, all together: unknown if any of them is."""
    effects: list[Effect] = []
    for command in commands:
        reading = read_command(command)
        if reading.kind in ("interactive", "unknown"):
            return reading
        effects += reading.effects
    return Reading("change", tuple(effects)) if effects else Reading("read")


def read_command(command: Simple) -> Reading:
    """What one command does, from the table (and its output redirections)."""
    words = command.words
    if words and words[0].literal == "sudo":
        words = words[1:]
    targets = [t for _, t in command.redirects if t is not None]
    if not words or any(w.substitutions for w in (*command.words, *command.assigns, *targets)):
        return Reading("unknown")  # $(...) runs a command of its own, whatever this one is
    entry = table().get(words[0].literal or "")
    if not isinstance(entry, dict):
        return Reading("unknown")
    value_options = entry.get("value_options", [])
    positionals = _positionals(words, value_options)
    rule, args = _rule(entry.get("rules", {}), positionals)
    if isinstance(rule, list):
        rule = next((r for r in rule if not isinstance(r, dict) or _given(words, r.get("with", ["*"]))), None)
    reading = _reading(rule, words, args, value_options)
    written = _redirected(command)
    if not written or reading.kind in ("interactive", "unknown"):
        return reading
    return Reading("change", reading.effects + written)


def _reading(rule: object, words: list[Word], args: list[Word], value_options: object) -> Reading:
    if rule == "read":
        return Reading("read")
    if not isinstance(rule, dict):
        return Reading("unknown")
    if "interactive" in rule:
        return Reading("interactive", why=str(rule["interactive"]))
    if "action" not in rule:
        return Reading("unknown")
    templates = rule["id"] if isinstance(rule["id"], list) else [rule["id"]]
    ids = [_id(str(t), words, args, value_options) for t in templates]
    if any(i is None for i in ids):
        return Reading("unknown")  # what it acts on is not on the command line (a default of the tool)
    effect = Effect(
        str(rule["action"]), str(rule["resource"]), tuple(i for i in ids if i), bool(rule.get("destructive"))
    )
    return Reading("change", (effect,))


def _rule(rules: Mapping[str, Any], positionals: list[Word]) -> tuple[object, list[Word]]:
    """The rule of the longest subcommand (up to three words) the table has, and the arguments after it."""
    names = [w.literal or "" for w in positionals]
    for size in (3, 2, 1):
        if len(names) >= size and " ".join(names[:size]) in rules:
            return rules[" ".join(names[:size])], positionals[size:]
    if not positionals:
        return rules.get("."), []
    return rules.get("*"), positionals


def _positionals(words: list[Word], value_options: object) -> list[Word]:
    """The words after the program that are not options nor an option's value."""
    out: list[Word] = []
    index = 1
    while index < len(words):
        text = words[index].text
        if text == "--":
            return out + words[index + 1 :]
        if _OPTION.match(text) and not re.fullmatch(r"-\d+", text):
            takes = value_options == "all" or (isinstance(value_options, list) and text in value_options)
            following = words[index + 1].text if index + 1 < len(words) else "-"
            index += 2 if takes and "=" not in text and not following.startswith("-") else 1
            continue
        out.append(words[index])
        index += 1
    return out


def _given(words: list[Word], options: list[str]) -> bool:
    """Whether any of ``options`` is given (``["*"]``: a rule without ``with`` always applies)."""
    return options == ["*"] or any(
        w.text in options or any(w.text.startswith(o + "=") for o in options if o.startswith("--")) for w in words
    )


def _option(words: list[Word], names: list[str]) -> Word | Value | None:
    for index, word in enumerate(words):
        if word.text in names and index + 1 < len(words):
            return words[index + 1]
        for name in names:
            if name.startswith("--") and word.text.startswith(name + "="):
                return Value(word.text.split("=", 1)[1])
    return None


def _id(template: str, words: list[Word], args: list[Word], value_options: object) -> tuple[object, ...] | None:
    """An id template of the table (``{1}``, ``{-n,--nodes|=x}``, ``{node}``) as pieces; None when unresolved."""
    pieces: list[object] = []
    last = 0
    for match in _TOKEN.finditer(template):
        if match.start() > last:
            pieces.append(template[last : match.start()])
        last = match.end()
        found: object = None
        for alternative in match[1].split("|"):
            if alternative == "node":
                found = NODE
            elif alternative.startswith("="):
                found = alternative[1:]
            elif alternative.isdigit():
                found = args[int(alternative) - 1] if int(alternative) <= len(args) else None
            else:
                found = _option(words, alternative.split(","))
            if found is not None:
                break
        if found is None:
            return None
        pieces.append(found)
    if last < len(template):
        pieces.append(template[last:])
    return tuple(pieces)


def _redirected(command: Simple) -> tuple[Effect, ...]:
    """``> file`` and ``>> file``: the command writes that file."""
    out = []
    for op, target in command.redirects:
        if ">" not in op or target is None or target.text.startswith("&") or target.text == "/dev/null":
            continue
        out.append(Effect("write", "file", ((NODE, target),)))
    return tuple(out)
