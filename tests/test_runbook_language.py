"""The runbook language's targets (issue 16), measured on the shipped runbooks as bench/expressions.py
measures them: runbooks an operator can read."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

_SPEC = importlib.util.spec_from_file_location("expressions", REPO / "bench" / "expressions.py")
assert _SPEC and _SPEC.loader
expressions = importlib.util.module_from_spec(_SPEC)
sys.modules["expressions"] = expressions  # its dataclasses look their module up
_SPEC.loader.exec_module(expressions)

SHIPPED = sorted(p for p in (REPO / "runbooks").glob("*.md"))
#: The nine largest runbooks' expression characters before the language features (bench/expressions.py).
BASELINE_NINE = 33_935


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_no_attribute_mapping_is_longer_than_300_characters(path: Path) -> None:
    found = expressions.measure(path)
    assert found.longest[0] <= 300, f"{path.name}:{found.longest[1]}: a mapping of {found.longest[0]} characters"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_no_when_is_a_dry_run_workaround(path: Path) -> None:
    assert not expressions.measure(path).or_true, f"{path.name}: 'or true' in a when"


def test_the_nine_largest_carry_at_most_half_their_expressions() -> None:
    total = sum(expressions.measure(REPO / "runbooks" / f"{name}.md").total for name in expressions.NINE)
    assert total <= BASELINE_NINE // 2, f"{total} expression characters in the nine (target {BASELINE_NINE // 2})"


def test_tag_membership_is_defined_once_in_the_engine() -> None:
    """Which VMs belong to a profile is ``profile.members`` (or ``tagged``), never spelled out again."""
    spelled = re.compile(r"groupby\('vmid'\)|splits\(\"\[;, \]\+\"\)|selectattr\('tag', 'in'")
    offenders = [p.name for p in SHIPPED if spelled.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
