"""The README and docs/: every relative link resolves, every command of the CLI is in
the README's table, and every complete spec shown validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sweeps import SpecError, parse_spec
from sweeps.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def relative_links(text: str) -> list[str]:
    """Link targets that are not URLs or mailto: addresses, code blocks left out."""
    prose = FENCE.sub("", text)
    return [t for t in LINK.findall(prose) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces
    to hyphens, a repeated heading numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def anchor_exists(file: Path, anchor: str) -> bool:
    """Whether `anchor` (empty: none asked) is a heading's anchor of the markdown `file`;
    anchors into other kinds of file are not checked."""
    return not anchor or file.suffix != ".md" or anchor in anchors(file.read_text())


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    for name in ("specs.md", "results.md", "plugins.md", "troubleshooting.md"):
        assert name in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file(page):
    broken = []
    for target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or not anchor_exists(file, anchor):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_the_link_checker_sees_a_broken_link_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n[ok](#a-title) [gone](missing.md) [bad](#nowhere)\n")
    targets = relative_links(page.read_text())
    assert targets == ["#a-title", "missing.md", "#nowhere"]
    assert anchors(page.read_text()) == {"a-title"}
    assert anchors("## The paper's code\n## Logging\n## Logging\n") == {
        "the-papers-code",
        "logging",
        "logging-1",
    }


def test_every_command_is_in_the_readme_table(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    commands = re.search(r"\{([a-z,]+)\}", usage).group(1).split(",")
    assert "run" in commands and "bench" in commands
    readme = (ROOT / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `warmup-sweep ")]
    listed = {line.split()[2].rstrip("`") for line in table}
    assert listed == set(commands)


def complete_specs() -> list[tuple[str, str]]:
    """(page, YAML text) of every yaml block that is a whole spec (has name and base)."""
    found = []
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            if lang == "yaml":
                data = yaml.safe_load(body)
                if isinstance(data, dict) and {"name", "base"} <= set(data):
                    found.append((page.name, body))
    return found


def test_there_are_specs_to_check():
    assert complete_specs()


@pytest.mark.parametrize("page, text", complete_specs(), ids=lambda v: v[:20])
def test_every_spec_shown_validates(page, text):
    try:
        parse_spec(yaml.safe_load(text), page)
    except SpecError as exc:
        pytest.fail(str(exc))
