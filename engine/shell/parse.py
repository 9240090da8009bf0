"""Shell text as data: words (with their quoting and expansions), pipelines, lists and loops.

Two parts of runbook read shell: ingest (``engine/ingest``), which turns a page's commands into
steps, and the simulated PVE nodes (``engine/sim/shell.py``), which run ``ssh`` steps under
``--simulate``. Both read it here, so a script means the same words to both.

``shlex`` splits words but forgets how each part was quoted and cannot see ``$(...)`` with spaces,
pipes, ``&&`` or loops; ingest needs all of that: ``$VMID`` in double quotes is a value to adapt,
``$(pass show ...)`` is credential material to drop, ``| jq '.data[]'`` is an extract, and
``for vmid in 101 102; do ...; done`` may become a ``foreach``; the simulation needs to know which
parts of a word are quoted (no globbing there) and on which line each command starts. So this is a
small lexer and parser for the part of POSIX shell procedures are written in:

- words: unquoted, '...', "..." (with ``\\`` escapes), ``$'...'``, ``$name``, ``${...}``, ``$(...)`` and
  ``$((...))`` nested to any depth, backquotes, ``\\`` line continuations, ``#`` comments;
- operators: ``| || && ; & ( )`` and redirections (``> >> < 2>&1 &> <<EOF`` with the heredoc body);
- compounds: ``for``, ``while``/``until``, ``if``, ``case``, ``{ }``, ``( )`` and functions.

Every word and command keeps its offsets in the source, so a later stage can replace one word
and leave the rest of the text (comments, indentation, line breaks) as the author wrote it.
Anything outside this subset raises ``ShellSyntaxError``: ingest keeps such text as a shell step
flagged for review rather than guessing, the simulation refuses to run it, as bash would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RESERVED = frozenset(
    {
        "for",
        "while",
        "until",
        "if",
        "then",
        "elif",
        "else",
        "fi",
        "do",
        "done",
        "case",
        "esac",
        "in",
        "{",
        "}",
        "!",
        "function",
        "select",
    }
)
_OPERATORS = (
    "&>>",
    "<<-",
    "<<<",
    "&&",
    "||",
    ";;",
    "|&",
    ">>",
    ">&",
    "<&",
    "<<",
    "<>",
    ">|",
    "&>",
    "|",
    "&",
    ";",
    "<",
    ">",
    "(",
    ")",
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL_VAR = re.compile(r"[0-9@*#?$!-]")


class ShellSyntaxError(Exception):
    """Text outside the shell subset understood here; the message says where, ``line`` is that line (from 1)."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Part:
    """A piece of a word: literal text, a variable, or a substitution, and the quotes around it."""

    kind: str  # lit | var | subst
    text: str  # lit: the characters; var: the variable's name; subst: the raw "$(...)" or "`...`"
    quote: str = ""  # "" (unquoted), "'" or '"'
    raw: str = ""  # the source text ("$VMID", "${VMID}", the literal's source)


@dataclass(frozen=True)
class Word:
    parts: tuple[Part, ...]
    start: int
    end: int
    raw: str

    @property
    def text(self) -> str:
        """The word as the shell would see it before expanding: quotes gone, expansions raw."""
        return "".join(p.text if p.kind == "lit" else p.raw for p in self.parts)

    @property
    def literal(self) -> str | None:
        """The word's value when it has no expansion at all, else None."""
        return self.text if all(p.kind == "lit" for p in self.parts) else None

    @property
    def quoted(self) -> bool:
        return any(p.quote for p in self.parts)

    @property
    def substitutions(self) -> list[str]:
        return [p.raw for p in self.parts if p.kind == "subst"]

    @property
    def variables(self) -> list[str]:
        return [p.text for p in self.parts if p.kind == "var"]


@dataclass(frozen=True)
class Token:
    kind: str  # word | op | newline | comment | heredoc
    text: str
    start: int
    end: int
    word: Word | None = None


@dataclass
class Simple:
    """One simple command: ``VAR=x cmd arg ... > file``."""

    words: list[Word]
    assigns: list[Word]
    redirects: list[tuple[str, Word | None]]
    start: int
    end: int
    heredoc: bool = False

    @property
    def name(self) -> str | None:
        return self.words[0].literal if self.words else None


