"""The repository documents itself: every file a docstring, config or doc points to is in it.

Docstrings cite the design as ``docs/design.md section n``; a citation of a file that is not in the
repository (the old ``DESIGN.md n``, anything under ``../shared``) is a dangling reference.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".j2", ".html"}


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / p for p in out if Path(p).suffix in TEXT_SUFFIXES and (ROOT / p).is_file()]


def _design_sections() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    return set(re.findall(r"^## (\d+)\.", text, flags=re.M))


def test_no_reference_to_files_outside_the_repository():
    this = Path(__file__).resolve()
    bad = []
    for path in _tracked_text_files():
        if path == this:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"(?<![\w/])DESIGN(\.md)?\b", line) or "../shared" in line:
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "dangling references:\n" + "\n".join(bad)


def test_design_citations_name_existing_sections():
    sections = _design_sections()
    assert {"1", "3", "5", "8"} <= sections
    bad = []
    for path in _tracked_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for sec in re.findall(r"docs/design\.md section (\d+)", line):
                if sec not in sections:
                    bad.append(f"{path.relative_to(ROOT)}:{n}: section {sec}")
    assert not bad, "citations of missing sections:\n" + "\n".join(bad)


def test_cited_docs_exist():
    missing = []
    for path in _tracked_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for ref in re.findall(r"\bdocs/[\w./-]+\.(?:md|py|png)\b", line):
                if not (ROOT / ref).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{n}: {ref}")
    assert not missing, "references to docs that do not exist:\n" + "\n".join(missing)
