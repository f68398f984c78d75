"""Reference-tissue normalisation as a setting: validated in configs/extraction.yaml, carried into
the extraction options, and compared by ``crlm predict`` with the record a model was trained with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from features import extraction
from features.reference_tissue import ReferenceTissue
from features.settings import SettingsError
from pipeline.inputs import case_options, load_extraction_config
from pipeline.paths import DEFAULT_EXTRACTION, DEFAULT_LABELS, DEFAULT_RADIOMICS
from pipeline.predict import resolve_settings

ON = {"enabled": True, "erosion_mm": 4.0, "min_voxels": 200, "method": "subtract_median"}


def config_with(tmp_path: Path, block: dict | None) -> Path:
    data = yaml.safe_load(DEFAULT_EXTRACTION.read_text())
    data.pop("reference_tissue", None)
    if block is not None:
        data["reference_tissue"] = block
    path = tmp_path / "extraction.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_config_has_it_off_and_options_leave_it_out():
    assert load_extraction_config(DEFAULT_EXTRACTION).reference_tissue == ReferenceTissue()
    options, _ = case_options(DEFAULT_RADIOMICS, DEFAULT_EXTRACTION, DEFAULT_LABELS)
    assert options.reference_tissue is None


def test_an_enabled_block_reaches_the_options(tmp_path):
    options, _ = case_options(DEFAULT_RADIOMICS, config_with(tmp_path, ON), DEFAULT_LABELS)
    assert options.reference_tissue == ReferenceTissue(**ON)
    # a file written before the block existed reads as off
    assert case_options(DEFAULT_RADIOMICS, config_with(tmp_path, None), DEFAULT_LABELS)[0].reference_tissue is None


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"enabled": True, "erosion": 5.0}, "reference_tissue: unknown key 'erosion'; did you mean 'erosion_mm'?"),
        ({"method": "zscore"}, "reference_tissue.method: 'zscore' is not allowed"),
        ({"erosion_mm": -1.0}, "erosion_mm must be a finite distance >= 0"),
        ({"min_voxels": 0}, "min_voxels must be at least 1"),
        ({"enabled": "yes"}, "reference_tissue.enabled: expected true or false"),
    ],
)
def test_bad_blocks_are_errors_naming_file_and_key(tmp_path, block, message):
    path = config_with(tmp_path, block)
    with pytest.raises(SettingsError) as raised:
        load_extraction_config(path)
    assert str(path) in str(raised.value) and message in str(raised.value)


def model_record(reference: dict | None) -> dict:
    options, cfg = case_options(DEFAULT_RADIOMICS, DEFAULT_EXTRACTION, DEFAULT_LABELS)
    if reference is not None:
        options = extraction.options_from_record({**extraction.settings_record(options), "reference_tissue": reference})
    return json.loads(json.dumps(extraction.settings_record(options, cfg.aggregation)))


def test_predict_uses_the_models_reference_tissue_by_default():
    options, _, _ = resolve_settings(model_record(ON), None, None, None, None, None, None)
    assert options.reference_tissue == ReferenceTissue(**ON)
    options, _, _ = resolve_settings(model_record(None), None, None, None, None, None, None)
    assert options.reference_tissue is None


def test_predict_refuses_a_reference_tissue_the_model_was_not_trained_with(tmp_path):
    with pytest.raises(ValueError, match=r"reference_tissue\.enabled: model null, given true"):
        resolve_settings(model_record(None), None, config_with(tmp_path, ON), None, None, None, None)
    with pytest.raises(ValueError, match=r"reference_tissue\.erosion_mm: model 4\.0, given null"):
        resolve_settings(model_record(ON), None, DEFAULT_EXTRACTION, None, None, None, None)
    other = {**ON, "erosion_mm": 6.0}
    with pytest.raises(ValueError, match=r"reference_tissue\.erosion_mm: model 4\.0, given 6\.0"):
        resolve_settings(model_record(ON), None, config_with(tmp_path, other), None, None, None, None)
    # the same block as the model's is no difference
    options, _, _ = resolve_settings(model_record(ON), None, config_with(tmp_path, ON), None, None, None, None)
    assert options.reference_tissue == ReferenceTissue(**ON)


def test_allow_different_settings_predicts_with_the_given_block(tmp_path, capsys):
    options, _, _ = resolve_settings(
        model_record(None), None, config_with(tmp_path, ON), None, None, None, None, allow_different_settings=True
    )
    assert options.reference_tissue == ReferenceTissue(**ON)
    assert "reference_tissue.enabled differs" in capsys.readouterr().out
