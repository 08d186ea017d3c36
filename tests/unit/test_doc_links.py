"""The README and docs/*.md link only to files that exist and to headings that exist (GitHub's anchors)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).*?\1")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's slug: the heading's text (links reduced to their text), lower case, every character that is not a
    letter, mark, number, connector (_), space or hyphen dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    kept = "".join(char for char in text if char in " -" or unicodedata.category(char)[0] in "LMN"
                   or unicodedata.category(char) == "Pc")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, repeated headings numbered -1, -2 as GitHub does."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            slug = github_anchor(match.group(2))
            found.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
            counts[slug] = counts.get(slug, 0) + 1
    return found


def links(path: Path) -> list[str]:
    return [target for line in prose_lines(path.read_text(encoding="utf-8"))
            for target in LINK.findall(INLINE_CODE.sub("", line))]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or not linked.is_relative_to(ROOT):
            broken.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target}: no heading with this anchor in {linked.relative_to(ROOT)}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(document):
    assert broken_links(document) == []


def test_the_anchor_rules_follow_github():
    assert github_anchor("Freshness check: `pgdr check`") == "freshness-check-pgdr-check"
    assert github_anchor("`databases[].readwrite_user`") == "databasesreadwrite_user"
    assert github_anchor("Encryption at rest (age)") == "encryption-at-rest-age"
    assert github_anchor("1. Accidental data loss (a table dropped)") == "1-accidental-data-loss-a-table-dropped"


def test_a_broken_link_and_a_broken_anchor_are_found(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Other\n\n## Real heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#real-heading) [gone](missing.md) [bad](other.md#nope) [self](#here)\n"
                    "`[code](ignored.md)`\n\n```\n[fenced](ignored.md)\n```\n## Here\n")
    assert broken_links(page) == ["missing.md: no such file",
                                  "other.md#nope: no heading with this anchor in other.md"]


def test_the_readme_is_at_most_10_kb_and_links_every_document_in_docs():
    readme = ROOT / "README.md"
    assert len(readme.read_bytes()) <= 10240
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(readme)}
    assert [path.name for path in sorted((ROOT / "docs").glob("*.md")) if path.resolve() not in linked] == []
