"""Every file README.md and docs/*.md link to or cite is in the repository."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Repository paths written in prose or code spans: docs/measurements/x.json, benchmarks/results/y.json,
# figures/z.png (relative to docs/), scripts/check_claims.py, and bare document names (design.md).
CITED = re.compile(
    r"(?<![\w./-])((?:docs/|benchmarks/|scripts/|configs/|src/|tests/|measurements/|figures/)[\w./+-]*[\w]"
    r"|[\w-]+\.md)(?![\w/-])"
)
# Placeholders (RUN_DIR/..., X.json, le_METHOD, *), folders that runs create, not files of the repository.
NOT_FILES = re.compile(r"(?:^|/)[A-Z][A-Z_]*(?:/|$)|(?:^|/)[A-Z]\.|_[A-Z]{2,}|\*|^runs/|/$|\.\.\.")
# Files a run writes into its own folder (docs/design.md, the run folder), named by the docs as such.
RUN_FOLDER_FILES = {"report.md", "figures/misclassified.png"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", _outside_code(text), re.M)}


def _outside_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _resolve(doc: Path, target: str) -> Path | None:
    for base in (doc.parent, REPO, REPO / "docs"):
        candidate = (base / target).resolve()
        if candidate.exists():
            return candidate
    return None


def _rel(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def broken_links(doc: Path) -> list[str]:
    broken = []
    for match in LINK.finditer(doc.read_text(encoding="utf-8")):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    return broken


def missing_paths(doc: Path) -> set[str]:
    missing = set()
    for match in CITED.finditer(doc.read_text(encoding="utf-8")):
        target = match.group(1).rstrip(".")
        if NOT_FILES.search(target) or target in RUN_FOLDER_FILES:
            continue
        if _resolve(doc, target) is None:
            missing.add(target)
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_point_at_files_and_headings_that_exist(doc):
    broken = broken_links(doc)
    assert not broken, f"{_rel(doc)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_cited_path_is_in_the_repository(doc):
    missing = missing_paths(doc)
    assert not missing, f"{_rel(doc)} cites files the repository does not have: {sorted(missing)}"


def test_a_missing_file_a_wrong_heading_and_an_absent_citation_are_found(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n[ok](doc.md#title) [gone](nothing.md) [bad anchor](doc.md#no-such-heading)\n"
        "Numbers: docs/measurements/reproduce5_metrics.json and docs/measurements/never_kept.json; ANCHORS.md.\n",
        encoding="utf-8",
    )
    assert broken_links(doc) == [
        "nothing.md: no such file", "doc.md#no-such-heading: no heading #no-such-heading in doc.md"]
    assert missing_paths(doc) == {"docs/measurements/never_kept.json", "ANCHORS.md", "nothing.md"}


def test_the_path_pattern_sees_what_the_docs_cite():
    text = "see docs/measurements/a.json, (figures/b.png) and `benchmarks/results/c.json`; ANCHORS.md."
    assert [m.group(1).rstrip(".") for m in CITED.finditer(text)] == [
        "docs/measurements/a.json", "figures/b.png", "benchmarks/results/c.json", "ANCHORS.md"]
