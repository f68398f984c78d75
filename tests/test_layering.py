"""The layering (issue 12 item 2): read from the import statements of every module, including
imports inside functions.

``pipeline/<stage>.py`` imports ``features/``, ``models/`` and the non-stage helpers of
``pipeline/`` (settings, execution, tracking, paths, inputs, world, phantoms, synthesis, cli),
never another stage; ``features/`` and ``models/`` never import ``pipeline/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("features", "models", "pipeline")
# One module per stage of dvc.yaml (cohort is `crlm synthesize`).
STAGES = ("cohort", "validate", "extract", "featurize", "train", "evaluate", "explain", "report", "predict")


def imported_modules(path: Path) -> set[str]:
    """Every project module ``path`` imports (``from pipeline import tracking`` -> ``pipeline.tracking``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def module_names(root: Path = REPO) -> dict[str, Path]:
    return {
        f"{package}.{path.stem}": path
        for package in PACKAGES
        for path in sorted((root / package).glob("*.py"))
        if path.stem != "__init__"
    }


def forbidden_edges(root: Path = REPO) -> list[tuple[str, str]]:
    """(importer, imported) pairs that break the layering, sorted."""
    modules = module_names(root)
    stages = {f"pipeline.{stage}" for stage in STAGES}
    edges = set()
    for name, path in modules.items():
        for target in imported_modules(path):
            target = next((m for m in (target, target.rsplit(".", 1)[0]) if m in modules), None)
            if target is None or target == name:
                continue
            if name.split(".")[0] in ("features", "models") and target.startswith("pipeline."):
                edges.add((name, target))  # a library module reaching up
            elif name in stages and target in stages:
                edges.add((name, target))  # a stage importing another stage
    return sorted(edges)


def test_no_stage_imports_another_stage_and_no_library_imports_pipeline():
    edges = forbidden_edges()
    assert edges == [], "\n".join(f"{a} imports {b}" for a, b in edges)


def test_the_layering_check_sees_imports_inside_functions(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "features" / "lib.py").write_text("def f():\n    from pipeline import execution\n")
    (tmp_path / "pipeline" / "execution.py").write_text("")
    (tmp_path / "pipeline" / "predict.py").write_text("from pipeline.train import BEST_FILE\n")
    (tmp_path / "pipeline" / "train.py").write_text("BEST_FILE = 'best.json'\n")
    assert forbidden_edges(tmp_path) == [("features.lib", "pipeline.execution"), ("pipeline.predict", "pipeline.train")]


def test_library_code_does_not_read_the_dask_scheduler_variable():
    for package in ("features", "models"):
        for path in sorted((REPO / package).glob("*.py")):
            assert "DASK_SCHEDULER_ADDRESS" not in path.read_text(encoding="utf-8"), path
