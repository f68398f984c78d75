"""crlm predict: one row per input row whatever is wrong with it, predictions that do not
depend on chunking or neighbours, exact explanations, clinical-only and registry models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from features import extraction, radiomics
from features.patient_table import patient_feature_table
from features.schema import CEA, IMAGE, MASK, PATIENT_ID, PRIMARY_SITE
from models import training
from models.explain import explain_without_background
from models.predictor import used_columns
from pipeline import cohort as synthetic
from pipeline import synthesis
from pipeline.predict import DUPLICATE_ID, PREDICTIONS_FILE, SUMMARY_FILE, explanation_file, load_models, run_predict
from pipeline.train import run_train
from tests.conftest import LIGHT_RADIOMICS

# Few, small and cheap: 4 phantoms, light radiomics (tests/conftest.py LIGHT_RADIOMICS).
AGGREGATION = ["largest", "volume_weighted_mean"]
CROP_MARGIN_MM = 10.0
N_PHANTOMS = 4
N_TRAIN = 160
TINY_GRID = {
    "seed": 3,
    "cv_folds": 3,
    "correlation_threshold": 0.95,
    "k_features": [8],
    "test_fraction": 0.3,
    "select_among": "imaging",  # as params.yaml
    "jobs": 1,
    "grids": {
        "coxnet": {"alphas": [[0.05]]},
        "xgb_cox": {"max_depth": [1], "n_estimators": [50]},
        "xgb_aft": {"max_depth": [1], "n_estimators": [50]},
        "logistic": {"C": [0.1]},
        "xgb": {"max_depth": [1], "n_estimators": [50]},
    },
}
NON_ASCII_ID = "Pätient-ü1"
TOLERANCE = 1e-12
NUMBERS = [
    "risk",
    "survival_12m",
    "survival_24m",
    "survival_36m",
    "response_probability",
    "recurrence_shap_1",
    "response_shap_1",
]
# patient id -> expected status of the mixed cohort's bad rows
EXPECTED = {
    "BAD-missing": "missing_file",
    "BAD-truncated": "unreadable",
    "BAD-grid": "geometry_mismatch",
    "BAD-empty": "empty_mask",
    "BAD-liver-only": "missing_lesion_label",
    "BAD-nan": "nan_voxels",
    "BAD-cea": "out_of_range",
    "BAD-site": "unknown_category",
    "DUP-1": DUPLICATE_ID,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, world, labels, synthetic_cohort) -> dict:
    """Phantoms (the shared cohort of tests/conftest.py, read-only), light settings and two
    trained models folders (with and without imaging)."""
    root = tmp_path_factory.mktemp("predict")
    phantoms = synthetic_cohort
    assert len(pd.read_csv(phantoms / synthetic.CLINICAL_FILE)) == N_PHANTOMS
    (root / "radiomics.yaml").write_text(yaml.safe_dump(LIGHT_RADIOMICS))
    (root / "extraction.yaml").write_text(
        yaml.safe_dump(
            {
                "crop_margin_mm": CROP_MARGIN_MM,
                "cache_dir": str(root / "cache"),
                "resample_mask": False,
                "min_lesion_voxels": 2,
                "aggregation": AGGREGATION,
            }
        )
    )
    (root / "params.yaml").write_text(yaml.safe_dump({"train": TINY_GRID, "evaluate": {"bootstrap": 10, "seed": 0}}))

    # Imaging columns exactly as extraction names them; training rows borrow (jittered) phantom values.
    options = extraction.CaseOptions(radiomics.ExtractionSettings(LIGHT_RADIOMICS, CROP_MARGIN_MM), labels)
    lesions, report = extraction.extract_cohort(
        extraction.read_manifest(phantoms / synthetic.CLINICAL_FILE), options, None, progress=False
    )
    clinical = pd.read_csv(phantoms / synthetic.CLINICAL_FILE, dtype={PATIENT_ID: str})
    imaging = patient_feature_table(clinical, pd.Series("ok", index=clinical.index), lesions, report)
    imaging_columns = [c for c in imaging if c.startswith(training.IMAGING_PREFIXES) and c != PATIENT_ID]
    train_clinical, _ = synthesis.simulate_cohort(N_TRAIN, seed=41, site="A", world=world)
    table = patient_feature_table(train_clinical, pd.Series("ok", index=train_clinical.index))
    donors = imaging[imaging_columns].to_numpy(float)[np.arange(N_TRAIN) % N_PHANTOMS]
    jitter = np.random.default_rng(0).lognormal(0.0, 0.1, donors.shape)
    with_imaging = pd.concat([table, pd.DataFrame(donors * jitter, columns=imaging_columns)], axis=1)
    models = {}
    for name, features in (("imaging", with_imaging), ("clinical", table)):
        features.to_parquet(root / f"{name}.parquet")
        models[name] = root / f"models_{name}"
        run_train(
            root / f"{name}.parquet",
            root / f"train_{name}",
            models[name],
            root / "params.yaml",
            training.TASKS,
            track=False,
        )
    return {"root": root, "phantoms": phantoms, "clinical": clinical, "models": models}


def predict(setup: dict, cohort: Path, out: Path, models: list[str] | None = None, **kwargs) -> pd.DataFrame:
    root = setup["root"]
    return run_predict(
        cohort,
        models or [str(setup["models"]["imaging"])],
        out,
        progress=False,
        cache=root / "cache",
        radiomics_params=root / "radiomics.yaml",
        extraction_config=root / "extraction.yaml",
        **kwargs,
    )


def _write_like(array: np.ndarray, reference: sitk.Image, path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))
    return path


def mixed_cohort(setup: dict, folder: Path) -> Path:
    """The good phantoms, a non-ASCII id, every kind of bad input, and a duplicate far apart."""
    clinical = setup["clinical"].copy()
    for column in (IMAGE, MASK):
        clinical[column] = [str(setup["phantoms"] / p) for p in clinical[column]]
    image_path, mask_path = clinical.at[0, IMAGE], clinical.at[0, MASK]
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(image_path).read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    mask = sitk.ReadImage(mask_path)
    labels = sitk.GetArrayFromImage(mask)
    empty = _write_like(np.zeros_like(labels), mask, folder / "empty.nii.gz")
    liver_only = _write_like(np.where(labels > 0, 1, 0).astype(labels.dtype), mask, folder / "liver_only.nii.gz")
    coarse = sitk.Resample(
        mask,
        [s // 2 for s in mask.GetSize()],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        mask.GetOrigin(),
        [2 * s for s in mask.GetSpacing()],
        mask.GetDirection(),
        0,
        mask.GetPixelID(),
    )
    sitk.WriteImage(coarse, str(folder / "other_grid.nii.gz"))
    image = sitk.ReadImage(image_path)
    voxels = sitk.GetArrayFromImage(image).astype(np.float32)
    voxels[0, 0, :5] = np.nan
    nan_image = _write_like(voxels, image, folder / "nan.nii.gz")

    def like_first(patient_id: str, **changes) -> pd.Series:
        row = clinical.iloc[0].copy()
        row[PATIENT_ID] = patient_id
        for column, value in changes.items():
            row[column] = value
        return row

    rows = [
        clinical.iloc[0],
        like_first("DUP-1"),
        like_first("BAD-missing", image=str(folder / "nowhere.nii.gz")),
        clinical.iloc[1],
        like_first("BAD-truncated", image=str(folder / "truncated.nii.gz")),
        like_first("BAD-grid", mask=str(folder / "other_grid.nii.gz")),
        clinical.iloc[2],
        like_first("BAD-empty", mask=str(empty)),
        like_first("BAD-liver-only", mask=str(liver_only)),
        like_first("BAD-nan", image=str(nan_image)),
        like_first(NON_ASCII_ID),
        like_first("BAD-cea", **{CEA: -5.0}),
        clinical.iloc[3],
        like_first("BAD-site", **{PRIMARY_SITE: "appendix"}),
        like_first("DUP-1"),
    ]
    path = folder / "mixed.csv"
    pd.DataFrame(rows).to_csv(path, index=False, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mixed(setup) -> dict:
    cohort = mixed_cohort(setup, setup["root"] / "mixed")
    out = setup["root"] / "out_chunk2"
    return {"cohort": cohort, "out": out, "result": predict(setup, cohort, out, chunk_size=2)}


def good_ids(setup: dict) -> list[str]:
    return [*setup["clinical"][PATIENT_ID], NON_ASCII_ID]


def test_every_input_row_is_in_the_output_with_its_status_and_reason(setup, mixed):
    result = mixed["result"]
    cohort = pd.read_csv(mixed["cohort"], dtype={PATIENT_ID: str})
    assert len(result) == len(cohort)
    assert result[PATIENT_ID].tolist() == cohort[PATIENT_ID].tolist()
    assert result["row"].tolist() == list(range(1, len(cohort) + 1))
    rows = result.set_index(PATIENT_ID)
    for patient, status in EXPECTED.items():
        assert set(result.loc[result[PATIENT_ID] == patient, "status"]) == {status}, patient
    bad = result[result["status"] != "ok"]
    assert len(bad) == len(EXPECTED) + 1  # the duplicate has two rows
    assert bad["reason"].str.len().gt(20).all()
    assert bad[["risk", "response_probability", "fong_score", "recurrence_feature_1"]].isna().all().all()
    assert "rows 2, 15" in rows.loc["DUP-1", "reason"].iloc[0]
    assert "cea_ng_ml = -5.0" in rows.loc["BAD-cea", "reason"] and "'appendix'" in rows.loc["BAD-site", "reason"]
    assert "nan.nii.gz" in rows.loc["BAD-nan", "reason"] and "nowhere.nii.gz" in rows.loc["BAD-missing", "reason"]
    good = rows.loc[good_ids(setup)]
    assert (good["status"] == "ok").all() and (good["reason"] == "").all()
    assert good[["risk", "survival_24m", "response_probability", "fong_score"]].notna().all().all()
    assert set(good["risk_group"]) <= {"low", "intermediate", "high"}
    assert NON_ASCII_ID.encode("utf-8") in (mixed["out"] / PREDICTIONS_FILE).read_bytes()
    summary = json.loads((mixed["out"] / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert summary["patients"] == len(cohort) and summary["status_counts"]["ok"] == len(good)
    assert summary["status_counts"][DUPLICATE_ID] == 2 and summary["patients_per_minute"] > 0


def test_chunking_and_bad_neighbours_do_not_change_predictions(setup, mixed, tmp_path):
    one_chunk = predict(setup, mixed["cohort"], tmp_path / "chunk100", chunk_size=100)
    pd.testing.assert_frame_equal(one_chunk, mixed["result"], check_exact=False, rtol=TOLERANCE, atol=TOLERANCE)
    cohort = pd.read_csv(mixed["cohort"], dtype={PATIENT_ID: str})
    in_mixed = mixed["result"].set_index(PATIENT_ID)
    for patient in good_ids(setup):
        alone = tmp_path / f"alone_{explanation_file(patient)}.csv"
        cohort[cohort[PATIENT_ID] == patient].to_csv(alone, index=False, encoding="utf-8")
        result = predict(setup, alone, tmp_path / "alone", chunk_size=1)
        assert result[PATIENT_ID].tolist() == [patient] and result["status"].tolist() == ["ok"]
        for column in NUMBERS:
            assert result[column].iloc[0] == pytest.approx(
                in_mixed.at[patient, column], rel=TOLERANCE, abs=TOLERANCE
            ), (patient, column)


def test_explanations_are_complete_and_add_up_to_the_predictions(setup, mixed):
    result = mixed["result"].set_index(PATIENT_ID)
    files = sorted(p.name for p in (mixed["out"] / "explanations").iterdir())
    assert files == sorted(explanation_file(p) for p in good_ids(setup))
    for patient in good_ids(setup):
        document = json.loads((mixed["out"] / result.at[patient, "explanation"]).read_text(encoding="utf-8"))
        assert document[PATIENT_ID] == patient
        for model in document["models"]:
            shap = [c["shap"] for c in model["contributions"]]
            assert model["base_value"] + sum(shap) == pytest.approx(model["value"], abs=1e-4)
            assert [abs(v) for v in shap] == sorted((abs(v) for v in shap), reverse=True)
            task = model["task"]
            assert model["model"] == result.at[patient, f"{task}_model"]
            assert result.at[patient, f"{task}_feature_1"] == model["contributions"][0]["feature"]
            assert result.at[patient, f"{task}_shap_1"] == pytest.approx(shap[0], rel=TOLERANCE)
        risk = next(m for m in document["models"] if m["task"] == training.RECURRENCE)["value"]
        assert risk == pytest.approx(result.at[patient, "risk"], rel=1e-6, abs=1e-7)  # xgboost sums in float32


def test_every_model_family_is_explained_exactly_and_a_marker_picks_the_model(setup, mixed, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(setup["models"]["imaging"], folder)
    (folder / "best.json").unlink()  # written by crlm train; without it, the documented default order
    assert [m.name for m in load_models([str(folder)], tmp_path)] == ["coxnet", "logistic"]
    (folder / "best.json").write_text(json.dumps({"recurrence": "xgb_aft", "response": "xgb"}))
    assert [m.name for m in load_models([str(folder)], tmp_path)] == ["xgb_aft", "xgb"]
    result = predict(setup, mixed["cohort"], tmp_path / "out", models=[str(folder)], chunk_size=4)
    assert (result["status"] == "ok").sum() == len(good_ids(setup))
    table = pd.read_parquet(setup["root"] / "imaging.parquet").head(20)
    for path in sorted(folder.glob("*.joblib")):
        model = load_models([str(path)], tmp_path)[0]
        shap = explain_without_background(model.predictor, table)  # raises unless SHAP values add up to the margin
        prediction = model.predictor.predict_frame(table)
        served = (
            prediction["risk"]
            if "risk" in prediction
            else np.log(prediction["response_probability"] / (1 - prediction["response_probability"]))
        )
        np.testing.assert_allclose(shap.output, served, rtol=1e-5, atol=1e-5, err_msg=path.name)


def test_a_clinical_only_model_needs_no_image_columns(setup, tmp_path):
    clinical = setup["clinical"].drop(columns=[IMAGE, MASK])
    cohort = pd.concat(
        [
            clinical,
            clinical.iloc[[0]].assign(**{CEA: -5.0, PATIENT_ID: "BAD-cea"}),
            clinical.iloc[[1]],
            clinical.iloc[[2]].assign(**{PATIENT_ID: ""}),
            clinical.iloc[[3]].assign(**{PATIENT_ID: "NA"}),
        ],
        ignore_index=True,
    )
    path = tmp_path / "clinical.csv"
    cohort.to_csv(path, index=False)
    result = predict(setup, path, tmp_path / "out", models=[str(setup["models"]["clinical"])], chunk_size=3)
    assert result["status"].tolist() == [
        "ok",
        DUPLICATE_ID,
        "ok",
        "ok",
        "out_of_range",
        DUPLICATE_ID,
        "missing_patient_id",
        "ok",
    ]
    assert result[PATIENT_ID].tolist() == [*cohort[PATIENT_ID].iloc[:6], "", "NA"]  # "NA" is an identifier
    assert result.loc[result["status"] == "ok", ["risk", "response_probability"]].notna().all().all()
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert not any(m["uses_images"] for m in summary["models"])
    with pytest.raises(ValueError, match="no image and mask column.*imaging features"):
        predict(setup, path, tmp_path / "out2")


def test_a_mapped_sheet_is_predicted_with_its_identifiers_unchanged(setup, tmp_path):
    from tests.conftest import REPO

    sheet = REPO / "tests" / "data" / "tcia_clinical_sample.csv"
    result = predict(
        setup,
        sheet,
        tmp_path / "out",
        models=[str(setup["models"]["clinical"])],
        mapping=REPO / "configs" / "mappings" / "tcia_crlm.yaml",
    )
    raw = pd.read_csv(sheet, dtype=str, keep_default_na=False)
    assert result[PATIENT_ID].tolist() == raw["Patient-ID"].tolist()
    assert (result["status"] == "ok").all() and result[["risk", "response_probability"]].notna().all().all()
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    recurrence = next(v for k, v in summary["absent_columns"].items() if k.startswith("recurrence/"))
    assert "n_liver_lesions" in recurrence  # TCIA has no lesion count


def test_registry_models_give_the_same_numbers_as_the_models_folder(setup, mixed, tmp_path, monkeypatch):
    import joblib
    import mlflow

    from models.serving import PrognosisModel
    from pipeline import tracking

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').as_posix()}")
    monkeypatch.chdir(tmp_path)
    tracking.configure(tmp_path)
    table = pd.read_parquet(setup["root"] / "imaging.parquet")
    chosen = {m.task: m.name for m in load_models([str(setup["models"]["imaging"])], tmp_path)}  # as the folder
    with mlflow.start_run():
        for task, registered, alias in (
            (training.RECURRENCE, "crlm-recurrence", "champion"),
            (training.RESPONSE, "crlm-response", "candidate"),
        ):
            predictor = joblib.load(setup["models"]["imaging"] / f"{task}_{chosen[task]}.joblib")
            example = table.head(5)[[PATIENT_ID, *predictor.feature_columns]]
            example = example.astype(
                {c: float for c in predictor.feature_columns if pd.api.types.is_integer_dtype(example[c])}
            )
            tracking.log_pyfunc_model(PrognosisModel(predictor), "model", example, registered, alias=alias)
    result = predict(
        setup,
        mixed["cohort"],
        tmp_path / "out",
        repo_root=tmp_path,
        chunk_size=5,
        models=["models:/crlm-recurrence@champion", "models:/crlm-response@candidate"],
    )
    assert result["recurrence_model_version"].dropna().unique().tolist() == ["crlm-recurrence v1 (@champion)"]
    local = mixed["result"]
    assert result["status"].tolist() == local["status"].tolist()
    pd.testing.assert_frame_equal(result[NUMBERS], local[NUMBERS], check_exact=False, rtol=TOLERANCE, atol=TOLERANCE)


def test_explanation_file_names_are_safe_and_distinct():
    names = [explanation_file(p) for p in ("B5-0001", NON_ASCII_ID, "a/b", "a_b", "..", "")]
    assert names[0] == "B5-0001.json"
    assert len(set(names)) == len(names)
    assert all(n.isascii() and "/" not in n and not n.startswith(".") for n in names)


def test_validate_featurize_and_predict_agree_on_usable_patients(setup, tmp_path, capsys):
    """Issue 10 item 4: one bad cell costs one patient, in every command alike; headers are
    matched ignoring case and spaces in predict as in validate (item 5)."""
    from pipeline.cli import main

    clinical = setup["clinical"].drop(columns=[IMAGE, MASK]).astype(object)
    bad = [(CEA, "."), (CEA, "3,6"), ("largest_lesion_cm", "2021-03-04"), ("primary_node_positive", "2")]
    extra = pd.concat(
        [
            clinical.iloc[[i % len(clinical)]].assign(**{PATIENT_ID: f"BAD-{i}", column: value})
            for i, (column, value) in enumerate(bad)
        ],
        ignore_index=True,
    )
    cohort = pd.concat([clinical, extra], ignore_index=True).rename(columns={CEA: " CEA_NG_ML", "sex": "Sex"})
    path = tmp_path / "bad.csv"
    cohort.to_csv(path, index=False)

    assert main(["validate", "--cohort", str(path)]) == 0
    text = capsys.readouterr().out
    assert main(["featurize", "--cohort", str(path), "--no-images", "--out", str(tmp_path / "f.parquet")]) == 0
    featurized = pd.read_parquet(tmp_path / "f.parquet")
    predicted = predict(setup, path, tmp_path / "out", models=[str(setup["models"]["clinical"])], chunk_size=3)

    ids = cohort[PATIENT_ID].tolist()
    assert featurized[PATIENT_ID].tolist() == ids and predicted[PATIENT_ID].tolist() == ids
    usable_featurize = (featurized["status"] == "ok").tolist()
    usable_predict = (predicted["status"] == "ok").tolist()
    assert usable_featurize == usable_predict == [True] * len(clinical) + [False] * len(bad)
    for i, (column, value) in enumerate(bad):
        row = len(clinical) + i + 1
        said = f"patient BAD-{i} (row {row}): {column} = "
        assert said in text and said in featurized.at[row - 1, "reason"] and said in predicted.at[row - 1, "reason"]
        assert repr(value) in predicted.at[row - 1, "reason"] or value in predicted.at[row - 1, "reason"]
    assert predicted.loc[: len(clinical) - 1, "risk"].notna().all()


# ----------------------------------------------------------------------------- extraction settings (issue 11)


@pytest.fixture(scope="module")
def remembering(setup, labels, tmp_path_factory) -> Path:
    """The imaging models folder with the settings record crlm train copies next to the models."""
    folder = tmp_path_factory.mktemp("remembering") / "models"
    shutil.copytree(setup["models"]["imaging"], folder)
    options = extraction.CaseOptions(radiomics.ExtractionSettings(LIGHT_RADIOMICS, CROP_MARGIN_MM), labels)
    table = pd.DataFrame({"x": [1.0]})
    extraction.write_table_with_record(
        table, folder.parent / "features.parquet", extraction.settings_record(options, AGGREGATION)
    )
    pd.testing.assert_frame_equal(pd.read_parquet(folder.parent / "features.parquet"), table)
    assert extraction.copy_record_to_models(folder.parent / "features.parquet", folder) is not None
    return folder


def test_predict_uses_the_models_extraction_settings_by_default(setup, remembering, tmp_path):
    cohort = setup["phantoms"] / synthetic.CLINICAL_FILE
    explicit = predict(setup, cohort, tmp_path / "explicit", models=[str(remembering)])
    by_default = run_predict(
        cohort, [str(remembering)], tmp_path / "default", progress=False, cache=setup["root"] / "cache"
    )  # no --params/--config: the model's
    pd.testing.assert_frame_equal(by_default, explicit)
    assert (by_default["status"] == "ok").all()


def test_predict_refuses_another_bin_width_naming_it_unless_told(setup, remembering, tmp_path, capsys):
    """Issue 11, row 8: --params with another bin width was accepted and moved a patient's risk group."""
    cohort = setup["phantoms"] / synthetic.CLINICAL_FILE
    other = json.loads(json.dumps(LIGHT_RADIOMICS))
    other["setting"]["binWidth"] = 50
    params = tmp_path / "radiomics.yaml"
    params.write_text(yaml.safe_dump(other))
    with pytest.raises(ValueError, match=r"radiomics\.setting\.binWidth: model 25, given 50"):
        run_predict(
            cohort,
            [str(remembering)],
            tmp_path / "refused",
            progress=False,
            radiomics_params=params,
            cache=setup["root"] / "cache",
        )
    assert not (tmp_path / "refused" / PREDICTIONS_FILE).exists()
    result = run_predict(
        cohort,
        [str(remembering)],
        tmp_path / "allowed",
        progress=False,
        radiomics_params=params,
        cache=setup["root"] / "cache",
        allow_different_settings=True,
    )
    assert (result["status"] == "ok").all()
    assert "binWidth differs from the model's (25): using 50" in capsys.readouterr().out


