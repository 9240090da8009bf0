"""Untrusted input, fuzzed: runbooks, frontmatter, attributes, profiles and configs from hypothesis,
random or mutated from the shipped files and the corpus, fed to the parser and the validator.

Every input must end in a clean result or a clean error (``InputError`` with located problems),
never a traceback, and large inputs within a time bound (generous bounds, not benchmarks).

Examples are derandomized (the same every run) and few enough to keep the suite fast; a longer,
random search: ``RUNBOOK_FUZZ_EXAMPLES=2000 RUNBOOK_FUZZ_RANDOM=1 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.load.config import config_problems, load_config
from engine.load.home import Home
from engine.load.problems import InputError, Problem
from engine.load.profiles import load_profiles
from engine.load.yamlsource import MAX_DEPTH, load_yaml
from engine.runbook.model import STEP_KINDS, Runbook
from engine.runbook.parser import parse_runbook
from engine.runbook.render import Renderer
from engine.runbook.validate import validate_home

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "runbooks").glob("*.md"))
CORPUS = sorted((REPO / "tests" / "corpus" / "runbooks").glob("*.md"))
PROFILE_FILES = sorted((REPO / "clusters").glob("*.yaml")) + sorted(
    (REPO / "tests" / "corpus" / "clusters").glob("*.yaml")
)
EXAMPLES = int(os.environ.get("RUNBOOK_FUZZ_EXAMPLES", "0"))
RANDOM = bool(os.environ.get("RUNBOOK_FUZZ_RANDOM"))


def fuzz(examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings: ``examples`` by default, RUNBOOK_FUZZ_EXAMPLES when set; our own time bounds."""
    return settings(
        max_examples=EXAMPLES or examples,
        derandomize=not RANDOM,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


def clean(outcome: Callable[[], Any]) -> Any:
    """Run ``outcome``; a result or an InputError whose problems are well formed, nothing else."""
    try:
        return outcome()
    except InputError as exc:
        assert exc.problems, "an InputError without a problem"
        for problem in exc.problems:
            assert isinstance(problem, Problem) and isinstance(problem.message, str) and problem.message
            assert problem.line is None or (isinstance(problem.line, int) and problem.line >= 1), problem
            str(problem)
        return exc


# ------------------------------------------------------------------ strategies

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ATTR_KEYS = (
    "id",
    "foreach",
    "as",
    "check",
    "when",
    "until",
    "retries",
    "delay",
    "timeout",
    "extract",
    "confirm",
    "destructive",
    "readonly",
    "show",
    "register",
    "node",
    "json",
    "api_token_env",
    "parallel",
    "pipeline",
    "review",
    "expect",
)
JINJA = (
    "{{ params }}",
    "{{ vm.name }}",
    "{{ item }}",
    "{{ x | raw }}",
    "{{ profile.name }}",
    "{% if true %}a{% endif %}",
    "{{ steps.a }}",
    "{{ ''.__class__ }}",
    "{{ nodes | length }}",
    "{{",
    "}}",
    "{%",
    "{# c #}",
    "{{ 1 / 0 }}",
    "{{ [1,2] | join(',') }}",
    "{{ config.cluster.name }}",
    "{{ missing }}",
)
FENCE_WORDS = st.one_of(
    st.sampled_from(STEP_KINDS),
    st.sampled_from(("API", "Local", "bash", "sh", "yaml", "", "api{id: x}", "talos")),
    st.text(max_size=6),
)


@st.composite
def attribute_text(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=40))
    attrs = draw(
        st.dictionaries(
            st.one_of(st.sampled_from(ATTR_KEYS), st.text(max_size=6)),
            st.one_of(VALUES, st.sampled_from(JINJA)),
            max_size=5,
        )
    )
    text = yaml.safe_dump(attrs, default_flow_style=True, width=10**6).strip()
    return text if text.startswith("{") else "{" + text + "}"


