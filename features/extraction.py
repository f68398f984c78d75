"""Cohort extraction: per-case morphology and radiomics, cached, in parallel, never losing a case.

Every input patient ends up in the report: one row per extracted lesion with status ``ok``,
or one row per failed lesion or case with the failure code and the reason (docs/design.md section 3).
Each case is cached under a key made of the image hash, the mask hash and the settings hash,
so an interrupted run resumes and a re-run on the same inputs extracts nothing.

Cases run through the executor the stage passes in (``pipeline.execution.map_cases``: local
processes, or a Dask cluster with ``scheduler``), else one after the other in this process.
The manifest, the images and masks, and the cache may be local paths or fsspec URLs
(``file:///shared/...``, ``s3://...``); a remote image or mask is copied to a temporary local
file for SimpleITK, inside the worker that reads it. Local paths are made absolute before the
cases leave this process, so on a cluster they must name the same files on every worker
(a shared file system mounted at the same path).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import SimpleITK as sitk
from fsspec.implementations.local import LocalFileSystem

from features import imaging, radiomics
from features.morphology import patient_morphology
from features.perturbation import Perturbation, apply_perturbation
from features.reference_tissue import ReferenceTissue, normalise_case
from features.schema import OK, PATIENT_ID, REASON, REFERENCE_MAD_HU, REFERENCE_MEDIAN_HU, REFERENCE_VOXELS, STATUS

SECONDS = "seconds"
CACHED = "cached"
SETTINGS_HASH = "settings_hash"
IMAGE_SHA256 = "image_sha256"
MASK_SHA256 = "mask_sha256"
SPACING = ("image_spacing_x_mm", "image_spacing_y_mm", "image_spacing_z_mm")
SIZE = ("image_size_x", "image_size_y", "image_size_z")
ORIGIN = ("image_origin_x_mm", "image_origin_y_mm", "image_origin_z_mm")
SETTINGS_FILE = "extraction_settings.json"  # the settings record, next to lesions.parquet and in a models folder
SETTINGS_METADATA_KEY = b"crlm_extraction_settings"  # the same record in a feature table's parquet metadata
_CACHE_FORMAT = 2  # 2: images cast to float32, SEG lesions per segment (issue 11)
# An executor: (function, items, jobs=, scheduler=, progress=, desc=) -> results in input order.
MapCases = Callable[..., Iterator[Any]]


@dataclass(frozen=True)
class CaseInput:
    """One case of a manifest: image and mask as local paths or fsspec URLs (``s3://...``)."""

    patient_id: str
    image: Path | str
    mask: Path | str


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
    require_hu: bool = True
    # Applied right after loading (issue 13, features/perturbation.py); part of the digest and of
    # the settings record only when set, so default extractions keep their cache keys.
    perturbation: Perturbation | None = None
    # Per-patient liver reference normalisation (features.reference_tissue); None: HU as loaded.
    reference_tissue: ReferenceTissue | None = None
    # Set by `options_for_columns`: the digest of the full options these were reduced from. A
    # cache entry of that full extraction holds every feature these compute (the same values,
    # tests/pipeline/test_predict.py) and serves them. Not part of this digest.
    full_digest: str | None = None

    def __post_init__(self) -> None:
        if self.reference_tissue is not None and not self.reference_tissue.enabled:
            raise ValueError("reference_tissue with enabled false: pass None for no normalisation (one way to say off)")

    def digest(self) -> str:
        roles = sorted(self.labels.segment_roles.items())
        payload = (
            f"{self.settings.digest()}|{self.labels.liver}|{self.labels.lesion}|{roles}|"
            f"{self.labels.seg_lesions}|{self.resample_mask}|{self.min_lesion_voxels}|{self.require_hu}|"
            f"{_CACHE_FORMAT}"
        )
        if self.perturbation is not None:
            payload += f"|perturbation={self.perturbation.digest()}"
        if self.reference_tissue is not None:  # absent: the digest of extractions made before it existed
            payload += f"|reference_tissue={json.dumps(self.reference_tissue.record(), sort_keys=True)}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- settings record


def settings_record(options: CaseOptions, aggregation: Sequence[str] | None = None) -> dict[str, Any]:
    """What determines the imaging features: radiomics parameters, crop margin, label roles,
    mask handling and aggregation rules, with their hash (``settings_hash``, as in
    lesions.parquet) and the library versions. JSON-ready; `options_from_record` reverses it."""
    labels = options.labels
    record: dict[str, Any] = {
        SETTINGS_HASH: options.digest(),
        "radiomics": json.loads(json.dumps(options.settings.radiomics, default=str)),
        "crop_margin_mm": options.settings.crop_margin_mm,
        "labels": {
            "liver": labels.liver,
            "lesion": labels.lesion,
            "segment_roles": dict(labels.segment_roles),
            "seg_lesions": labels.seg_lesions,
        },
        "resample_mask": options.resample_mask,
        "min_lesion_voxels": options.min_lesion_voxels,
        "require_hu": options.require_hu,
        "versions": radiomics.library_versions(),
    }
    if options.perturbation is not None:
        record["perturbation"] = options.perturbation.record()
    if options.reference_tissue is not None:
        record["reference_tissue"] = options.reference_tissue.record()
    if aggregation is not None:
        record["aggregation"] = list(aggregation)
    return record


def options_from_record(record: dict[str, Any]) -> CaseOptions:
    """The `CaseOptions` a settings record was made from."""
    return CaseOptions(
        settings=radiomics.ExtractionSettings(record["radiomics"], float(record["crop_margin_mm"])),
        labels=imaging.LabelRoles(**record["labels"]),
        resample_mask=bool(record["resample_mask"]),
        min_lesion_voxels=int(record["min_lesion_voxels"]),
        require_hu=bool(record.get("require_hu", True)),
        perturbation=Perturbation.from_record(record["perturbation"]) if record.get("perturbation") else None,
        reference_tissue=_reference_tissue(record.get("reference_tissue")),
    )


def _reference_tissue(block: dict[str, Any] | None) -> ReferenceTissue | None:
    """A record's ``reference_tissue`` block: absent (records made before it existed) or off is None."""
    return ReferenceTissue(**block) if block and block.get("enabled", True) else None


# Keys of a record that are not settings: the hash follows from the rest, versions are reported apart.
_RECORD_DERIVED = (SETTINGS_HASH, "versions")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat if flat or not prefix else {prefix: {}}
    return {prefix: value}


def settings_differences(model: dict[str, Any], given: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, model's value, given value) for every setting that differs, keys dotted
    (``radiomics.setting.binWidth``); a key absent on one side has the value None there."""
    left = _flatten({k: v for k, v in model.items() if k not in _RECORD_DERIVED})
    right = _flatten({k: v for k, v in given.items() if k not in _RECORD_DERIVED})
    return [
        (key, left.get(key), right.get(key))
        for key in sorted(set(left) | set(right))
        if json.dumps(left.get(key), sort_keys=True) != json.dumps(right.get(key), sort_keys=True)
    ]


def write_table_with_record(table: pd.DataFrame, path: str | Path, record: dict[str, Any] | None) -> None:
    """Write ``table`` as parquet, with ``record`` in its schema metadata (if given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if record is not None:
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), SETTINGS_METADATA_KEY: json.dumps(record).encode("utf-8")}
        )
    pq.write_table(arrow, path)


