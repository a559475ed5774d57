"""The documentation site built as `make docs` builds it: `mkdocs build --strict` of mkdocs.yml,
in a process of its own, into a temporary folder. Strict with mkdocs.yml's `validation:`, any
warning fails it: a link to a page or a heading that does not exist, a page of docs/ missing
from the nav, a nav entry without its page.

The README's own links, and the command lines the pages show: tests/unit/test_docs.py.
"""

import shutil
import subprocess
import sys

import yaml

from support import ROOT

MKDOCS_YML = ROOT / "mkdocs.yml"


def mkdocs_build(site_dir, config=MKDOCS_YML):
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)]
    return subprocess.run(
        [*command, "--site-dir", str(site_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def nav_pages(entries):
    for entry in entries:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            if isinstance(value, list):
                yield from nav_pages(value)
            else:
                yield value


def test_the_site_builds_strictly(tmp_path):
    result = mkdocs_build(tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    config = yaml.safe_load(MKDOCS_YML.read_text())
    assert config["strict"] is True and config["docs_dir"] == "docs"
    for page in nav_pages(config["nav"]):
        html = page.removesuffix(".md").removesuffix("index").strip("/")
        assert (tmp_path / "site" / html / "index.html").exists(), page


def test_a_broken_anchor_or_a_page_left_out_fails_the_build(tmp_path):
    """The same configuration over a copy of docs/ with one defect each: the build refuses."""
    for defect in ("anchor", "omitted"):
        copy = tmp_path / defect
        shutil.copytree(ROOT / "docs", copy / "docs")  # the changelog's link is copied as its file
        shutil.copy(MKDOCS_YML, copy / "mkdocs.yml")
        if defect == "anchor":
            with open(copy / "docs" / "index.md", "a") as page:
                page.write("\n[nowhere](answers.md#no-such-heading)\n")
        else:
            (copy / "docs" / "stray.md").write_text("# Not in the nav\n")
        result = mkdocs_build(copy / "site", config=copy / "mkdocs.yml")
        assert result.returncode != 0, (defect, result.stderr)
        assert "no-such-heading" in result.stderr or "stray.md" in result.stderr, result.stderr