@st.composite
def body_text(draw: st.DrawFn, kind: str) -> str:
    lines = []
    if kind in ("api", "http"):
        method = draw(st.sampled_from(("GET", "POST", "PUT", "DELETE", "PATCH", "get", "")))
        target = draw(
            st.sampled_from(
                (
                    "/version",
                    "/nodes/pve01/qemu/100/config",
                    "/cluster/resources",
                    "https://factory.talos.dev/versions",
                    "",
                    "/nodes/{{ vm.node }}/qemu",
                )
            )
        )
        lines.append(f"{method} {target}".strip())
        for _ in range(draw(st.integers(0, 3))):
            key = draw(st.sampled_from(("name", "cores", "newid", "tags", "x y", "", "- a")))
            value = draw(st.one_of(st.sampled_from(JINJA), st.text(max_size=12)))
            lines.append(f"{key}: {value}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append(
            draw(
                st.one_of(
                    st.text(max_size=30),
                    st.sampled_from(JINJA),
                    st.sampled_from(("echo hi", "exit 1", "```", "~~~", "```api", "--nodes 1.2.3.4 health")),
                )
            )
        )
    return "\n".join(lines) + "\n"


@st.composite
def frontmatter_text(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=60))
    meta: dict[Any, Any] = {}
    if draw(st.integers(0, 5)):
        meta["name"] = draw(st.one_of(st.just("fuzz"), st.text(max_size=10), VALUES))
    if draw(st.integers(0, 5)):
        meta["description"] = draw(st.one_of(st.just("A fuzzed runbook."), VALUES))
    if draw(st.booleans()):
        meta["requires"] = draw(st.one_of(st.just(["profile"]), VALUES))
    if draw(st.booleans()):
        params: dict[Any, Any] = {}
        for _ in range(draw(st.integers(0, 3))):
            spec: dict[str, Any] = {
                "type": draw(st.sampled_from(("string", "integer", "number", "boolean", "array", "object", "weird"))),
                "description": draw(st.text(max_size=10)),
            }
            if draw(st.booleans()):
                spec["default"] = draw(VALUES)
            if draw(st.booleans()):
                spec["pattern"] = draw(st.sampled_from(("^[a-z]+$", "^(/.*)?$", "[", "(", r"\d{1,3}", ".*", "^x")))
            for extra in draw(
                st.lists(st.sampled_from(("minimum", "maximum", "enum", "items", "min", "secret")), max_size=2)
            ):
                spec[extra] = draw(VALUES)
            params[draw(st.one_of(st.sampled_from(("vmid", "node", "plan", "steps", "item")), st.text(max_size=8)))] = (
                draw(st.one_of(st.just(spec), VALUES))
            )
        meta["parameters"] = params
    for key in draw(st.lists(st.text(max_size=6), max_size=2)):
        meta[key] = draw(VALUES)
    return yaml.safe_dump(meta, allow_unicode=True, sort_keys=False)


@st.composite
def runbooks(draw: st.DrawFn) -> str:
    parts = [f"---\n{draw(frontmatter_text())}---\n" if draw(st.integers(0, 9)) else draw(st.text(max_size=20))]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            parts.append(f"{'#' * draw(st.integers(1, 3))} {draw(st.text(max_size=15))}\n")
        if draw(st.booleans()):
            parts.append(draw(st.text(max_size=40)) + "\n")
        kind = draw(FENCE_WORDS)
        fence = draw(st.sampled_from(("```", "~~~", "````", "  ```", "> ```")))
        attrs = f" {draw(attribute_text())}" if draw(st.booleans()) else ""
        closing = fence if draw(st.integers(0, 7)) else ""
        parts.append(f"{fence}{kind}{attrs}\n{draw(body_text(kind if kind in STEP_KINDS else 'local'))}{closing}\n")
    return "\n".join(parts)


@st.composite
def mutated(draw: st.DrawFn, texts: list[str]) -> str:
    """One of ``texts`` with a few random edits: lines dropped, repeated or swapped, characters changed."""
    lines = draw(st.sampled_from(texts)).splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.integers(0, 5))
        if edit == 0:
            del lines[at : at + draw(st.integers(1, 5))]
        elif edit == 1:
            lines.insert(at, lines[draw(st.integers(0, len(lines) - 1))])
        elif edit == 2:
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        else:
            line = lines[at]
            pos = draw(st.integers(0, len(line)))
            insert = draw(
                st.one_of(
                    st.text(max_size=3),
                    st.sampled_from(
                        ("{", "}", "[", ":", "'", '"', "`", "\t", "{{", "*a", "&a", "---", "\x00", "\ufeff")
                    ),
                )
            )
            cut = draw(st.integers(0, 2))
            lines[at] = line[:pos] + insert + line[pos + cut :]
    return "".join(lines)