def read_table_record(path: str | Path) -> dict[str, Any] | None:
    """The settings record in a feature table's parquet metadata, or None."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(SETTINGS_METADATA_KEY)
    return json.loads(raw) if raw else None


def copy_record_to_models(features: str | Path, models_dir: str | Path) -> dict[str, Any] | None:
    """Copy the settings record of the feature table a model was fitted on into its models
    folder (``extraction_settings.json``); remove a stale one if the table carries none."""
    record = read_table_record(features)
    target = Path(models_dir) / SETTINGS_FILE
    if record is None:
        target.unlink(missing_ok=True)
        return None
    target.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    return record


def options_for_columns(options: CaseOptions, columns: Sequence[str]) -> CaseOptions:
    """``options`` whose radiomics compute only what the patient-level ``columns`` a model uses
    need (issue 14): the lesion features behind its aggregated columns (``rad_<rule>__<feature>``,
    `features.aggregation.RULE_PREFIX`): the image types and classes they come from
    (`radiomics.params_for_features`), and on each derived image only its own classes and
    features (`radiomics.feature_selection`, computed by `radiomics.extract_lesion_features`). Morphology
    (``patient_*``) and the per-lesion volume the aggregation weighs by are always computed.
    The options are returned unchanged when a column cannot be traced (an unknown rule or
    feature name): then everything is extracted, never a guess. The reduced options have their
    own settings hash, so their cache entries never stand in for a full extraction; the other
    way round, a case already extracted in full is served from that cache entry (``full_digest``)."""
    from features.aggregation import RULE_PREFIX

    names: list[str] = []
    for column in columns:
        if not str(column).startswith("rad_"):
            continue
        rule = [prefix for prefix in RULE_PREFIX.values() if str(column).startswith(prefix)]
        if not rule:
            return options
        names.append(str(column)[len(rule[0]) :])
    params = radiomics.params_for_features(options.settings.radiomics, sorted(set(names)))
    if params is None:
        return options
    wanted = sorted(set(names))
    selected = tuple(wanted) if radiomics.feature_selection(params, wanted) is not None else None
    settings = radiomics.ExtractionSettings(params, options.settings.crop_margin_mm, selected)
    return replace(options, settings=settings, full_digest=options.full_digest or options.digest())


def _failure(patient_id: str, reason: str, message: str, seconds: float, lesion=pd.NA) -> dict[str, Any]:
    return {
        PATIENT_ID: patient_id,
        radiomics.LESION: lesion,
        STATUS: reason,
        REASON: message,
        SECONDS: round(seconds, 3),
        CACHED: False,
    }


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is an fsspec URL (``protocol://...``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def _absolute(location: str | Path) -> str | Path:
    """URLs as they are; local paths absolute, so that every worker reads the same file."""
    return location if is_url(location) else Path(location).absolute()


def _exists(location: str | Path) -> bool:
    if not is_url(location):
        return Path(location).exists()
    fs, path = fsspec.core.url_to_fs(location)
    return fs.exists(path)


@contextmanager
def _local_copy(location: str | Path) -> Iterator[Path]:
    """A local path for SimpleITK: the file itself, or a temporary copy of a remote file or folder."""
    if not is_url(location):
        yield Path(location)
        return
    fs, path = fsspec.core.url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="crlm-case-") as tmp:
        local = Path(tmp) / posixpath.basename(path.rstrip("/"))  # keeps .nii.gz for SimpleITK
        fs.get(path, str(local), recursive=fs.isdir(path))
        yield local


def _cache_key(image_hash: str, mask_hash: str, settings_digest: str) -> str:
    """A case's cache key: its content (image and mask hashes) and the options' digest."""
    return hashlib.sha256(f"{image_hash}|{mask_hash}|{settings_digest}".encode()).hexdigest()


def _cache_location(cache_dir: str | Path, key: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(str(cache_dir))
    return fs, f"{root.rstrip('/')}/{key[:2]}/{key}.json"


def _read_cache(fs: fsspec.AbstractFileSystem, path: str) -> dict | None:
    if not fs.isfile(path):
        return None
    with fs.open(path, "rb") as handle:
        return json.load(handle)


def _write_json_atomically(fs: fsspec.AbstractFileSystem, path: str, payload: dict) -> None:
    """Write then rename, so a reader (or a case run twice) never sees half a file."""
    parent = posixpath.dirname(path)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp"
    fs.pipe_file(tmp, json.dumps(payload).encode("utf-8"))
    fs.mv(tmp, path)


def extract_case(case: CaseInput, options: CaseOptions, cache_dir: str | Path | None) -> CaseResult:
    """Extract one case, from the cache when the same inputs and settings were seen before.

    ``cache_dir`` is a local folder, an fsspec URL, or None (no cache).
    """
    start = time.perf_counter()
    pid = case.patient_id
    for path, what in ((case.image, "image"), (case.mask, "mask")):
        if not _exists(path):
            message = f"patient {pid}: {what} file not found: {path}; fix the path in the cohort table"
            return CaseResult(report=[_failure(pid, "missing_file", message, time.perf_counter() - start)])
    with _local_copy(case.image) as image_path, _local_copy(case.mask) as mask_path:
        result = _extract_local(pid, image_path, mask_path, options, cache_dir, start)
    for local, original in ((image_path, case.image), (mask_path, case.mask)):
        if str(local) != str(original):  # name the URL in reasons, not the temporary copy
            for row in result.report:
                row[REASON] = row[REASON].replace(str(local), str(original))
    return result


def _extract_local(
    pid: str, image_path: Path, mask_path: Path, options: CaseOptions, cache_dir: str | Path | None, start: float
) -> CaseResult:
    image_hash, mask_hash = radiomics.file_digest(image_path), radiomics.file_digest(mask_path)
    key = _cache_key(image_hash, mask_hash, options.digest())
    cache = _cache_location(cache_dir, key) if cache_dir is not None else None
    payload = _read_cache(*cache) if cache is not None else None
    if payload is None and cache is not None and options.full_digest is not None:
        # a reduced request (crlm predict) on a case already extracted in full: its entry holds
        # every feature asked for, with the values the reduced extraction would compute
        payload = _read_cache(*_cache_location(cache_dir, _cache_key(image_hash, mask_hash, options.full_digest)))
    if payload is not None:
        for row in payload["lesions"] + payload["report"]:
            row[PATIENT_ID] = pid  # the cache is keyed by content, not by identifier
        for row in payload["report"]:
            row[CACHED] = True
            row[SECONDS] = 0.0
        return CaseResult(payload["lesions"], payload["report"])

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        loaded = imaging.load_case(
            pid,
            image_path,
            mask_path,
            options.labels,
            resample_mask=options.resample_mask,
            min_lesion_voxels=options.min_lesion_voxels,
            require_hu=options.require_hu,
        )
        if options.perturbation is not None:
            loaded = apply_perturbation(
                loaded, options.perturbation, options.labels, options.min_lesion_voxels, salt=image_hash
            )
    except imaging.CaseError as exc:
        return CaseResult(report=[_failure(pid, exc.reason, str(exc), time.perf_counter() - start)])
    image, mask = loaded.image, loaded.mask
    reference: dict[str, Any] = {}
    if options.reference_tissue is not None:  # after load_case (and a perturbation), before any feature
        try:
            image, stats = normalise_case(pid, image, mask, options.labels.liver, options.reference_tissue, mask_path)
        except imaging.CaseError as exc:
            return CaseResult(report=[_failure(pid, exc.reason, str(exc), time.perf_counter() - start)])
        reference = {
            REFERENCE_MEDIAN_HU: stats.median_hu,
            REFERENCE_MAD_HU: stats.mad_hu,
            REFERENCE_VOXELS: stats.voxels,
        }
    mask_array = sitk.GetArrayViewFromImage(mask)
    summary = loaded.label_summary  # counts and lesions of the mask, found once by load_case
    lesion_labels = (
        summary.lesion_labels if summary is not None else imaging.lesion_labels_present(mask_array, options.labels)
    )
    morphology = patient_morphology(
        mask_array, image.GetSpacing(), options.labels.liver, lesion_labels, loaded.lesions_by_label, summary=summary
    )
    provenance: dict[str, Any] = {SETTINGS_HASH: options.digest(), IMAGE_SHA256: image_hash, MASK_SHA256: mask_hash}
    provenance.update({f"{name}_version": version for name, version in radiomics.library_versions().items()})
    provenance.update(dict(zip(SPACING, image.GetSpacing(), strict=True)))
    provenance.update(dict(zip(SIZE, image.GetSize(), strict=True)))
    provenance.update(dict(zip(ORIGIN, image.GetOrigin(), strict=True)))
    provenance.update(reference)

    result = CaseResult()
    extractor = radiomics.make_extractor(options.settings.radiomics, options.settings.features)
    for row in radiomics.lesion_rows(
        image, mask, lesion_labels, options.settings, extractor, loaded.lesions_by_label, summary=summary
    ):
        error = row.pop("error")
        seconds = round(time.perf_counter() - start, 3)
        if error:
            message = f"patient {pid}, lesion {row[radiomics.LESION]}: {error}"
            result.report.append(_failure(pid, "radiomics_failed", message, seconds, row[radiomics.LESION]))
            continue
        result.lesions.append(
            {PATIENT_ID: pid, **row, **{f"patient_{k}": v for k, v in morphology.items()}, **provenance}
        )
        result.report.append(
            {
                PATIENT_ID: pid,
                radiomics.LESION: row[radiomics.LESION],
                STATUS: OK,
                REASON: "",
                SECONDS: seconds,
                CACHED: False,
            }
        )
    if cache is not None:
        _write_json_atomically(*cache, {"lesions": result.lesions, "report": result.report})
    return result


def read_manifest(path: str | Path) -> list[CaseInput]:
    """Cases of a cohort table: ``patient_id``, ``image``, ``mask`` (paths relative to it).

    ``path`` is a local path or an fsspec URL; relative image and mask paths of a URL manifest
    become URLs next to it, and URLs in the table stay as they are.
    """
    if is_url(path):
        fs, stripped = fsspec.core.url_to_fs(path)
        with fs.open(stripped, "rb") as handle:
            table = _read_manifest_table(handle, path)
        base = posixpath.dirname(stripped)

        def locate(value: str) -> str | Path:
            return value if is_url(value) else fs.unstrip_protocol(posixpath.join(base, value))
    else:
        path = Path(path)
        table = _read_manifest_table(path, path)

        def locate(value: str) -> str | Path:
            return value if is_url(value) else path.parent / value

    return [
        CaseInput(str(pid), locate(str(image)), locate(str(mask)))
        for pid, image, mask in table[[PATIENT_ID, "image", "mask"]].itertuples(index=False)
    ]


def _read_manifest_table(source, path: str | Path) -> pd.DataFrame:
    table = pd.read_csv(source, dtype={PATIENT_ID: str}, keep_default_na=False, na_values={"image": [""], "mask": [""]})
    missing = [c for c in (PATIENT_ID, "image", "mask") if c not in table]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; a manifest needs patient_id, image, mask")
    duplicated = table[PATIENT_ID][table[PATIENT_ID].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicated patient_id {duplicated[:5]}; each patient needs one row")
    return table


def map_in_process(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    jobs: int = 1,
    scheduler: Any = None,
    progress: bool = False,
    desc: str = "cases",
) -> Iterator[Any]:
    """``function(item)`` for every item, in order, in this process: the executor used when none is
    passed in. Parallel or cluster execution (``jobs`` other than 1, a ``scheduler``) needs the
    caller's executor (``pipeline.execution.map_cases``); asking this one for it is an error."""
    if jobs != 1 or scheduler is not None:
        raise ValueError(
            f"jobs={jobs}, scheduler={scheduler!r}: parallel or cluster extraction needs an executor; "
            "pass map_cases=pipeline.execution.map_cases"
        )
    return (function(item) for item in items)