@dataclass
class Compound:
    """A loop, conditional, group, subshell or function; ``for`` loops keep their variable and items."""

    kind: str  # for | while | until | if | case | group | subshell | function | select
    start: int
    end: int
    body: list[AndOr] = field(default_factory=list)
    var: str | None = None
    items: list[Word] | None = None
    redirects: list[tuple[str, Word | None]] = field(default_factory=list)
    heredoc: bool = False


@dataclass
class Pipeline:
    commands: list[Simple | Compound]
    start: int
    end: int
    negated: bool = False


@dataclass
class AndOr:
    """Pipelines joined by ``&&``/``||``; one line (or ``;``-separated part) of a script."""

    pipelines: list[Pipeline]
    ops: list[str]
    start: int
    end: int
    background: bool = False


@dataclass
class Script:
    """A parsed script: its units in order, and its comments (offset, text)."""

    source: str
    units: list[AndOr]
    comments: list[tuple[int, str]]

    def line(self, offset: int) -> int:
        """The line (from 1) of an offset in the source, as bash counts lines in its messages."""
        return _line(self.source, offset)


# ---------------------------------------------------------------------------------------- lexer


def tokenize(src: str) -> list[Token]:
    """The tokens of ``src``; raises ``ShellSyntaxError`` on an unclosed quote or substitution."""
    return _Lexer(src).run()


