"""Where the project's own files are: the repository root and the default configuration files.

The one owner of ``REPO_ROOT`` (the command line, tracking, predict and report use it). Paths
only: nothing is read or created on import.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"
DEFAULT_WORLD = CONFIGS / "world.yaml"
DEFAULT_LABELS = CONFIGS / "labels.yaml"
DEFAULT_RADIOMICS = CONFIGS / "radiomics.yaml"
DEFAULT_EXTRACTION = CONFIGS / "extraction.yaml"
DEFAULT_ROBUSTNESS = CONFIGS / "robustness.yaml"
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