def test_models_with_different_extraction_settings_are_not_mixed(setup, remembering, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(remembering, other)
    record = json.loads((other / extraction.SETTINGS_FILE).read_text())
    record["crop_margin_mm"], record[extraction.SETTINGS_HASH] = 20.0, "another"
    (other / extraction.SETTINGS_FILE).write_text(json.dumps(record))
    models = [str(remembering / "recurrence_coxnet.joblib"), str(other / "response_logistic.joblib")]
    with pytest.raises(ValueError, match="different extraction settings"):
        run_predict(setup["phantoms"] / synthetic.CLINICAL_FILE, models, tmp_path / "out", progress=False)


def _reduced_and_full(cohort, folder, tmp_path, radiomics_params, extraction_config, monkeypatch):
    """``crlm predict`` with the reduced extraction (what the models use) and with the full one
    (``options_for_columns`` switched off), each with its own cold cache."""

    def run(out: str, cache: str) -> pd.DataFrame:
        return run_predict(
            cohort,
            [str(folder)],
            tmp_path / out,
            progress=False,
            cache=tmp_path / cache,
            radiomics_params=radiomics_params,
            extraction_config=extraction_config,
        )

    subset = run("subset", "c1")
    monkeypatch.setattr(extraction, "options_for_columns", lambda options, columns: options)
    everything = run("full", "c2")
    monkeypatch.undo()
    return subset, everything


def test_predict_extracts_only_what_the_models_use_with_the_same_predictions(
    setup, mixed, labels, tmp_path, monkeypatch
):
    """Issue 14: predict computes only the image types and feature classes the models' inputs
    come from; the predictions, statuses and reasons are those of the full extraction, and the
    reduced extraction's cache entries never stand in for a full one."""
    root = setup["root"]
    table = pd.read_parquet(root / "imaging.parquet")
    table.drop(columns=[c for c in table if "_glcm_" in c]).to_parquet(tmp_path / "no_glcm.parquet")
    folder = tmp_path / "models_no_glcm"  # a model whose inputs need no GLCM
    run_train(
        tmp_path / "no_glcm.parquet", tmp_path / "train", folder, root / "params.yaml", training.TASKS, track=False
    )
    loaded = load_models([str(folder)], root)
    inputs = [c for m in loaded for c in m.feature_columns if c.startswith("rad_")]
    columns = [c for m in loaded for c in used_columns(m.predictor.pipeline, m.feature_columns)]
    assert 0 < len([c for c in columns if c.startswith("rad_")]) < len(inputs)  # selection inside the pipeline
    full = extraction.CaseOptions(radiomics.ExtractionSettings(LIGHT_RADIOMICS, CROP_MARGIN_MM), labels)
    reduced = extraction.options_for_columns(full, columns)
    used = {c.split("__", 1)[1].rsplit("_", 2)[1] for c in columns if c.startswith("rad_")}
    assert set(reduced.settings.radiomics["featureClass"]) == used and "glcm" not in used
    assert reduced.digest() != full.digest()

    subset, everything = _reduced_and_full(
        mixed["cohort"], folder, tmp_path, root / "radiomics.yaml", root / "extraction.yaml", monkeypatch
    )
    pd.testing.assert_frame_equal(subset, everything, check_exact=False, rtol=TOLERANCE, atol=TOLERANCE)
    assert (subset["status"] == "ok").sum() >= N_PHANTOMS

    cases = extraction.read_manifest(setup["phantoms"] / synthetic.CLINICAL_FILE)
    lesions, report = extraction.extract_cohort(cases, full, tmp_path / "c1", progress=False)
    assert not report[extraction.CACHED].any()  # the reduced entries were not taken for a full extraction
    fresh, _ = extraction.extract_cohort(cases, full, None, progress=False)
    pd.testing.assert_frame_equal(lesions, fresh)
    assert any("_glcm_" in c for c in lesions) and not any(
        "_glcm_" in c for c in extraction.extract_cohort(cases, reduced, None, progress=False)[0]
    )


# Original, two LoG sigmas and the eight wavelet sub-bands, four classes: what a realistic model mixes.
RICH_RADIOMICS = {
    "setting": dict(LIGHT_RADIOMICS["setting"]),
    "imageType": {"Original": {}, "LoG": {"sigma": [2.0, 4.0]}, "Wavelet": {}},
    "featureClass": {"shape": None, "firstorder": None, "glcm": None, "glszm": None},
}
RICH_FEATURES = [
    "original_shape_Sphericity",
    "original_glcm_Idm",
    "log-sigma-2-0-mm-3D_firstorder_Mean",
    "log-sigma-4-0-mm-3D_glszm_SmallAreaEmphasis",
    "wavelet-LHL_glcm_Contrast",
    "wavelet-HHH_firstorder_Entropy",
    "wavelet-LLL_glszm_ZoneEntropy",
]


def test_a_model_on_wavelet_and_log_features_predicts_the_same_from_each_images_own_classes(
    setup, mixed, world, labels, tmp_path, monkeypatch
):
    """Issue 14: a model whose inputs come from wavelet sub-bands, LoG sigmas and the original
    image, in four classes: predict computes on each derived image only the classes and
    features it uses, and gets the predictions of the full extraction (1e-12); the lesion
    features themselves equal the full extraction's exactly."""
    root = setup["root"]
    (tmp_path / "rich.yaml").write_text(yaml.safe_dump(RICH_RADIOMICS))
    full = extraction.CaseOptions(radiomics.ExtractionSettings(RICH_RADIOMICS, CROP_MARGIN_MM), labels)
    cases = extraction.read_manifest(setup["phantoms"] / synthetic.CLINICAL_FILE)
    lesions, report = extraction.extract_cohort(cases, full, None, progress=False)
    clinical = setup["clinical"]
    imaging = patient_feature_table(clinical, pd.Series("ok", index=clinical.index), lesions, report)
    columns = [f"{prefix}{name}" for name in RICH_FEATURES for prefix in ("rad_largest__", "rad_vwmean__")]
    assert all(c in imaging for c in columns)
    train, _ = synthesis.simulate_cohort(N_TRAIN, seed=41, site="A", world=world)
    table = patient_feature_table(train, pd.Series("ok", index=train.index))
    rng = np.random.default_rng(5)  # independent columns, on each feature's own scale
    values = {c: imaging[c].abs().mean() * rng.lognormal(0.0, 0.5, N_TRAIN) for c in columns}
    pd.concat([table, pd.DataFrame(values)], axis=1).to_parquet(tmp_path / "rich.parquet")
    folder = tmp_path / "models_rich"
    run_train(tmp_path / "rich.parquet", tmp_path / "train", folder, root / "params.yaml", training.TASKS, track=False)
    loaded = load_models([str(folder)], root)
    used = [c for m in loaded for c in used_columns(m.predictor.pipeline, m.feature_columns)]
    names = sorted({c.split("__", 1)[1] for c in used if c.startswith("rad_")})
    assert any(n.startswith("wavelet-") for n in names) and any(n.startswith("log-sigma-") for n in names)
    assert len({n.rsplit("_", 2)[1] for n in names}) >= 3
    reduced = extraction.options_for_columns(full, used)
    assert reduced.settings.features == tuple(names)

    subset, everything = _reduced_and_full(
        mixed["cohort"], folder, tmp_path, tmp_path / "rich.yaml", root / "extraction.yaml", monkeypatch
    )
    pd.testing.assert_frame_equal(subset, everything, check_exact=False, rtol=TOLERANCE, atol=TOLERANCE)
    assert (subset["status"] == "ok").sum() >= N_PHANTOMS

    few, _ = extraction.extract_cohort(cases, reduced, None, progress=False)
    assert extraction.lesion_feature_columns(few) == [c for c in lesions if c in names]  # nothing else computed
    assert len(few) == len(lesions) >= N_PHANTOMS
    pd.testing.assert_frame_equal(few[names], lesions[names], check_exact=True)

    # a case already extracted in full (crlm extract, then crlm predict on the same cohort) is
    # served from that cache entry: nothing recomputed, the same values
    extraction.extract_cohort(cases, full, tmp_path / "shared", progress=False)
    served, served_report = extraction.extract_cohort(cases, reduced, tmp_path / "shared", progress=False)
    assert served_report[extraction.CACHED].all()
    pd.testing.assert_frame_equal(served[names], few[names], check_exact=True)
    again = run_predict(
        mixed["cohort"],
        [str(folder)],
        tmp_path / "served",
        progress=False,
        cache=tmp_path / "shared",
        radiomics_params=tmp_path / "rich.yaml",
        extraction_config=root / "extraction.yaml",
    )
    pd.testing.assert_frame_equal(again, subset, check_exact=False, rtol=TOLERANCE, atol=TOLERANCE)


def test_novelty_is_in_predictions_and_explanations_and_an_old_models_folder_still_predicts(setup, tmp_path, capsys):
    """Issue 13 item 5: per task ``<task>_novelty`` and ``<task>_out_of_distribution`` in predictions.csv and
    in each explanation JSON; a models folder written before novelty existed predicts the same numbers with
    the novelty columns empty and a note (summary.json, the explanation, the console)."""
    import shutil

    import joblib

    from models.predictor import NO_NOVELTY_MODEL, novelty_column

    clinical = setup["clinical"].drop(columns=[IMAGE, MASK])
    path = tmp_path / "clinical.csv"
    clinical.to_csv(path, index=False)
    models = setup["models"]["clinical"]
    new = predict(setup, path, tmp_path / "new", models=[str(models)])
    for task in ("recurrence", "response"):
        assert new[novelty_column(task, "novelty")].notna().all()
        assert new[novelty_column(task, "out_of_distribution")].isin([True, False]).all()
    document = json.loads((tmp_path / "new" / new["explanation"].iloc[0]).read_text())
    assert all(m["novelty"] is not None and m["novelty_note"] is None for m in document["models"])
    assert document["models"][0]["novelty"] == pytest.approx(
        new[novelty_column(document["models"][0]["task"], "novelty")].iloc[0]
    )

    old = tmp_path / "old_models"
    shutil.copytree(models, old)
    for file in old.glob("*.joblib"):
        predictor = joblib.load(file)
        predictor.__dict__.pop("novelty", None)  # as pickled before the field existed
        joblib.dump(predictor, file)
    result = predict(setup, path, tmp_path / "old", models=[str(old)])
    for task in ("recurrence", "response"):
        assert result[novelty_column(task, "novelty")].isna().all()
        assert result[novelty_column(task, "out_of_distribution")].isna().all()
    np.testing.assert_allclose(result["risk"], new["risk"], rtol=1e-12)
    summary = json.loads((tmp_path / "old" / SUMMARY_FILE).read_text())
    assert set(summary["novelty"].values()) == {NO_NOVELTY_MODEL}
    document = json.loads((tmp_path / "old" / result["explanation"].iloc[0]).read_text())
    assert all(m["novelty"] is None and m["novelty_note"] == NO_NOVELTY_MODEL for m in document["models"])
    assert "no novelty score or out_of_distribution flag" in capsys.readouterr().out