SHIPPED_TEXTS = [p.read_bytes().decode("utf-8", "replace") for p in SHIPPED + CORPUS]
PROFILE_TEXTS = [p.read_bytes().decode("utf-8", "replace") for p in PROFILE_FILES]
CONFIG_TEXT = (REPO / "cluster-config.yaml").read_text()


# ------------------------------------------------------------------ the parser


@fuzz(300)
@given(st.text())
@example(
    "---\nname: x\nformat: 2\ndescription: y\n---\n```api {id: " + "[" * 5000 + "]" * 5000 + "}\nGET /version\n```\n"
)
@example("---\nname: x\nformat: 2\ndescription: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n---\n")
@example("---\nname: x\nformat: 2\ndescription: &a [1, *a]\n---\n")
def test_any_text_parses_or_is_a_clean_error(text: str) -> None:
    result = clean(lambda: parse_runbook(text, "runbooks/fuzz.md"))
    assert isinstance(result, (Runbook, InputError))


@fuzz(300)
@given(runbooks())
def test_generated_runbooks_parse_or_are_clean_errors(text: str) -> None:
    result = clean(lambda: parse_runbook(text, "runbooks/fuzz.md", expected_name="fuzz"))
    if isinstance(result, Runbook):
        assert all(step.id and step.kind in STEP_KINDS for step in result.steps)
        assert len({step.id for step in result.steps}) == len(result.steps)


@fuzz(300)
@given(mutated(SHIPPED_TEXTS))
def test_mutated_shipped_runbooks_parse_or_are_clean_errors(text: str) -> None:
    clean(lambda: parse_runbook(text, "runbooks/fuzz.md"))


@fuzz(200)
@given(st.one_of(st.text(), mutated(PROFILE_TEXTS), mutated([CONFIG_TEXT]), attribute_text()))
def test_any_yaml_loads_or_is_a_clean_error(text: str) -> None:
    clean(lambda: load_yaml(text, "fuzz.yaml", first_line=3))


# ------------------------------------------------------------------ profiles, config, whole homes


def make_home(
    root: Path, config: str | None = None, profiles: dict[str, str] | None = None, runbook: str | None = None
) -> Home:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cluster-config.yaml").write_text(config if config is not None else CONFIG_TEXT)
    (root / "clusters").mkdir(exist_ok=True)
    for name, text in (
        profiles if profiles is not None else {p.stem: p.read_text() for p in (REPO / "clusters").glob("*.yaml")}
    ).items():
        (root / "clusters" / f"{name}.yaml").write_text(text)
    (root / "runbooks").mkdir(exist_ok=True)
    if runbook is not None:
        (root / "runbooks" / "fuzz.md").write_text(runbook)
    return Home(root)


