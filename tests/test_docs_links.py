"""The README and docs/ hold together: every relative link and #anchor resolves to a file and a
heading (by GitHub's anchor rules), every runbook link in deploy/ too, and the README stays short."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
DEPLOY_LINK = re.compile(r"(?:file:///opt/cachetail/)?\b(docs/[\w./-]+\.md(?:#[\w-]+)?)")
README_MAX_LINES = 420


def prose(text: str) -> Iterator[str]:
    """The lines outside fenced code blocks, where links and headings are markdown."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose(page.read_text()):
        if match := re.match(r"#{1,6} (.+?)#*$", line):
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken(page: Path, target: str) -> str | None:
    """Why a relative link from page does not resolve, or None when it does."""
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return f"{page.name}: {target}: no file {path}"
    if anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
        return f"{page.name}: {target}: no heading #{anchor} in {dest.name}"
    return None


def page_links(page: Path) -> Iterator[str]:
    for line in prose(page.read_text()):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"[a-z]+:", target):
                yield target


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {t.partition("#")[0] for t in page_links(ROOT / "README.md")}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    targets = list(page_links(page))
    assert targets or page.name != "README.md"
    assert [why for t in targets if (why := broken(page, t))] == []


def test_deploy_runbook_and_documentation_links_resolve() -> None:
    found = []
    for path in sorted((ROOT / "deploy").rglob("*")):
        if path.is_file() and path.suffix in {".yml", ".yaml", ".json", ".service", ".py"}:
            found += [(path, t) for t in DEPLOY_LINK.findall(path.read_text())]
    runbooks = [t for _, t in found if t.startswith("docs/runbook.md#")]
    assert len(runbooks) >= 15  # one per alert in alerts.yml, more in alerts_test.yml
    assert [f"{p.relative_to(ROOT)}: {why}" for p, t in found if (why := broken(ROOT / "README.md", t))] == []


def test_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < README_MAX_LINES


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## Reads — from replicas\n\n```\n## not a heading\n```\n")
    page = tmp_path / "b.md"
    assert anchors(tmp_path / "a.md") == {"top", "reads--from-replicas"}
    assert broken(page, "a.md#reads--from-replicas") is None
    assert broken(page, "a.md#not-a-heading") is not None
    assert broken(page, "a.md#reads-from-replicas") is not None
    assert broken(page, "missing.md") is not None


@pytest.mark.parametrize(("heading", "anchor"), [
    ("MySQL 8 and RDS for MySQL", "mysql-8-and-rds-for-mysql"),
    ("`cachetail check`", "cachetail-check"),
    ("Import the dashboard (Grafana)", "import-the-dashboard-grafana"),
    ("Where this departs from the design notes, and why", "where-this-departs-from-the-design-notes-and-why"),
    ("decode_split", "decode_split"),
])
def test_slug_follows_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