class _Lexer:
    def __init__(self, src: str):
        self.src = src
        self.i = 0
        self.tokens: list[Token] = []
        self.pending_heredocs: list[tuple[str, bool]] = []

    def run(self) -> list[Token]:
        src = self.src
        while self.i < len(src):
            char = src[self.i]
            if char in " \t\r":
                self.i += 1
            elif src.startswith("\\\n", self.i):
                self.i += 2
            elif char == "\n":
                self.tokens.append(Token("newline", "\n", self.i, self.i + 1))
                self.i += 1
                if self.pending_heredocs:
                    self._heredocs()
            elif char == "#":
                end = src.find("\n", self.i)
                end = len(src) if end < 0 else end
                self.tokens.append(Token("comment", src[self.i : end], self.i, end))
                self.i = end
            elif char in "|&;<>()":
                self._operator()
            else:
                self._word()
        if self.pending_heredocs:
            raise ShellSyntaxError(
                f"the here-document ending with {self.pending_heredocs[0][0]!r} is never closed", _line(src, len(src))
            )
        return self.tokens

    def _operator(self) -> None:
        for op in _OPERATORS:
            if self.src.startswith(op, self.i):
                self.tokens.append(Token("op", op, self.i, self.i + len(op)))
                self.i += len(op)
                if op in ("<<", "<<-"):
                    self._heredoc_start(op == "<<-")
                return
        raise AssertionError("unreachable")  # pragma: no cover

    def _heredoc_start(self, strip_tabs: bool) -> None:
        while self.i < len(self.src) and self.src[self.i] in " \t":
            self.i += 1
        start = self.i
        self._word()
        if len(self.tokens) == 0 or self.tokens[-1].kind != "word" or self.tokens[-1].start != start:
            raise ShellSyntaxError("a here-document (<<) needs a delimiter word", _line(self.src, start))
        word = self.tokens[-1].word
        assert word is not None
        self.pending_heredocs.append((word.text, strip_tabs))

    def _heredocs(self) -> None:
        for delimiter, strip_tabs in self.pending_heredocs:
            start = self.i
            while True:
                if self.i >= len(self.src):
                    raise ShellSyntaxError(
                        f"the here-document ending with {delimiter!r} is never closed", _line(self.src, start)
                    )
                end = self.src.find("\n", self.i)
                end = len(self.src) if end < 0 else end
                line = self.src[self.i : end]
                self.i = min(end + 1, len(self.src))
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
            self.tokens.append(Token("heredoc", self.src[start : self.i], start, self.i))
        self.pending_heredocs = []

    def _word(self) -> None:
        src, start = self.src, self.i
        parts: list[Part] = []
        lit: list[str] = []
        lit_start = self.i

        def flush(quote: str = "") -> None:
            nonlocal lit, lit_start
            if lit:
                parts.append(Part("lit", "".join(lit), quote, src[lit_start : self.i]))
            lit = []
            lit_start = self.i

        while self.i < len(src):
            char = src[self.i]
            if char in " \t\r\n" or char in "|&;<>()":
                if char in "<>" and lit and not parts and "".join(lit).isdigit():
                    # "2>" is one redirection operator: the digits are a file descriptor.
                    lit = []
                    op_start = start
                    self._operator()
                    last = self.tokens.pop()
                    self.tokens.append(Token("op", src[op_start : last.end], op_start, last.end))
                    return
                break
            if src.startswith("\\\n", self.i):
                flush()
                self.i += 2
                lit_start = self.i
            elif char == "\\":
                flush()
                lit.append(src[self.i + 1 : self.i + 2])
                self.i += 2
                flush()
            elif char == "'":
                flush()
                end = src.find("'", self.i + 1)
                if end < 0:
                    raise self._error("a single quote is never closed", self.i)
                parts.append(Part("lit", src[self.i + 1 : end], "'", src[self.i : end + 1]))
                self.i = end + 1
                lit_start = self.i
            elif char == '"':
                flush()
                self.i += 1
                parts.extend(self._double_quoted())
                lit_start = self.i
            elif char == "$" or char == "`":
                expansion = self._expansion("")
                if expansion is None:
                    lit.append(char)
                    self.i += 1
                else:
                    flush()
                    parts.append(expansion)
                    lit_start = self.i
            else:
                lit.append(char)
                self.i += 1
        flush()
        raw = src[start : self.i]
        self.tokens.append(Token("word", raw, start, self.i, Word(tuple(parts), start, self.i, raw)))

    def _double_quoted(self) -> list[Part]:
        src = self.src
        parts: list[Part] = []
        lit: list[str] = []
        lit_start = self.i
        while True:
            if self.i >= len(src):
                raise self._error("a double quote is never closed", lit_start - 1)
            char = src[self.i]
            if char == '"':
                if lit:
                    parts.append(Part("lit", "".join(lit), '"', src[lit_start : self.i]))
                self.i += 1
                return parts or [Part("lit", "", '"', '""')]
            if char == "\\" and src[self.i + 1 : self.i + 2] in ('"', "\\", "$", "`", "\n"):
                if src[self.i + 1] != "\n":
                    lit.append(src[self.i + 1])
                self.i += 2
            elif char in "$`":
                expansion = self._expansion('"')
                if expansion is None:
                    lit.append(char)
                    self.i += 1
                    continue
                if lit:
                    parts.append(Part("lit", "".join(lit), '"', src[lit_start : self.i - len(expansion.raw)]))
                    lit = []
                parts.append(expansion)
                lit_start = self.i
            else:
                lit.append(char)
                self.i += 1

    def _expansion(self, quote: str) -> Part | None:
        """A ``$``/backquote expansion at ``self.i`` (advancing past it), or None for a plain ``$``."""
        src, start = self.src, self.i
        if src[start] == "`":
            end = start + 1
            while end < len(src) and src[end] != "`":
                end += 2 if src[end] == "\\" else 1
            if end >= len(src):
                raise self._error("a backquote is never closed", start)
            self.i = end + 1
            return Part("subst", src[start + 1 : end], quote, src[start : self.i])
        nxt = src[start + 1 : start + 2]
        if nxt == "(":
            self.i = _balanced(src, start + 2)
            return Part("subst", src[start : self.i], quote, src[start : self.i])
        if nxt == "{":
            end = src.find("}", start + 2)
            if end < 0:
                raise self._error("a ${ is never closed", start)
            self.i = end + 1
            inner = src[start + 2 : end]
            if _NAME.fullmatch(inner):
                return Part("var", inner, quote, src[start : self.i])
            return Part("subst", src[start : self.i], quote, src[start : self.i])
        if nxt == "'" and not quote:
            end = src.find("'", start + 2)
            if end < 0:
                raise self._error("a $' quote is never closed", start)
            self.i = end + 1
            return Part(
                "lit", src[start + 2 : end].encode().decode("unicode_escape", "replace"), "'", src[start : self.i]
            )
        name = _NAME.match(src, start + 1)
        if name:
            self.i = name.end()
            return Part("var", name[0], quote, src[start : self.i])
        if nxt and _SPECIAL_VAR.match(nxt):
            self.i = start + 2
            return Part("var", nxt, quote, src[start : self.i])
        return None

    def _error(self, what: str, offset: int) -> ShellSyntaxError:
        line = _line(self.src, offset)
        return ShellSyntaxError(f"{what} (at line {line})", line)


