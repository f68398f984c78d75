"""dvc.yaml lists every Python module a stage runs (issue 12, item 4).

A stage's ``cmd`` names a ``crlm`` sub-command; ``pipeline/cli.py`` dispatches it to
``cmd_<name>``. The modules that function imports, followed transitively through the project's
packages (``pipeline/``, ``features/``, ``models/``; imports inside functions count too), are
the code whose edit can change the stage's outputs: each must be a dependency of the stage,
named as a file or covered by a listed folder. Otherwise ``dvc repro`` says "up to date" after
an edit that changes the outputs. The settings files named in a ``cmd`` are dependencies too.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = ("pipeline", "features", "models")
CLI = "pipeline.cli"


def _module_file(module: str) -> Path | None:
    """The file of a project module (``features.schema``), None for anything else."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(node: ast.AST, package: str) -> set[str]:
    """Project modules named by the import statements under ``node``."""
    found: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Import):
            found.update(alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            if child.level:  # relative import: resolve against the importing package
                parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                base = ".".join([*parts, child.module] if child.module else parts)
            else:
                base = child.module or ""
            found.add(base)
            # `from models import training` names a module, `from models.x import f` a name
            found.update(f"{base}.{alias.name}" for alias in child.names)
    return {m for m in found if _module_file(m) is not None}


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_module_file(module).read_text(encoding="utf-8"))


def _closure(start: set[str], done: frozenset[str] = frozenset()) -> set[str]:
    """Every project module reachable from ``start`` through imports (packages' __init__ too),
    not walking into the modules in ``done``."""
    seen: set[str] = set(done)
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        package = module if _module_file(module).name == "__init__.py" else ".".join(parts[:-1])
        todo.extend(_imported(_tree(module), package) - seen)
    return seen


def command_modules(subcommand: str) -> set[str]:
    """The modules ``crlm <subcommand>`` runs: the CLI's module-level imports, the dispatch
    function ``cmd_<subcommand>`` and everything they import."""
    tree = _tree(CLI)
    function = next(
        (node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == f"cmd_{subcommand}"), None
    )
    assert function is not None, f"pipeline/cli.py has no cmd_{subcommand} for `crlm {subcommand}`"
    top_level = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    # the CLI module itself imports every stage lazily: only the dispatch path is walked
    return _closure(
        _imported(top_level, "pipeline") | _imported(function, "pipeline") | _imported(main, "pipeline"),
        done=frozenset({CLI}),
    )


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def _subcommand(stage: dict) -> str:
    match = re.match(r"\s*crlm\s+([a-z_]+)", stage["cmd"])
    assert match, f"cmd does not run a crlm sub-command: {stage['cmd']!r}"
    return match.group(1)


def _file_of(module: str) -> str:
    return _module_file(module).relative_to(REPO).as_posix()


@pytest.mark.parametrize("name", list(_stages()))
def test_every_module_a_stage_runs_is_a_dependency(name):
    stage = _stages()[name]
    deps = [str(d) for d in stage.get("deps", [])]
    needed = sorted(_file_of(m) for m in command_modules(_subcommand(stage)))
    # empty package markers change nothing a stage computes
    needed = [path for path in needed if not (path.endswith("__init__.py") and not (REPO / path).read_text().strip())]
    missing = [path for path in needed if not _covered(path, deps)]
    assert not missing, f"dvc.yaml stage {name!r} runs these modules but does not list them in deps: {missing}"
    stale = [dep for dep in deps if dep.endswith(".py") and dep not in needed]
    assert not stale, f"dvc.yaml stage {name!r} lists modules it no longer runs (remove them): {stale}"


@pytest.mark.parametrize("name", list(_stages()))
def test_every_settings_file_a_stage_reads_is_a_dependency(name):
    stage = _stages()[name]
    deps = [str(d) for d in stage.get("deps", [])]
    named = sorted(set(re.findall(r"configs/[\w./-]+\.ya?ml", stage["cmd"])))
    missing = [path for path in named if not _covered(path, deps)]
    assert not missing, f"dvc.yaml stage {name!r} reads these settings files but does not list them: {missing}"
    for dep in deps:
        if dep.endswith(".py") or dep.startswith("configs/"):
            assert (REPO / dep).exists(), f"dvc.yaml stage {name!r} depends on {dep}, which does not exist"


def test_the_import_walk_finds_what_a_stage_imports():
    """The walk itself: featurize reaches its own script, a module imported inside a function,
    and modules two imports away."""
    featurize = command_modules("featurize")
    assert {"pipeline.cli", "pipeline.featurize", "features.patient_table", "features.schema"} <= featurize
    assert "features.settings" in featurize  # imported inside main()
    assert "pipeline.train" not in featurize
    assert "models.training" in command_modules("train")
    assert "pipeline.phantoms" in command_modules("synthesize")
