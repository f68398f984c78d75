"""``crlm perturb``: the training cohort re-extracted under image perturbations, and the ICC(1,1)
of every imaging feature across them (issue 13; docs/robustness.md). Thin stage script.

Writes ``perturbed.parquet`` (one row per patient and perturbation: ``patient_id``,
``perturbation``, then the columns of ``features.parquet``) and ``icc.csv`` (one row per imaging
feature, `features.robustness.ICC_COLUMNS`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from features import extraction, patient_table, perturbation, robustness, settings
from features.schema import ICC_CHAIN, OK, PATIENT_ID, PERTURBATION, SITE_CHAIN, STATUS
from models.robustness import imaging_columns
from pipeline.execution import map_cases
from pipeline.inputs import case_options, read_and_validate
from pipeline.settings import load_params


def choose_icc_patients(features: pd.DataFrame, count: int, seed: int) -> list[str]:
    """``count`` patients drawn at random (``seed``) among those with status ok, in table order."""
    ok = features.loc[features[STATUS] == OK, PATIENT_ID].astype(str).tolist()
    if count >= len(ok):
        return ok
    chosen = set(np.random.default_rng(seed).choice(len(ok), size=count, replace=False).tolist())
    return [pid for i, pid in enumerate(ok) if i in chosen]


def run_perturb(
    cohort: Path,
    features_path: Path,
    out: Path,
    icc_out: Path,
    params_path: Path,
    robustness_config: Path,
    radiomics_params: Path,
    config: Path,
    labels_path: Path,
    jobs: int | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    scheduler: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extract the perturbed cases, aggregate them per patient as ``crlm featurize`` does, write
    ``out`` and ``icc_out``; return both tables."""
    block = load_params(params_path, "robustness").robustness
    chains = settings.load(perturbation.RobustnessConfig, robustness_config)
    options, cfg = case_options(radiomics_params, config, labels_path)
    if not features_path.is_file():
        raise FileNotFoundError(f"{features_path} not found; run crlm featurize on {cohort} first")
    features = pd.read_parquet(features_path)
    features[PATIENT_ID] = features[PATIENT_ID].astype(str)
    _, validation = read_and_validate(cohort)
    if validation.fatal:
        raise ValueError(f"{cohort}: cannot build features:\n{validation.format()}")
    clinical = validation.table.reset_index(drop=True)
    status = validation.status.reset_index(drop=True)
    by_id = {str(pid): i for i, pid in enumerate(clinical[PATIENT_ID].astype(str))}
    cases = {case.patient_id: case for case in extraction.read_manifest(cohort)}
    missing = sorted(set(features[PATIENT_ID]) - set(cases))
    if missing:
        raise ValueError(
            f"{features_path}: patient(s) {missing[:5]} are not in {cohort}; run crlm featurize on this cohort again"
        )
    all_ids = features[PATIENT_ID].tolist()
    icc_ids = choose_icc_patients(features, block.patients, block.seed)
    plan = [(p, icc_ids) for p in perturbation.draw_perturbations(chains, ICC_CHAIN, block.perturbations, block.seed)]
    if block.site_scanners:  # read by crlm choose-robustness only (docs/robustness.md)
        drawn_sites = perturbation.draw_perturbations(chains, SITE_CHAIN, block.site_scanners, block.seed)
        plan += [(p, all_ids) for p in drawn_sites]
    cache_dir = cfg.cache_location(cache)
    jobs = block.jobs if jobs is None else jobs
    tables = []
    start = time.perf_counter()
    for drawn, ids in plan:
        if not ids:
            continue
        lesions, report = extraction.extract_cohort(
            [cases[i] for i in ids],
            replace(options, perturbation=drawn),
            cache_dir,
            jobs=jobs,
            progress=progress,
            scheduler=scheduler,
            map_cases=map_cases,
        )
        rows = [by_id[i] for i in ids]
        table = patient_table.patient_feature_table(
            clinical.iloc[rows], status.iloc[rows], lesions, report, cfg.aggregation
        )
        table = table.reindex(columns=features.columns)  # exactly featurize's columns
        table.insert(1, PERTURBATION, drawn.name)
        tables.append(table)
        failed = int((table[STATUS] != OK).sum())
        print(f"{drawn.name}: {len(ids)} patients, {failed} not ok ({time.perf_counter() - start:.0f} s so far)")
    perturbed = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[PATIENT_ID, PERTURBATION])
    out.parent.mkdir(parents=True, exist_ok=True)
    extraction.write_table_with_record(perturbed, out, None)

    icc_rows = perturbed.loc[perturbed[PERTURBATION].str.startswith(f"{ICC_CHAIN}-")]
    stable = icc_rows.groupby(PATIENT_ID)[STATUS].agg(lambda s: bool((s == OK).all()))
    complete = stable.index[stable & (icc_rows.groupby(PATIENT_ID).size() == block.perturbations)].tolist()
    imaging = [c for c in imaging_columns(features.columns) if pd.api.types.is_numeric_dtype(features[c])]
    icc = robustness.icc_table(icc_rows, imaging, complete)
    icc_out.parent.mkdir(parents=True, exist_ok=True)
    icc.to_csv(icc_out, index=False)
    print(f"wrote {len(perturbed)} perturbed rows to {out} and {len(icc)} feature ICCs to {icc_out}")
    if len(complete) < robustness.MIN_ICC_PATIENTS:
        print(
            f"ICC not computed: {len(complete)} patient(s) were extracted in all {block.perturbations} icc "
            f"perturbations, fewer than {robustness.MIN_ICC_PATIENTS}; icc.csv holds NaN (a larger cohort or "
            f"robustness.patients in {params_path} gives an ICC)"
        )
    elif len(icc):
        summary = robustness.icc_summary(icc)
        print(f"ICC(1,1) over {len(complete)} patients x {block.perturbations} perturbations, per image type:")
        print(summary.to_string(float_format=lambda v: f"{v:.2f}"))
    return perturbed, icc
