"""Every name a document gives exists: the tests it cites and the methods it points to.

Docs that name a moved or renamed function send a newcomer looking for code that is not
there; this keeps the pointers in `docs/` and the README true as the code moves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "benchmarks.md")
SOURCES = {p: p.read_text(encoding="utf-8") for p in (ROOT / "src" / "bcmanager").rglob("*.py")}

TEST_REF = re.compile(r"`((?:e2e/|chaos/)?test_[a-z_0-9]+\.py)::([A-Za-z_0-9]+)")
METHOD_REF = re.compile(r"`(?:bcmanager\.[a-z_.]*\.)?([A-Z][A-Za-z0-9]+)\.(_?[a-z][a-z_0-9]*)`")


def cited_tests(text: str) -> list[tuple[str, str]]:
    return TEST_REF.findall(text)


def cited_methods(text: str) -> list[tuple[str, str]]:
    return METHOD_REF.findall(text)


def defines(source: str, name: str) -> bool:
    """Whether `source` defines `name`: a function, a class, an attribute or an assignment."""
    pattern = rf"^\s*(?:async\s+)?def {name}\b|^\s*class {name}\b|^\s*(?:self\.)?{name}\s*[:=]"
    return re.search(pattern, source, re.M) is not None


@pytest.mark.parametrize("doc", [*DOCS, ROOT / "README.md"], ids=lambda p: p.name)
def test_every_test_a_document_cites_exists(doc: Path) -> None:
    missing = []
    for path, name in cited_tests(doc.read_text(encoding="utf-8")):
        test_file = ROOT / "tests" / path
        if not test_file.exists() or not defines(test_file.read_text(encoding="utf-8"), name):
            missing.append(f"{path}::{name}")
    assert not missing, f"{doc.name} cites tests that do not exist: {missing}"


@pytest.mark.parametrize("doc", [*DOCS, ROOT / "README.md"], ids=lambda p: p.name)
def test_every_method_a_document_names_exists_on_its_class(doc: Path) -> None:
    missing = []
    for cls, member in cited_methods(doc.read_text(encoding="utf-8")):
        homes = [src for src in SOURCES.values() if re.search(rf"^class {cls}\b", src, re.M)]
        if homes and not any(defines(src, member) for src in homes):
            missing.append(f"{cls}.{member}")
    assert not missing, f"{doc.name} names members that do not exist: {missing}"


def test_the_checks_see_a_stale_name() -> None:
    """The checks above find what they look for: a moved method and a renamed test."""
    text = "`Manager._reconcile` and `test_manager.py::test_that_was_renamed`"
    assert cited_methods(text) == [("Manager", "_reconcile")]
    manager = next(src for p, src in SOURCES.items() if p.name == "manager.py")
    assert not defines(manager, "_reconcile") and defines(manager, "claim")
    assert cited_tests(text) == [("test_manager.py", "test_that_was_renamed")]