@st.composite
def altered_data(draw: st.DrawFn, text: str) -> str:
    """YAML ``text`` with values deep inside replaced, removed or retyped, dumped again (a file that is
    not YAML, from the corpus, comes back as it is)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text

    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(value, dict):
            for key, inner in value.items():
                found += paths(inner, prefix + (key,))
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                found += paths(inner, prefix + (index,))
        return found

    for _ in range(draw(st.integers(1, 3))):
        candidates = paths(data)[1:]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(
                st.one_of(
                    VALUES,
                    st.sampled_from((0, -1, 10**9, "", "pve09", "1000G", "10.0.0.1/33", [], {}, None, "x" * 300)),
                )
            )
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@fuzz(60)
@given(st.data())
def test_altered_profiles_load_or_report_problems(data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(PROFILE_FILES))
    text = data.draw(st.one_of(altered_data(source.read_text()), mutated([source.read_text()])))
    with tempfile.TemporaryDirectory() as folder:
        home = make_home(Path(folder), profiles={source.stem: text})
        config = load_config(home)
        profiles, problems = load_profiles(home, config)
        for problem in problems:
            assert isinstance(problem, Problem) and problem.message
        for profile in profiles:
            clean(lambda profile=profile: profile.plan(config))


@fuzz(60)
@given(st.one_of(altered_data(CONFIG_TEXT), mutated([CONFIG_TEXT])))
def test_altered_configs_load_or_report_problems(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        home = make_home(Path(folder), config=text)
        clean(lambda: load_config(home))
        clean(lambda: config_problems(load_yaml(text, "cluster-config.yaml")))


@fuzz(40)
@given(st.data())
def test_validate_reports_on_any_home(data: st.DataObject) -> None:
    """A whole home of fuzzed files: ``runbook validate``'s report, never a traceback."""
    config = data.draw(st.one_of(st.just(CONFIG_TEXT), altered_data(CONFIG_TEXT)))
    source = data.draw(st.sampled_from(PROFILE_FILES[:2]))
    profile = data.draw(st.one_of(st.just(source.read_text()), altered_data(source.read_text())))
    runbook = data.draw(st.one_of(runbooks(), mutated(SHIPPED_TEXTS)))
    with tempfile.TemporaryDirectory() as folder:
        home = make_home(Path(folder), config=config, profiles={source.stem: profile}, runbook=runbook)
        report = validate_home(home)
        for problem in report.problems:
            assert isinstance(problem, Problem) and problem.message


# ------------------------------------------------------------------ templates: sandboxed, values quoted


@fuzz(200)
@given(st.text())
def test_a_value_is_one_shell_word_and_one_api_parameter_whatever_it_holds(value: str) -> None:
    book = parse_runbook(
        "---\nname: q\nformat: 2\ndescription: q\n---\n\n```local {id: a}\necho {{ v }}\n```\n\n"
        '```api {id: b}\nPUT /nodes/pve01/qemu/100/config\ndescription: "{{ v }}"\n```\n',
        "q.md",
    )
    renderer = Renderer("q.md", {"v": value})
    script = renderer.action(book.steps[0], {}).script  # type: ignore[union-attr]
    assert shlex.split(script.rstrip("\n"), posix=True) == ["echo", value]
    request = renderer.action(book.steps[1], {})
    assert list(request.params) == (["description"] if value else [])  # type: ignore[union-attr]
    if value:
        assert request.params["description"] == value  # type: ignore[union-attr]


NAMES = (
    "config",
    "cluster",
    "nodes",
    "node_names",
    "defaults",
    "tags",
    "vmid_ranges",
    "credentials",
    "params",
    "cloudinit",
    "profile",
    "plan",
)
NUMBERS = st.one_of(st.integers(-5, 40), st.sampled_from((0, 1, 2, 3)))
ATOMS = st.one_of(
    st.sampled_from(NAMES),
    NUMBERS.map(str),
    st.text(alphabet="abc{}0 %-", max_size=5).map(repr),
    st.just("[1, 2, 'a']"),
    st.just("{'a': 1}"),
)
FILTERS = (
    "length",
    "int",
    "string",
    "default('x')",
    "join(',')",
    "first",
    "last",
    "upper",
    "list",
    "sort",
    "unique",
    "trim",
    "float",
    "abs",
    "round",
    "tojson",
    "reverse",
    "sum",
    "min",
    "max",
    "dictsort",
    "items",
    "selectattr('name')",
    "map(attribute='name')",
    "batch({n})",
    "slice({n})",
    "truncate({n})",
    "wordwrap({n})",
    "center({n})",
    "indent({n})",
    "format({n})",
    "replace('a', 'b')",
    "attr('name')",
    "groupby('name')",
)


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    """A Jinja expression from the names templates see, literals, filters, operators and subscripts."""
    if depth > 2 or draw(st.integers(0, 3)) == 0:
        return draw(ATOMS)
    inner = draw(expressions(depth + 1))
    form = draw(st.integers(0, 5))
    if form == 0:
        return f"{inner} | {draw(st.sampled_from(FILTERS)).format(n=draw(NUMBERS))}"
    if form == 1:
        op = draw(st.sampled_from(("+", "-", "*", "/", "//", "%", "~", "==", "<", "in", "and", "or")))
        return f"({inner} {op} {draw(expressions(depth + 1))})"
    if form == 2:
        return f"{inner}[{draw(st.one_of(NUMBERS.map(str), st.just(repr('name'))))}]"
    if form == 3:
        return f"{inner}.{draw(st.sampled_from(('name', 'host', 'cores', 'items', 'keys', 'x')))}"
    if form == 4:
        return f"'{{0}} {{1}}'.format({inner})"
    return f"not {inner}"


