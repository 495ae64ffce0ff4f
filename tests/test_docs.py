"""Every file the documentation names exists: no dead reference for someone who clones the repo.

Read: the docstrings and comments of every Python file, the YAML task cards and recipes, and every
markdown page (README, CHANGELOG, ``docs/``, the READMEs of benches and fixtures). Checked:

- a repo-relative path (its first part is a top-level entry of the repo: ``agora/...``,
  ``docs/...``, ``README.md``) ending in .md, .py, .yaml, .json, .jsonl, .csv, .tsv or .png names an
  existing file;
- a markdown link (``[text](target)``, not a URL) resolves from the page's folder, and its
  ``#anchor``, if any, is a heading of the target page;
- a section cited as ``docs/<page>.md, "<heading>"`` (one or more quoted headings) is a heading of
  that page.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("agora", "benches", "tests", "tasks", "recipes", "docs")
"""Folders read, besides the markdown files at the root."""
SKIP = {"__pycache__", ".venv", "build", "dist", "runs", "lightning_logs", ".pytest_cache", "fixtures"}
"""Folders never read (fixtures hold benchmark-shaped data, not documentation; their READMEs are read)."""
RUN_DIR = {"agora/generated.jsonl", "benches/results/agora-best.yaml"}
"""Names of a run dir's files that look repo-relative (a run dir has an ``agora/`` folder too), and the
file protocol v3's exploration writes when it has chosen ``agora-best`` (named before it exists)."""

PATH = re.compile(r"(?<![\w./<{-])((?:\.?[\w-]+/)*[\w.-]+\.(?:md|py|yaml|json|jsonl|csv|tsv|png))\b")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
CITED = re.compile(r"(docs/[\w-]+\.md),?\s*\(?((?:\"[^\"]+\"(?:,\s*)?)+)")


def _texts(path: Path) -> str:
    """The prose of one file: a Python file's docstrings and comments, any other file whole."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    parts = [node.value.value for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Expr)
             and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    parts += [tok.string for tok in tokens if tok.type == tokenize.COMMENT]
    return "\n".join(parts)


def _files(root: Path) -> list[Path]:
    out = sorted(root.glob("*.md"))
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root).parts
            if path.is_file() and not SKIP & set(rel[:-1]) and path.suffix in (".py", ".md", ".yaml"):
                out.append(path)
    out += sorted(p for p in (root / "tests" / "fixtures").rglob("README.md"))
    return out


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(page: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in page.read_text(encoding="utf-8").splitlines()
            if re.match(r"#{1,6} ", line)}


def dangling(root: Path) -> list[str]:
    """Every reference under ``root`` to a file, link target or section that does not exist."""
    top = {p.name for p in root.iterdir()}
    problems = []
    for path in _files(root):
        where = path.relative_to(root)
        text = _texts(path)
        for name in PATH.findall(LINK.sub("", text) if path.suffix == ".md" else text):
            if name.split("/")[0] in top and name not in RUN_DIR and not (root / name).exists():
                problems.append(f"{where}: names {name}, which is not in the repo")
        if path.suffix == ".md":
            for target in LINK.findall(text):
                if re.match(r"[a-z]+:", target):
                    continue
                file, _, anchor = target.partition("#")
                page = (path.parent / file).resolve() if file else path
                if not page.exists():
                    problems.append(f"{where}: links to {target}, which is not in the repo")
                elif anchor and page.suffix == ".md" and anchor not in {slug(h) for h in headings(page)}:
                    problems.append(f"{where}: links to {target}, but {file or where} has no such heading")
        for page, titles in CITED.findall(text):
            if not (root / page).exists():
                continue  # reported above as a missing file
            known = headings(root / page)
            for title in re.findall(r"\"([^\"]+)\"", titles):
                title = " ".join(title.split())
                if title not in known:
                    problems.append(f"{where}: cites {page}, \"{title}\", which is not a heading of {page}")
    return problems


def test_every_file_and_section_the_docs_name_exists():
    assert dangling(ROOT) == []


def test_the_docs_pages_exist_and_nothing_cites_the_design_notes_outside_the_repo():
    assert {"README.md", "method.md", "submissions.md"} <= {p.name for p in (ROOT / "docs").iterdir()}
    assert "Adding a generator" in headings(ROOT / "docs" / "method.md")
    for path in _files(ROOT):
        text = _texts(path)
        assert not re.search(r"\bAGORA\.md|\bSUBMISSIONS\.md|design notes", text), path


def test_a_dangling_name_link_or_section_is_flagged(tmp_path):
    (tmp_path / "agora").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("See [the method](docs/method.md#the-loop) and [gone](docs/gone.md).\n")
    (tmp_path / "docs" / "method.md").write_text("# Method\n\n## The loop\n\nText.\n")
    (tmp_path / "agora" / "x.py").write_text(
        '"""Reads agora/x.py and agora/y.py (docs/method.md, "The loop", "Pruning")."""\n'
        "# see docs/method.md#nothing and docs/other.md\n"
        "VALUE = 'agora/in_a_plain_string.py'\n")
    assert sorted(dangling(tmp_path)) == [
        "README.md: links to docs/gone.md, which is not in the repo",
        "agora/x.py: cites docs/method.md, \"Pruning\", which is not a heading of docs/method.md",
        "agora/x.py: names agora/y.py, which is not in the repo",
        "agora/x.py: names docs/other.md, which is not in the repo",
    ]
    (tmp_path / "README.md").write_text("[loop](docs/method.md#no-such-heading)\n")
    (tmp_path / "agora" / "x.py").unlink()
    assert dangling(tmp_path) == [
        "README.md: links to docs/method.md#no-such-heading, but docs/method.md has no such heading"]
