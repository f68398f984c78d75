"""Cohort extraction: per-case morphology and radiomics, cached, in parallel, never losing a case.

Every input patient ends up in the report: one row per extracted lesion with status ``ok``,
or one row per failed lesion or case with the failure code and the reason (DESIGN.md 3).
Each case is cached under a key made of the image hash, the mask hash and the settings hash,
so an interrupted run resumes and a re-run on the same inputs extracts nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import SimpleITK as sitk
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from features import imaging, radiomics
from features.morphology import patient_morphology
from features.schema import PATIENT_ID

STATUS = "status"
REASON = "reason"
SECONDS = "seconds"
CACHED = "cached"
OK = "ok"
SETTINGS_HASH = "settings_hash"
IMAGE_SHA256 = "image_sha256"
MASK_SHA256 = "mask_sha256"
SPACING = ("image_spacing_x_mm", "image_spacing_y_mm", "image_spacing_z_mm")
SIZE = ("image_size_x", "image_size_y", "image_size_z")
ORIGIN = ("image_origin_x_mm", "image_origin_y_mm", "image_origin_z_mm")
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class CaseInput:
    """One case of a manifest: absolute image and mask paths."""

    patient_id: str
    image: Path
    mask: Path


@dataclass
class CaseResult:
    """Rows for lesions.parquet and extraction_report.csv from one case."""

    lesions: list[dict[str, Any]] = field(default_factory=list)
    report: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CaseOptions:
    """How cases are read and extracted; everything here is part of the cache key."""

    settings: radiomics.ExtractionSettings
    labels: imaging.LabelRoles
    resample_mask: bool = False
    min_lesion_voxels: int = 2

    def digest(self) -> str:
        roles = sorted(self.labels.segment_roles.items())
        payload = f"{self.settings.digest()}|{self.labels.liver}|{self.labels.lesion}|{roles}|" \
                  f"{self.resample_mask}|{self.min_lesion_voxels}|{_CACHE_FORMAT}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _failure(patient_id: str, reason: str, message: str, seconds: float, lesion=pd.NA) -> dict[str, Any]:
    return {PATIENT_ID: patient_id, radiomics.LESION: lesion, STATUS: reason, REASON: message,
            SECONDS: round(seconds, 3), CACHED: False}


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.json"


def _write_json_atomically(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


def extract_case(case: CaseInput, options: CaseOptions, cache_dir: Path | None) -> CaseResult:
    """Extract one case, from the cache when the same inputs and settings were seen before."""
    start = time.perf_counter()
    pid = case.patient_id
    for path, what in ((case.image, "image"), (case.mask, "mask")):
        if not path.exists():
            message = f"patient {pid}: {what} file not found: {path}; fix the path in the cohort table"
            return CaseResult(report=[_failure(pid, "missing_file", message, time.perf_counter() - start)])
    image_hash, mask_hash = radiomics.file_digest(case.image), radiomics.file_digest(case.mask)
    key = hashlib.sha256(f"{image_hash}|{mask_hash}|{options.digest()}".encode()).hexdigest()
    cached = _cache_path(cache_dir, key) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        payload = json.loads(cached.read_text(encoding="utf-8"))
        for row in payload["lesions"] + payload["report"]:
            row[PATIENT_ID] = pid           # the cache is keyed by content, not by identifier
        for row in payload["report"]:
            row[CACHED] = True
            row[SECONDS] = 0.0
        return CaseResult(payload["lesions"], payload["report"])

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        loaded = imaging.load_case(pid, case.image, case.mask, options.labels,
                                   resample_mask=options.resample_mask,
                                   segment_roles=options.labels.segment_roles or None,
                                   min_lesion_voxels=options.min_lesion_voxels)
    except imaging.CaseError as exc:
        return CaseResult(report=[_failure(pid, exc.reason, str(exc), time.perf_counter() - start)])
    image, mask = loaded.image, loaded.mask
    mask_array = sitk.GetArrayFromImage(mask)
    lesion_labels = imaging.lesion_labels_present(mask_array, options.labels)
    morphology = patient_morphology(mask_array, image.GetSpacing(), options.labels.liver, lesion_labels)
    provenance: dict[str, Any] = {SETTINGS_HASH: options.digest(), IMAGE_SHA256: image_hash,
                                  MASK_SHA256: mask_hash}
    provenance.update({f"{name}_version": version for name, version in radiomics.library_versions().items()})
    provenance.update(dict(zip(SPACING, image.GetSpacing())))
    provenance.update(dict(zip(SIZE, image.GetSize())))
    provenance.update(dict(zip(ORIGIN, image.GetOrigin())))

    result = CaseResult()
    extractor = radiomics.make_extractor(options.settings.radiomics)
    for row in radiomics.lesion_rows(image, mask, lesion_labels, options.settings, extractor):
        error = row.pop("error")
        seconds = round(time.perf_counter() - start, 3)
        if error:
            message = f"patient {pid}, lesion {row[radiomics.LESION]}: {error}"
            result.report.append(_failure(pid, "radiomics_failed", message, seconds, row[radiomics.LESION]))
            continue
        result.lesions.append({PATIENT_ID: pid, **row, **{f"patient_{k}": v for k, v in morphology.items()},
                               **provenance})
        result.report.append({PATIENT_ID: pid, radiomics.LESION: row[radiomics.LESION], STATUS: OK,
                              REASON: "", SECONDS: seconds, CACHED: False})
    if cached is not None:
        _write_json_atomically(cached, {"lesions": result.lesions, "report": result.report})
    return result


def read_manifest(path: str | Path) -> list[CaseInput]:
    """Cases of a cohort table: ``patient_id``, ``image``, ``mask`` (paths relative to it)."""
    path = Path(path)
    table = pd.read_csv(path, dtype={PATIENT_ID: str}, keep_default_na=False, na_values={"image": [""], "mask": [""]})
    missing = [c for c in (PATIENT_ID, "image", "mask") if c not in table]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; a manifest needs patient_id, image, mask")
    duplicated = table[PATIENT_ID][table[PATIENT_ID].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicated patient_id {duplicated[:5]}; each patient needs one row")
    base = path.parent
    return [CaseInput(str(pid), base / str(image), base / str(mask))
            for pid, image, mask in table[[PATIENT_ID, "image", "mask"]].itertuples(index=False)]


def extract_cohort(cases: Sequence[CaseInput], options: CaseOptions, cache_dir: Path | None,
                   jobs: int = 1, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extract every case in parallel; return (lesions, report), both in input order."""
    tasks = (delayed(extract_case)(case, options, cache_dir) for case in cases)
    results = Parallel(n_jobs=jobs, return_as="generator")(tasks)
    lesions: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    for result in tqdm(results, total=len(cases), desc="radiomics", unit="case", disable=not progress):
        lesions.extend(result.lesions)
        report.extend(result.report)
    lesion_table = pd.DataFrame(lesions)
    report_table = pd.DataFrame(report, columns=[PATIENT_ID, radiomics.LESION, STATUS, REASON, SECONDS, CACHED])
    report_table[radiomics.LESION] = report_table[radiomics.LESION].astype("Int64")
    return lesion_table, report_table


def write_extraction(out: Path, lesions: pd.DataFrame, report: pd.DataFrame) -> None:
    """Write ``lesions.parquet`` and ``extraction_report.csv`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    lesions.to_parquet(out / "lesions.parquet", index=False)
    report.to_csv(out / "extraction_report.csv", index=False)
    (out / "extraction_summary.json").write_text(json.dumps(
        {"cases": int(report[PATIENT_ID].nunique()),
         "lesions_ok": int((report[STATUS] == OK).sum()),
         "status_counts": {str(k): int(v) for k, v in report[STATUS].value_counts().items()},
         "cached_rows": int(report[CACHED].sum())}, indent=2))


def lesion_feature_columns(lesions: pd.DataFrame) -> list[str]:
    """The radiomics feature columns of a lesion table (pyradiomics naming)."""
    return [c for c in lesions.columns if c.startswith(radiomics.FEATURE_PREFIXES)]

