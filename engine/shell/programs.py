"""The programs a shell script runs, read from its parsed form: what a preflight looks up on PATH.

Only names the script states literally count: ``kubectl get nodes`` needs ``kubectl``, while
``"$tool" run`` or ``./build.sh`` names nothing that PATH decides. Builtins, keywords and the
script's own functions are not programs; the program behind a wrapper (``sudo``, ``env``,
``timeout``, ``xargs``...) is, and so is every command inside ``$(...)``.
"""

from __future__ import annotations

import re

from .parse import ShellSyntaxError, Simple, Word, iter_simple, parse

#: bash's builtins and keywords that may stand where a command does: never looked up on PATH.
BUILTINS = frozenset(
    """
    . : [ [[ alias bg bind break builtin caller cd command compgen complete continue declare dirs
    disown echo enable eval exec exit export false fc fg getopts hash help history jobs kill let
    local logout mapfile popd printf pushd pwd read readarray readonly return set shift shopt source
    suspend test times trap true type typeset ulimit umask unalias unset wait
    """.split()
)

#: Commands that run the program named after their own options: (wrapper, options taking a value).
_WRAPPERS: dict[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"}),
    "env": frozenset({"-u", "-C", "-S"}),
    "timeout": frozenset({"-k", "-s", "--kill-after", "--signal"}),
    "nice": frozenset({"-n"}),
    "nohup": frozenset(),
    "time": frozenset(),
    "exec": frozenset({"-a"}),
    "command": frozenset(),
    "xargs": frozenset({"-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
}
_FUNCTION = re.compile(r"^\s*(?:function\s+)?([A-Za-z_][\w.-]*)\s*\(\s*\)", re.MULTILINE)
_NAME = re.compile(r"^[A-Za-z0-9_][\w.+-]*$")


def programs(script: str) -> list[str]:
    """The programs ``script`` runs, in order of first use; a script that does not parse names none
    (the step itself will say why when it runs)."""
    try:
        parsed = parse(script)
    except ShellSyntaxError:
        return []
    functions = set(_FUNCTION.findall(script))
    found: list[str] = []
    for command in iter_simple(parsed.units):
        for name in _named(command):
            if name not in BUILTINS and name not in functions and name not in found:
                found.append(name)
    return found


def _named(command: Simple) -> list[str]:
    """The program of one simple command (behind any wrappers), and those of its substitutions."""
    names: list[str] = []
    for word in [*command.assigns, *command.words]:
        for substitution in word.substitutions:
            inner = substitution[2:-1] if substitution.startswith("$(") else substitution[1:-1]
            names += programs(inner)
    words = list(command.words)
    while words:
        first = words[0].literal
        if first is None or not _NAME.match(first):
            break  # "$tool", ./build.sh, /usr/bin/x: not looked up on PATH
        names.append(first)
        if first not in _WRAPPERS:
            break
        words = _after_options(first, words[1:])
    return names


def _after_options(wrapper: str, words: list[Word]) -> list[Word]:
    """The words after a wrapper's own options (and ``env``'s assignments, ``timeout``'s duration)."""
    takes_value = _WRAPPERS[wrapper]
    rest = list(words)
    while rest:
        text = rest[0].literal or ""
        if text == "--":
            return rest[1:]
        if text.startswith("-"):
            rest = rest[2:] if text in takes_value else rest[1:]
        elif wrapper == "env" and "=" in text:
            rest = rest[1:]
        elif wrapper == "timeout" and re.fullmatch(r"[\d.]+[smhd]?", text):
            return rest[1:]
        else:
            break
    return rest