@fuzz(150)
@given(
    st.lists(
        st.tuples(st.sampled_from(("local", "api", "talosctl")), expressions(), expressions()), min_size=1, max_size=4
    )
)
def test_templates_render_or_are_located_problems(steps: list[tuple[str, str, str]]) -> None:
    """Runbooks that parse, full of random template expressions: validate renders them (once per
    profile); every failure must be a located problem."""
    parts = ["---\nname: fuzz\nformat: 2\ndescription: Templates.\nrequires: [profile]\n---\n"]
    for index, (kind, value, condition) in enumerate(steps):
        condition = condition.replace('"', "'")
        if kind == "api":
            body = f'PUT /nodes/pve01/qemu/100/config\ndescription: "{{{{ {value.replace(chr(34), chr(39))} }}}}"'
        elif kind == "talosctl":
            body = f"--nodes {{{{ {value} }}}} health"
        else:
            body = f"echo {{{{ {value} }}}}"
        parts.append(f'```{kind} {{id: s{index}, when: "{condition}"}}\n{body}\n```\n')
    with tempfile.TemporaryDirectory() as folder:
        home = make_home(Path(folder), runbook="\n".join(parts))
        report = validate_home(home)
        for problem in report.problems:
            assert isinstance(problem, Problem) and problem.message


HOSTILE_TAGS = (
    "!!python/object/apply:os.system ['touch /tmp/runbook-fuzz-pwned']",
    "!!python/name:os.system",
    "!!python/object/new:subprocess.Popen [['true']]",
)


@pytest.mark.parametrize("tag", HOSTILE_TAGS)
def test_python_tags_are_refused_everywhere_yaml_is_read(tag: str, tmp_path: Path) -> None:
    """The safe loader: a tag that would run code is an error in a runbook's frontmatter, its attributes
    and api bodies, a profile and the cluster config."""
    front = f"---\nname: fuzz\nformat: 2\ndescription: {tag}\n---\n"
    assert "could not determine a constructor" in str(clean(lambda: parse_runbook(front, "fuzz.md")).problems[0])
    attrs = f"---\nname: fuzz\nformat: 2\ndescription: x\n---\n\n```local {{id: a, when: {tag}}}\necho\n```\n"
    assert isinstance(clean(lambda: parse_runbook(attrs, "fuzz.md")), InputError)
    body = (
        "---\nname: fuzz\nformat: 2\ndescription: x\n---\n\n```api {id: a}\nPUT /nodes/pve01/qemu/100/config\n"
        f"name: {tag}\n```\n"
    )
    home = make_home(
        tmp_path / "home",
        config=CONFIG_TEXT + f"\nextra: {tag}\n",
        profiles={"dev-generic": (REPO / "clusters" / "dev-generic.yaml").read_text() + f"\nx: {tag}\n"},
        runbook=body,
    )
    report = validate_home(home)
    refused = [p for p in report.problems if "could not determine a constructor" in p.message]
    assert {p.file for p in refused} >= {"cluster-config.yaml", "clusters/dev-generic.yaml"}, report.problems
    assert any(p.line == 9 for p in refused), "the api body's parameter should be refused too"
    assert not Path("/tmp/runbook-fuzz-pwned").exists()