def _line(src: str, offset: int) -> int:
    """The line (from 1) of ``offset`` in ``src``."""
    return src.count("\n", 0, offset) + 1


def _balanced(src: str, index: int) -> int:
    """Index just past the ``)`` closing a ``$(`` whose contents start at ``index``."""
    depth, start = 1, index - 2
    while index < len(src):
        char = src[index]
        if char == "\\":
            index += 2
            continue
        if char == "'":
            end = src.find("'", index + 1)
            if end < 0:
                break
            index = end + 1
            continue
        if char == '"':
            index += 1
            while index < len(src) and src[index] != '"':
                if src[index] == "\\":
                    index += 1
                elif src.startswith("$(", index):
                    index = _balanced(src, index + 2) - 1
                index += 1
            index += 1
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    line = _line(src, start)
    raise ShellSyntaxError(f"a $( is never closed (at line {line})", line)


# --------------------------------------------------------------------------------------- parser


def parse(src: str) -> Script:
    """Parse ``src`` as a script; raises ``ShellSyntaxError`` when it is outside the understood subset."""
    tokens = tokenize(src)
    comments = [(t.start, t.text) for t in tokens if t.kind == "comment"]
    parser = _Parser([t for t in tokens if t.kind != "comment"], src)
    units = parser.list_until(())
    if parser.pos < len(parser.tokens):
        token = parser.tokens[parser.pos]
        line = _line(src, token.start)
        raise ShellSyntaxError(f"unexpected {token.text!r} at line {line}", line)
    return Script(src, units, comments)


