"""The documentation holds together: every relative link resolves, the README stays a short front door without lab
history, and every `longlora-mini` command it shows is one the command line has."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "notebooks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def relative_links(text: str) -> list[str]:
    """The targets of `[text](path)` and `![alt](path)`, without web, mail and same-page links or #anchors."""
    targets = [t for t in LINK.findall(text) if not re.match(r"(https?://|mailto:|#)", t)]
    return [t.split("#", 1)[0] for t in targets]


def test_the_link_finder_finds_links_and_skips_the_web():
    text = '[a](docs/x.md#part) ![b](../y.png "title") [c](https://e.org) [d](#top) [e](mailto:m@e.org)'
    assert relative_links(text) == ["docs/x.md", "../y.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    resolved = {t: (page.parent / t).resolve() for t in relative_links(page.read_text())}
    broken = [t for t, path in resolved.items() if not (path.exists() and path.is_relative_to(ROOT))]
    assert broken == [], f"{page.relative_to(ROOT)} links to what the repository lacks: {broken}"


def test_the_readme_is_a_short_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 280, f"README.md has {len(lines)} lines: move reference material into docs/"
    long = [f"{i}: {len(line)}" for i, line in enumerate(lines, 1) if len(line) > 120]
    assert long == [], f"README.md lines over 120 characters: {long}"


@pytest.mark.parametrize("pattern, what", [(r"\bP\d{1,2}\b", "a probe id"), (r"\be\d{2,3}\b", "an extension probe id"),
                                           (r"20\d\d-\d\d", "a date")])
def test_the_readme_carries_no_lab_history(pattern, what):
    """Probe ids and dates belong in docs/ and the lab notebook (docs/lab/notebook.md)."""
    lines = README.read_text().splitlines()
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(lines, 1) if re.search(pattern, line)]
    assert hits == [], f"{what} in README.md:\n" + "\n".join(hits)


COMMAND = re.compile(r"(?<![\w`-])longlora-mini((?:[ \t]+[a-z][\w-]*)+)")  # the command and the words after it


def code_blocks(text: str) -> str:
    return "\n".join(block.replace("\\\n", " ") for block in CODE_BLOCK.findall(text))  # continuations joined


def readme_command_words() -> list[list[str]]:
    """The words after each `longlora-mini` in the README's code blocks, up to the first path, flag or value."""
    return [found.split() for found in COMMAND.findall(code_blocks(README.read_text()))]


def readme_command_lines() -> list[list[str]]:
    """The README's `longlora-mini` command lines in full, as arguments (comments cut off)."""
    lines = [line.strip() for line in code_blocks(README.read_text()).splitlines()]
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith("longlora-mini ")]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_readme_command_names_a_real_subcommand():
    from longlora_mini.cli import build_parser

    commands = readme_command_words()
    assert ["demo"] in commands and ["eval", "ppl"] in commands  # the finder sees them
    for command in commands:
        parser, words = build_parser(), list(command)
        while (choices := subcommands(parser)) and words:  # e.g. `eval ppl`: one level per word
            assert words[0] in set(choices), f"`longlora-mini {' '.join(command)}`: no subcommand {words[0]!r}"
            parser = choices[words.pop(0)]


def test_every_readme_command_parses_with_its_flags():
    from longlora_mini.cli import build_parser

    commands = readme_command_lines()
    assert len(commands) >= 10 and ["demo"] in commands
    for command in commands:
        try:
            build_parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"`longlora-mini {' '.join(command)}` does not parse (argparse's message above)")