def test_a_problem_in_an_api_body_names_the_runbook_file(tmp_path: Path) -> None:
    home = make_home(
        tmp_path / "home",
        runbook="---\nname: fuzz\nformat: 2\ndescription: x\n---\n\n```api {id: a}\n"
        "PUT /nodes/pve01/qemu/100/config\nname: [unclosed\n```\n",
    )
    report = validate_home(home)
    assert [p.file for p in report.problems] == ["runbooks/fuzz.md"], report.problems


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ config.__class__ }}",
        "{{ (1).__class__.__subclasses__() }}",
        "{{ exists.__globals__ }}",
        "{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}",
    ],
)
def test_templates_cannot_reach_python_internals(template: str, tmp_path: Path) -> None:
    home = make_home(
        tmp_path / "home",
        runbook=f"---\nname: fuzz\nformat: 2\ndescription: x\n---\n\n```local {{id: a}}\necho {template}\n```\n",
    )
    report = validate_home(home)
    assert [p.message for p in report.problems if "unsafe" in p.message or "undefined" in p.message], report.problems


# Found by fuzzing: engine/runbook/render.py turned only TemplateError, KeyError, TypeError, ValueError,
# AttributeError and ZeroDivisionError into problems, so these ended `runbook validate` and
# `runbook run --dry-run` in a traceback (fixed in render.py since; MemoryError, from
# `'x' | center(10**12)`, is caught too but not run here).
RENDER_CRASHES = {
    "range beyond the sandbox's limit (OverflowError)": "echo {{ range(10**9) | list | length }}",
    "a float too large (OverflowError)": "echo {{ 10**400 | float }}",
    "a format index out of range (IndexError)": "echo {{ '{0}'.format() }}",
    "a negative truncate length (AssertionError)": "echo {{ 'abc' | truncate(-5) }}",
    "a macro calling itself (RecursionError)": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
}


def _body_problems(body: str, tmp_path: Path, attrs: str = "") -> list[Problem]:
    home = make_home(
        tmp_path / "home",
        runbook=f"---\nname: fuzz\nformat: 2\ndescription: x\n---\n\n```local {{id: a{attrs}}}\n{body}\n```\n",
    )
    return validate_home(home).problems


@pytest.mark.parametrize("body", RENDER_CRASHES.values(), ids=list(RENDER_CRASHES))
def test_a_template_that_overflows_or_recurses_is_a_located_problem(body: str, tmp_path: Path) -> None:
    problems = _body_problems(body, tmp_path)
    assert any(p.file == "runbooks/fuzz.md" and p.line == 8 for p in problems), problems


def test_a_deeply_nested_expression_is_a_located_problem(tmp_path: Path) -> None:
    problems = _body_problems("echo {{ " + "(" * 2000 + "1" + ")" * 2000 + " }}", tmp_path)
    assert any(p.file == "runbooks/fuzz.md" and p.line == 8 for p in problems), problems


def test_an_expression_that_fails_while_compiling_is_a_located_problem(tmp_path: Path) -> None:
    """Found by fuzzing: Jinja folds constant sub-expressions while compiling, under the sandbox's
    StrictUndefined, so `when: "[1].name and true"` raised UndefinedError out of the syntax check."""
    problems = _body_problems("echo", tmp_path, attrs=', when: "[1].name and true"')
    assert [p for p in problems if p.field == "attributes.when"], problems


def test_lipsum_is_not_available_to_templates(tmp_path: Path) -> None:
    """Found by fuzzing: Jinja's default global lipsum() was left in the sandbox, and lipsum(10**6)
    kept `runbook validate` busy for about a minute (10**8: hours)."""
    problems = _body_problems("echo {{ lipsum(1) }}", tmp_path)
    assert any("'lipsum' is undefined" in p.message for p in problems), problems


# ------------------------------------------------------------------ large inputs
#
# How fast these are is bench/run.py's to report ("parsing"), never a test's to assert. The inputs
# that once ran for minutes are guarded against hanging: they must finish at all.

#: Far above what any of these takes on a loaded machine (they ran for minutes before their fixes).
HANG = 120.0


def finishes(work: Callable[[], Any]) -> Any:
    """``clean(work)``, failing the test if it has not finished after HANG seconds (a hang, not a speed)."""
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(clean(work)), daemon=True)
    worker.start()
    worker.join(HANG)
    assert done, f"still running after {HANG:g} s: the input makes it hang"
    return done[0]


FRONT = "---\nname: big\nformat: 2\ndescription: A large runbook.\n---\n\n"


