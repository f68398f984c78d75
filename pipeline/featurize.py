"""``crlm featurize``: one patient-level feature table per cohort (thin stage script)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from features import extraction, patient_table
from features.schema import PATIENT_ID
from pipeline.inputs import load_extraction_config, read_and_validate

LESIONS_FILE = "lesions.parquet"
REPORT_FILE = "extraction_report.csv"


def run_featurize(
    cohort: Path, out: Path, extraction_dir: Path | None, config: Path, mapping: Path | None = None
) -> pd.DataFrame:
    """Write ``out`` (parquet): clinical features, scores, morphology and radiomics per patient.

    One row per input row, in input order, with the status ``crlm validate`` gives (a fatal
    problem, e.g. a duplicated identifier, stops it as it makes validate exit 1).
    """
    _, report = read_and_validate(cohort, mapping)
    if report.fatal:
        raise ValueError(f"{cohort}: cannot build features:\n{report.format()}")
    lesions = extraction_report = record = None
    if extraction_dir is not None:
        lesions_path, report_path = extraction_dir / LESIONS_FILE, extraction_dir / REPORT_FILE
        for path in (lesions_path, report_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found; run crlm extract --cohort {cohort} --out {extraction_dir}")
        lesions = pd.read_parquet(lesions_path)
        extraction_report = pd.read_csv(report_path, dtype={PATIENT_ID: str})
        record_path = extraction_dir / extraction.SETTINGS_FILE
        if record_path.is_file():  # the model will remember these settings (crlm train, crlm predict)
            record = json.loads(record_path.read_text(encoding="utf-8"))
    rules = load_extraction_config(config).aggregation
    if record is not None:
        record["aggregation"] = list(rules)
    # Every row is kept: a rejected value makes its patient invalid (reason in the table), the
    # value itself is left missing so that nothing downstream reads it.
    table = patient_table.patient_feature_table(report.table, report.status, lesions, extraction_report, rules)
    out.parent.mkdir(parents=True, exist_ok=True)
    extraction.write_table_with_record(table, out, record)
    counts = table[patient_table.STATUS].value_counts().to_dict()
    print(f"wrote {len(table)} patients x {table.shape[1]} columns to {out}; status: {counts}")
    return table
