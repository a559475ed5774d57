"""The README and docs/ checked against the code without building anything: the README stays a
front page with the two commands CI runs, its links (which mkdocs does not see) lead to pages and
headings that exist, and every `receiver` command line the README or a page shows parses.

mkdocs checks the links between the pages of docs/ and the nav: tests/system/test_docs.py.
"""

import itertools
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from markdown.extensions.toc import slugify

from receiver.cli import cli

from support import ROOT

README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
# The README's two commands, word for word: .ci/run runs the second.
RUN_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/receiver serve"
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest"

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def without_code(text):
    """The text with fenced blocks and inline code removed (links there are not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchors(page: Path):
    """The ids Python-Markdown's toc gives the page's headings (GitHub's are the same for these)."""
    ids, fenced = set(), False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+?)\s*#*$", line)):
            ids.add(slugify(heading.group(1).replace("`", ""), "-"))
    return ids


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) < 250, "README.md is the front page: the rest goes to docs/"
    assert f"```sh\n{RUN_COMMAND}\n```" in text
    assert f"```sh\n{TEST_COMMAND}\n```" in text
    assert "## What it answers, and why" in text


def test_ci_runs_the_readme_test_command():
    # CI's copy only adds pip's -q.
    ci = (ROOT / ".ci" / "run").read_text().replace("pip install -q -e", "pip install -e")
    assert TEST_COMMAND in ci


@pytest.mark.parametrize("document", [README, CHANGELOG], ids=lambda p: p.name)
def test_links_outside_docs_lead_somewhere(document):
    links = LINK.findall(without_code(document.read_text()))
    assert links or document == CHANGELOG
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f"{document.name}: {link} leads nowhere"
        if anchor:
            assert anchor in anchors(path), f"{document.name}: {link}: no such heading"


def test_every_page_is_reachable_from_the_readme():
    """Each page is linked from the README or from a page linked from it."""
    seen, todo = set(), [README]
    while todo:
        document = todo.pop()
        for link in LINK.findall(without_code(document.read_text())):
            target = link.partition("#")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            path = (document.parent / target).resolve()
            if path.suffix == ".md" and path.exists() and path not in seen:
                seen.add(path)
                todo.append(path)
    assert {page.resolve() for page in PAGES} <= seen


def shown_command_lines():
    """(where, line, inline) of every `receiver ...` command line of the README and docs/: in
    code blocks, lines (or `&&` steps) that start with `receiver` after VAR=value assignments
    or a path to the program, continuation lines joined; in the text, code spans that start
    with `receiver` and a command (inline: they may name an option without its value)."""
    found = []
    for document in [README, *PAGES]:
        lines, fenced = document.read_text().splitlines(), False
        joined = []
        for number, line in enumerate(lines, start=1):
            if FENCE.match(line):
                fenced = not fenced
                continue
            if not fenced:
                for span in re.findall(r"`receiver ([a-z][^`]*)`", line):
                    found.append((f"{document.relative_to(ROOT)}:{number}", span, True))
                continue
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
            else:
                joined.append((number, line))
        for number, line in joined:
            for step in line.split("&&"):
                step = re.sub(r"^\s*(?:ExecStart=)?(?:[A-Z_]+=\S*\s+)*", "", step)
                match = re.match(r"(?:\S*/bin/)?receiver\s+(\S.*)$", step)
                if match:
                    found.append((f"{document.relative_to(ROOT)}:{number}", match.group(1), False))
    return found


def command_arguments(rest):
    """The arguments of a shown command line, as a shell would pass them, synopsis marks
    (`[--json]`, `body|event`, `…`) read as one example, and comments and redirections cut."""
    # $(...) substitutions, nested ones included, are one word of the shell's.
    while re.search(r"\$\([^()]*\)", rest):
        rest = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", rest)
    # A quoted '…' is a value left out (a password); a bare … repeats what is before it.
    rest = rest.replace("'…'", "VALUE")
    words = []
    for word in shlex.split(rest, comments=True):
        if word in {">", ">>", "|", "&&", ";", "2>&1"} or word.startswith(">"):
            break
        if word == "…":
            continue
        word = word.strip("[]")
        if "|" in word and not word.startswith("-"):
            word = word.split("|")[0]
        words.append(word)
    return words


COMMAND_LINES = shown_command_lines()


def test_the_pages_show_command_lines():
    shown = {rest.split()[0] for _, rest, _ in COMMAND_LINES}
    # The README's first ten minutes and the pages show every command group at least once.
    assert set(cli.commands) <= shown, set(cli.commands) - shown


@pytest.mark.parametrize(
    ("where", "rest", "inline"), COMMAND_LINES, ids=[w for w, *_ in COMMAND_LINES]
)
def test_every_shown_command_line_parses(where, rest, inline):
    arguments = command_arguments(rest)
    if inline:
        # A name in the text (`receiver prune --older-than`): its command and subcommands.
        arguments = list(itertools.takewhile(lambda word: not word.startswith("-"), arguments))
    assert arguments[0] in cli.commands, f"{where}: no command `receiver {arguments[0]}`"
    # --help after the arguments: click parses them (an unknown option or command fails, exit
    # status 2) and runs nothing.
    result = CliRunner().invoke(cli, [*arguments, "--help"])
    assert result.exit_code == 0, f"{where}: receiver {' '.join(arguments)}: {result.output}"