class _Parser:
    def __init__(self, tokens: list[Token], src: str):
        self.tokens = tokens
        self.src = src
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _reserved(self, token: Token | None) -> str | None:
        if token is None or token.kind != "word" or token.word is None:
            return None
        literal = token.word.literal
        return literal if literal in RESERVED and not token.word.quoted else None

    def fail(self, what: str) -> ShellSyntaxError:
        token = self.peek()
        if token is None:
            return ShellSyntaxError(f"{what}, but the text ends", _line(self.src, len(self.src)))
        line = _line(self.src, token.start)
        return ShellSyntaxError(f"{what} at line {line} (found {token.text.strip() or 'a line break'!r})", line)

    def skip_newlines(self) -> None:
        while (token := self.peek()) is not None and (
            token.kind == "newline" or (token.kind == "op" and token.text == ";")
        ):
            self.pos += 1

    def expect_word(self, word: str) -> Token:
        self.skip_newlines()
        token = self.peek()
        if self._reserved(token) != word:
            raise self.fail(f"expected '{word}'")
        self.pos += 1
        assert token is not None
        return token

    def list_until(self, stops: tuple[str, ...]) -> list[AndOr]:
        units: list[AndOr] = []
        while True:
            self.skip_newlines()
            token = self.peek()
            if token is None:
                if stops:
                    raise self.fail(f"expected '{stops[-1]}'")
                return units
            reserved = self._reserved(token)
            if reserved in stops or (token.kind == "op" and token.text in stops):
                return units
            if token.kind == "op" and token.text in (")", ";;"):
                raise self.fail("unexpected operator")
            units.append(self.and_or())

    def and_or(self) -> AndOr:
        pipelines = [self.pipeline()]
        ops: list[str] = []
        background = False
        while (token := self.peek()) is not None and token.kind == "op" and token.text in ("&&", "||"):
            self.pos += 1
            while (nl := self.peek()) is not None and nl.kind == "newline":
                self.pos += 1
            ops.append(token.text)
            pipelines.append(self.pipeline())
        token = self.peek()
        if token is not None and token.kind == "op" and token.text in (";", "&"):
            background = token.text == "&"
            self.pos += 1
        end = pipelines[-1].end
        # A here-document's body follows the line that opened it: it belongs to this unit.
        while (
            self.pos + 1 < len(self.tokens)
            and self.tokens[self.pos].kind == "newline"
            and self.tokens[self.pos + 1].kind == "heredoc"
        ):
            end = self.tokens[self.pos + 1].end
            self.pos += 2
        return AndOr(pipelines, ops, pipelines[0].start, end, background)

    def pipeline(self) -> Pipeline:
        negated = False
        if self._reserved(self.peek()) == "!":
            negated = True
            self.pos += 1
        commands = [self.command()]
        while (token := self.peek()) is not None and token.kind == "op" and token.text in ("|", "|&"):
            self.pos += 1
            while (nl := self.peek()) is not None and nl.kind == "newline":
                self.pos += 1
            commands.append(self.command())
        return Pipeline(commands, commands[0].start, commands[-1].end, negated)

    def command(self) -> Simple | Compound:
        token = self.peek()
        if token is None:
            raise self.fail("expected a command")
        reserved = self._reserved(token)
        if reserved in ("for", "select"):
            return self._with_redirects(self._for())
        if reserved in ("while", "until"):
            return self._with_redirects(self._while(reserved))
        if reserved == "if":
            return self._with_redirects(self._if())
        if reserved == "case":
            return self._with_redirects(self._case())
        if reserved == "{":
            self.pos += 1
            body = self.list_until(("}",))
            end = self.expect_word("}")
            return self._with_redirects(Compound("group", token.start, end.end, body))
        if token.kind == "op" and token.text == "(":
            self.pos += 1
            body = self.list_until((")",))
            close = self.peek()
            if close is None or close.text != ")":
                raise self.fail("expected ')'")
            self.pos += 1
            return self._with_redirects(Compound("subshell", token.start, close.end, body))
        if reserved == "function" or (token.kind == "word" and self._is_function_def()):
            return self._function()
        if reserved is not None and reserved not in ("in",):
            raise self.fail(f"unexpected '{reserved}'")
        return self._simple()

    def _is_function_def(self) -> bool:
        after = self.tokens[self.pos + 1 : self.pos + 3]
        return len(after) == 2 and after[0].text == "(" and after[1].text == ")"

    def _function(self) -> Compound:
        start = self.peek()
        assert start is not None
        if self._reserved(start) == "function":
            self.pos += 1
        self.pos += 1  # the name
        if (token := self.peek()) is not None and token.text == "(":
            self.pos += 2
        self.skip_newlines()
        body = self.command()
        return Compound(
            "function",
            start.start,
            body.end,
            [AndOr([Pipeline([body], body.start, body.end)], [], body.start, body.end)],
        )

    def _with_redirects(self, compound: Compound) -> Compound:
        redirects, heredoc = self._redirects()
        compound.redirects = redirects
        compound.heredoc = heredoc
        if redirects:
            compound.end = max(compound.end, self.tokens[self.pos - 1].end)
        return compound

    def _redirects(self) -> tuple[list[tuple[str, Word | None]], bool]:
        redirects: list[tuple[str, Word | None]] = []
        heredoc = False
        while (token := self.peek()) is not None and token.kind == "op" and _is_redirect(token.text):
            self.pos += 1
            target = self.peek()
            if target is None or target.kind != "word":
                raise self.fail(f"expected a file after {token.text!r}")
            self.pos += 1
            redirects.append((token.text, target.word))
            heredoc = heredoc or token.text.endswith(("<<", "<<-"))
        while (token := self.peek()) is not None and token.kind == "heredoc":
            self.pos += 1
        return redirects, heredoc

    def _for(self) -> Compound:
        start = self.tokens[self.pos]
        self.pos += 1
        name = self.peek()
        if name is None or name.kind != "word" or name.word is None or not _NAME.fullmatch(name.word.literal or ""):
            raise self.fail("expected a loop variable name after 'for'")
        self.pos += 1
        items: list[Word] | None = None
        while (token := self.peek()) is not None and token.kind == "newline":
            self.pos += 1
        if self._reserved(self.peek()) == "in":
            self.pos += 1
            items = []
            while (token := self.peek()) is not None and token.kind == "word":
                assert token.word is not None
                items.append(token.word)
                self.pos += 1
        self.expect_word("do")
        body = self.list_until(("done",))
        end = self.expect_word("done")
        return Compound("for", start.start, end.end, body, var=name.word.literal, items=items)

    def _while(self, kind: str) -> Compound:
        start = self.tokens[self.pos]
        self.pos += 1
        condition = self.list_until(("do",))
        self.expect_word("do")
        body = self.list_until(("done",))
        end = self.expect_word("done")
        return Compound(kind, start.start, end.end, condition + body)

    def _if(self) -> Compound:
        start = self.tokens[self.pos]
        self.pos += 1
        body: list[AndOr] = []
        while True:
            body += self.list_until(("then",))
            self.expect_word("then")
            body += self.list_until(("elif", "else", "fi"))
            self.skip_newlines()
            word = self._reserved(self.peek())
            self.pos += 1
            if word == "elif":
                continue
            if word == "else":
                body += self.list_until(("fi",))
                end = self.expect_word("fi")
            else:
                end = self.tokens[self.pos - 1]
            return Compound("if", start.start, end.end, body)

    def _case(self) -> Compound:
        start = self.tokens[self.pos]
        depth = 0
        while (token := self.peek()) is not None:
            self.pos += 1
            reserved = token.word.literal if token.kind == "word" and token.word else None
            if reserved == "case":
                depth += 1
            elif reserved == "esac":
                depth -= 1
                if depth == 0:
                    return Compound("case", start.start, token.end)
        raise self.fail("expected 'esac'")

    def _simple(self) -> Simple:
        words: list[Word] = []
        assigns: list[Word] = []
        redirects: list[tuple[str, Word | None]] = []
        heredoc = False
        start = self.tokens[self.pos].start
        end = start
        while (token := self.peek()) is not None:
            if token.kind == "word":
                assert token.word is not None
                if not words and _is_assignment(token.word):
                    assigns.append(token.word)
                else:
                    words.append(token.word)
                end = token.end
                self.pos += 1
            elif token.kind == "op" and _is_redirect(token.text):
                more, here = self._redirects()
                redirects += more
                heredoc = heredoc or here
                end = self.tokens[self.pos - 1].end
            elif token.kind == "heredoc":
                self.pos += 1
            else:
                break
        if not words and not assigns and not redirects:
            raise self.fail("expected a command")
        return Simple(words, assigns, redirects, start, end, heredoc)