def extract_cohort(
    cases: Sequence[CaseInput],
    options: CaseOptions,
    cache_dir: str | Path | None,
    jobs: int = 1,
    progress: bool = True,
    scheduler: Any = None,
    map_cases: MapCases | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extract every case; return (lesions, report), both in input order.

    ``map_cases`` runs the cases: the stage passes ``pipeline.execution.map_cases`` (``jobs``
    local processes, or the Dask cluster named by ``scheduler``); without it they run one after
    the other in this process (`map_in_process`). Library code reads no environment variable:
    the stage resolves the scheduler. The tables are the same whichever runs the cases, apart
    from the ``seconds`` column.
    """
    mapper = map_cases if map_cases is not None else map_in_process
    cases = [CaseInput(case.patient_id, _absolute(case.image), _absolute(case.mask)) for case in cases]
    cache = _absolute(cache_dir) if cache_dir is not None else None
    run = partial(extract_case, options=options, cache_dir=cache)
    lesions: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    for result in mapper(run, cases, jobs=jobs, scheduler=scheduler, progress=progress, desc="radiomics"):
        lesions.extend(result.lesions)
        report.extend(result.report)
    lesion_table = pd.DataFrame(lesions)
    report_table = pd.DataFrame(report, columns=[PATIENT_ID, radiomics.LESION, STATUS, REASON, SECONDS, CACHED])
    report_table[radiomics.LESION] = report_table[radiomics.LESION].astype("Int64")
    return lesion_table, report_table


def write_extraction(
    out: str | Path, lesions: pd.DataFrame, report: pd.DataFrame, record: dict[str, Any] | None = None
) -> None:
    """Write ``lesions.parquet``, ``extraction_report.csv``, ``extraction_summary.json`` and,
    if given, the settings record (`settings_record`, ``extraction_settings.json``) under
    ``out``: a local folder or an fsspec URL (shared storage)."""
    fs, root = fsspec.core.url_to_fs(str(out))
    fs.makedirs(root, exist_ok=True)
    summary = {
        "cases": int(report[PATIENT_ID].nunique()),
        "lesions_ok": int((report[STATUS] == OK).sum()),
        "status_counts": {str(k): int(v) for k, v in report[STATUS].value_counts().items()},
        "cached_rows": int(report[CACHED].sum()),
    }
    with fs.open(f"{root}/lesions.parquet", "wb") as handle:
        lesions.to_parquet(handle, index=False)
    with fs.open(f"{root}/extraction_report.csv", "w", encoding="utf-8", newline="") as handle:
        report.to_csv(handle, index=False)
    with fs.open(f"{root}/extraction_summary.json", "w", encoding="utf-8") as handle:
        handle.write(json.dumps(summary, indent=2))
    if record is not None:
        with fs.open(f"{root}/{SETTINGS_FILE}", "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record, indent=2, sort_keys=True))


def lesion_feature_columns(lesions: pd.DataFrame) -> list[str]:
    """The radiomics feature columns of a lesion table (pyradiomics naming)."""
    return [c for c in lesions.columns if c.startswith(radiomics.FEATURE_PREFIXES)]