def test_a_5000_step_runbook_parses() -> None:
    """How long it takes is bench/run.py's to report (parsing), not a test's to assert."""
    text = FRONT + "".join(
        f'## Step {i}\n\n```local {{id: s{i}, when: "true"}}\necho {i} {{{{ 1 + {i} }}}}\n```\n\n' for i in range(5000)
    )
    runbook = clean(lambda: parse_runbook(text, "runbooks/big.md", expected_name="big"))
    assert len(runbook.steps) == 5000


def test_a_runbook_of_5000_broken_steps_reports_them_all() -> None:
    text = FRONT + "".join(f"```local {{id: s{i % 50}, bogus: {i}}}\necho\n```\n\n" for i in range(5000))
    error = clean(lambda: parse_runbook(text, "runbooks/big.md"))
    assert isinstance(error, InputError) and len(error.problems) >= 5000


def test_a_1000_step_runbook_validates(tmp_path: Path) -> None:
    text = FRONT.replace("big", "fuzz") + "".join(
        f'```api {{id: s{i}, when: "profile is not defined"}}\nPUT /nodes/pve01/qemu/{100 + i}/config\n'
        f'name: "vm-{{{{ {i} }}}}"\n```\n\n'
        for i in range(1000)
    )
    home = make_home(tmp_path / "home", runbook=text)
    report = clean(lambda: validate_home(home))
    assert report.ok, report.problems[:3]


def test_huge_lines_and_many_attributes_are_a_located_error() -> None:
    text = (
        FRONT
        + "```local {id: a}\necho "
        + "x" * 2_000_000
        + "\n```\n\n```local {"
        + ", ".join(f"k{i}: {i}" for i in range(20_000))
        + "}\necho\n```\n"
    )
    error = clean(lambda: parse_runbook(text, "runbooks/big.md"))
    assert isinstance(error, InputError)


@pytest.mark.parametrize(
    "name, text, words",
    [
        (
            "nested 10,000 levels",
            "---\nname: x\nformat: 2\ndescription: " + "[" * 10_000 + "]" * 10_000 + "\n---\n",
            "nested far more than",
        ),
        (
            "nested 40 levels",
            "---\nname: x\nformat: 2\ndescription: " + "[" * 40 + "]" * 40 + "\n---\n",
            "nested more than",
        ),
        (
            "a billion laughs",
            "---\nname: x\nformat: 2\ndescription: y\nparameters:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
            + "---\n",
            "expands to more than",
        ),
        (
            "an alias inside itself",
            "---\nname: x\nformat: 2\ndescription: &a [1, *a]\n---\n",
            "refers to a value that contains it",
        ),
    ],
)
def test_hostile_yaml_is_refused_quickly(name: str, text: str, words: str) -> None:
    """Found by fuzzing: these ended in RecursionError, or ran for minutes (the line map and the
    schema check walk every alias again); engine/load/yamlsource.py now refuses them before building data."""
    error = finishes(lambda: parse_runbook(text, "runbooks/x.md"))
    assert isinstance(error, InputError) and words in str(error.problems[0]), error.problems


def test_a_profile_with_aliases_and_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    laughs = "x: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"y{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 8)
    )
    home = make_home(
        tmp_path / "home",
        profiles={
            "dev-generic": (REPO / "clusters" / "dev-generic.yaml").read_text() + laughs,
            "talos-staging": "name: [" * 3000,
        },
    )
    profiles, problems = finishes(lambda: load_profiles(home, load_config(home)))
    assert {p.file for p in problems} == {"clusters/dev-generic.yaml", "clusters/talos-staging.yaml"}
    assert profiles == []


def test_the_depth_limit_leaves_room_for_real_files() -> None:
    nested = (
        "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, MAX_DEPTH - 2)) + "  " * (MAX_DEPTH - 2) + "v: 1\n"
    )
    assert load_yaml(nested, "ok.yaml").data["a"]["k1"]
    for path in [*SHIPPED, *PROFILE_FILES[:2], REPO / "cluster-config.yaml"]:
        assert not re.search(
            r"nested more than|expands to more than",
            str(
                clean(
                    lambda path=path: load_yaml(
                        path.read_text().split("---\n")[1] if path.suffix == ".md" else path.read_text(), str(path)
                    )
                )
            ),
        )
