"""params.yaml: every block validated on read (docs/settings.md).

The generic machinery (strict pydantic validation, did-you-mean, error messages) lives in
`features.settings`, below ``pipeline/``; each block's class lives next to what it configures
(`models.training.TrainSettings`, `models.evaluation.EvaluateSettings`,
`models.explain.ExplainSettings`) or here (the blocks only ``dvc.yaml`` reads). Entry points
call `load_params` and pass the typed blocks down; nothing reads params.yaml with ``.get``.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

from features.settings import SettingsError, build, check_jobs, load, load_yaml, nearest, settings_class
from models.evaluation import EvaluateSettings
from models.explain import ExplainSettings
from models.training import TrainSettings

__all__ = ["SettingsError", "build", "load", "load_yaml", "nearest", "settings_class", "Params", "load_params"]


@settings_class
class CohortParams:
    """One synthetic cohort of ``synthesize`` (read by dvc.yaml's ``crlm synthesize`` command)."""

    n: int
    seed: int
    site: str

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n: {self.n}; expected a positive number of patients")


@settings_class
class SynthesizeParams:
    """The ``synthesize`` block: parallel ``jobs`` (-1: all cores) and the two cohorts."""

    jobs: int
    train: CohortParams
    external: CohortParams

    def __post_init__(self) -> None:
        check_jobs(self.jobs)


@settings_class
class ExtractParams:
    """The ``extract`` block: parallel ``jobs`` of radiomics extraction (-1: all cores)."""

    jobs: int

    def __post_init__(self) -> None:
        check_jobs(self.jobs)


@settings_class
class RobustnessParams:
    """The ``robustness`` block (``crlm perturb``, docs/robustness.md): ``patients`` training
    patients drawn at random (``seed``) get ``perturbations`` perturbations of the ``icc`` chain;
    ``site_scanners`` simulated other scanners (the ``site`` chain, each with its own drawn
    magnitudes) image every patient of the table (only ``crlm choose-robustness`` reads them;
    0: none); ``jobs`` parallel workers."""

    patients: int
    perturbations: int
    seed: int
    jobs: int
    site_scanners: int = 0
    site_perturbation: bool | None = None  # replaced by site_scanners (2026-12-02): read only to say so

    def __post_init__(self) -> None:
        check_jobs(self.jobs)
        if self.site_perturbation is not None:
            raise ValueError(
                "site_perturbation was replaced by site_scanners (a number of simulated scanners): write "
                "site_scanners: 3 for what crlm choose-robustness needs, or site_scanners: 0 (docs/robustness.md)"
            )
        if self.patients < 0:
            raise ValueError(f"patients: {self.patients}; expected a number of patients (0: no icc chain)")
        if self.perturbations < 2:
            raise ValueError(f"perturbations: {self.perturbations}; an ICC needs at least 2 per patient")
        if self.site_scanners < 0:
            raise ValueError(f"site_scanners: {self.site_scanners}; expected a number of simulated scanners (0: none)")


@settings_class
class Params:
    """A params.yaml. Each block may be absent from a file; a stage asks for the ones it reads
    (`Params.block`), so a params file of one's own needs only those (docs/own_cohort_training.md)."""

    synthesize: SynthesizeParams | None = None
    extract: ExtractParams | None = None
    robustness: RobustnessParams | None = None
    train: TrainSettings | None = None
    evaluate: EvaluateSettings | None = None
    explain: ExplainSettings = field(default_factory=ExplainSettings)


def load_params(path: str | Path, *blocks: str) -> Params:
    """Read and validate params file ``path``; each of ``blocks`` must be present.

    Every block of the file is validated, listed or not (a typo anywhere is an error). The
    ``explain`` block may be left out: `ExplainSettings`' defaults apply.
    """
    params = build(Params, load_yaml(path) or {}, where=str(path))
    missing = [name for name in blocks if getattr(params, name) is None]
    if missing:
        raise SettingsError(
            f"{path}: no {', '.join(repr(m) for m in missing)} block; copy it from the "
            f"project's params.yaml (docs/settings.md)"
        )
    return params


def as_dict(block: Any) -> dict[str, Any]:
    """A validated block as plain data (lists, not tuples), e.g. to log it to MLflow."""
    import pydantic

    return pydantic.TypeAdapter(type(block)).dump_python(block, mode="json")