def _is_redirect(op: str) -> bool:
    return op.rstrip("-").endswith(("<", ">", "<<", "&>", ">&", "<&", "<>", ">|", ">>", "<<<")) and op not in ("<(",)


def _is_assignment(word: Word) -> bool:
    first = word.parts[0] if word.parts else None
    return bool(
        first and first.kind == "lit" and not first.quote and re.match(r"^[A-Za-z_][A-Za-z0-9_]*\+?=", first.text)
    )


def assignment(word: Word) -> tuple[str, Word]:
    """(name, value) of a ``NAME=value`` word; the value keeps its parts and quoting."""
    first = word.parts[0]
    name, _, rest = first.text.partition("=")
    parts = ((Part("lit", rest, first.quote, rest),) if rest else ()) + word.parts[1:]
    return name.rstrip("+"), Word(parts, word.start + len(name) + 1, word.end, word.raw[len(name) + 1 :])


def iter_simple(units: list[AndOr]) -> list[Simple]:
    """Every simple command in ``units``, loops and groups included, in order."""
    found: list[Simple] = []
    for unit in units:
        for pipeline in unit.pipelines:
            for command in pipeline.commands:
                if isinstance(command, Simple):
                    found.append(command)
                else:
                    found += iter_simple(command.body)
    return found
