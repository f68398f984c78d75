"""crlm report: one self-contained, escaped HTML file; missing optional inputs say so."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from pipeline import report
from pipeline.report import PNG_SIGNATURE, REAL_LABEL, SYNTHETIC_LABEL, run_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_TIMEOUT_S = 60
NON_ASCII_ID = "Zoë-Łódź-001"
DANGEROUS_COLUMN = "<script>alert(1)</script>"
DANGEROUS_REASON = "mask <script>alert('x')</script> & more"


def _metric(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "ci_low": low, "ci_high": high}


METRICS = {
    "recurrence": {
        "coxnet": {
            "c_index": _metric(0.66, 0.61, 0.71),
            "ibs": _metric(0.181, 0.162, 0.2),
            "delta_c_vs_fong": _metric(0.07, 0.012, 0.128),
        },
        "fong": {"c_index": _metric(0.59, 0.54, 0.64), "ibs": _metric(0.2, 0.18, 0.22)},
        "oracle": {
            "c_index": _metric(0.70, 0.66, 0.74),
            "ibs": _metric(0.17, 0.15, 0.19),
            "delta_c_vs_fong": _metric(0.11, 0.07, 0.15),
        },
    },
}
CV = {
    "recurrence": {
        "best": "coxnet",
        "params": {"coxnet": {"alphas": [0.05]}},
        "cv": {"coxnet": 0.64},
        "n_features_in": 120,
    }
}


def _png(path: Path) -> None:
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1], [0, 1])
    fig.savefig(path, dpi=20)


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    train = tmp_path / "train"
    (train / "plots").mkdir(parents=True)
    (train / "metrics.json").write_text(json.dumps(METRICS))
    (train / "cv.json").write_text(json.dumps(CV))
    for name in ("km_recurrence_model", "td_auc_recurrence"):
        _png(train / "plots" / f"{name}.png")
    features = tmp_path / "features.parquet"
    pd.DataFrame(
        {
            "patient_id": [NON_ASCII_ID, "A7-0002", "A7-0003", "A7-0004"],
            "status": ["ok", "ok", "empty_mask", "ok"],
            "reason": ["", "", DANGEROUS_REASON, ""],
            "site": ["A", "A", "A", "B"],
            "age_years": [61.0, 70.0, 55.0, 64.0],
            "sex": ["male", "female", "male", "male"],
            "primary_node_positive": [1, 0, 1, 1],
            "recurrence_event": [1, 0, 1, 0],
            "recurrence_months": [10.0, 40.0, 5.0, 30.0],
            "recist_response": ["PR", "SD", "CR", "PD"],
            "fong_risk_group": ["low", "high", "low", None],
            DANGEROUS_COLUMN: [1, 2, 3, 4],
        }
    ).to_parquet(features)
    truth = tmp_path / "truth.csv"
    truth.write_text("patient_id,recurrence_lp\nA7-0002,0.1\n")
    return {"train": train, "features": features, "truth": truth, "root": tmp_path / "repo"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


def _build(inputs: dict[str, Path], tmp_path: Path, **kwargs) -> str:
    options = {
        "features": inputs["features"],
        "truth": inputs["truth"],
        "repo_root": inputs["root"],
        "track": False,
        **kwargs,
    }
    path = run_report(inputs["train"], tmp_path / "out", **options)
    assert path == tmp_path / "out" / report.REPORT_NAME
    return path.read_text(encoding="utf-8")


def test_report_is_self_contained_with_every_png_embedded(inputs, tmp_path):
    text = _build(inputs, tmp_path)
    tags = _tags(text)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", text, re.IGNORECASE)
    assert all(t != "script" for t, _ in tags) and "<script" not in text.lower()
    assert not any(t == "link" for t, _ in tags), "no external stylesheet"
    images = [attrs.get("src") or "" for t, attrs in tags if t == "img"]
    assert len(images) == len(list((inputs["train"] / "plots").glob("*.png")))
    prefix = "data:image/png;base64,"
    for src in images:
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :], validate=True).startswith(PNG_SIGNATURE)


def test_user_data_is_escaped(inputs, tmp_path):
    text = _build(inputs, tmp_path)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the column name, listed as text
    # the status reason (Jinja2/markupsafe spell the apostrophe &#39;, html.escape spelled it &#x27;)
    assert "mask &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in text
    assert NON_ASCII_ID not in text  # an ok patient is counted, not listed
    assert "A7-0003" in text  # a failed patient is named


def test_non_ascii_patient_id_survives(inputs, tmp_path):
    table = pd.read_parquet(inputs["features"])
    table.loc[0, "status"] = "unreadable"
    table.to_parquet(inputs["features"])
    text = _build(inputs, tmp_path)
    assert NON_ASCII_ID in text
    assert '<meta charset="utf-8">' in text


def test_synthetic_label_only_with_truth(inputs, tmp_path):
    with_truth = _build(inputs, tmp_path)
    assert SYNTHETIC_LABEL in with_truth
    without = _build(inputs, tmp_path, truth=None)
    assert SYNTHETIC_LABEL not in without and REAL_LABEL in without
    assert "oracle row" in without  # the oracle betrays a simulated cohort: the report says to check


def test_synthetic_label_from_features_column(inputs, tmp_path):
    table = pd.read_parquet(inputs["features"])
    table[report.DATA_KIND_COLUMN] = "synthetic"
    table.to_parquet(inputs["features"])
    assert SYNTHETIC_LABEL in _build(inputs, tmp_path, truth=None)


def test_metrics_appear_with_cis_delta_and_best(inputs, tmp_path):
    text = _build(inputs, tmp_path)
    assert "0.660" in text and "(0.610 to 0.710)" in text  # coxnet C-index
    assert "0.181" in text and "(0.162 to 0.200)" in text  # coxnet IBS
    assert "+0.070" in text and "(+0.012 to +0.128)" in text  # paired delta vs Fong
    assert re.search(r'<tr class="best"><td>coxnet \(best\)', text)
    assert re.search(r'<tr class="oracle"><td>oracle</td><td>oracle', text)
    assert re.search(r'<tr class="baseline"><td>fong</td><td>baseline', text)


def test_oracle_gain_share(inputs, tmp_path):
    assert report.oracle_gain_share(0.66, 0.70) == pytest.approx(0.8)
    assert report.oracle_gain_share(0.60, 0.50) is None  # an oracle at chance gives no share
    assert report.oracle_gain_share(float("nan"), 0.7) is None
    text = _build(inputs, tmp_path)
    coxnet_row = re.search(r'<tr class="best">.*?</tr>', text).group(0)
    assert '<td class="num">80%</td>' in coxnet_row
    fong_row = re.search(r'<tr class="baseline"><td>fong</td>.*?</tr>', text).group(0)
    assert "45%" in fong_row  # (0.59 - 0.5) / 0.2


def test_missing_optional_inputs_say_not_available(inputs, tmp_path):
    text = _build(inputs, tmp_path, external_dir=tmp_path / "nowhere", explain_dir=tmp_path / "no_explain")
    external = re.search(r'<section id="external">.*?</section>', text, re.S).group(0)
    explain = re.search(r'<section id="explain">.*?</section>', text, re.S).group(0)
    extraction = re.search(r'<section id="extraction">.*?</section>', text, re.S).group(0)
    assert "not available" in external and "nowhere" in external
    assert "not available" in explain and "not run" in explain
    assert "not available" in extraction
    bare = run_report(inputs["train"], tmp_path / "bare.html", repo_root=inputs["root"], track=False)
    bare_text = bare.read_text(encoding="utf-8")
    assert bare_text.count('class="na"') >= 4  # cohort, extraction, explain, external, params
    assert "Research software, not for clinical use" in bare_text


def test_missing_metrics_json_names_file_and_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics\.json.*crlm train"):
        run_report(tmp_path / "empty", tmp_path / "out", track=False)
    assert not (tmp_path / "out").exists()


def test_external_side_by_side_and_partial_explanations(inputs, tmp_path):
    external = tmp_path / "external"
    external.mkdir()
    ext = {
        "recurrence": {"coxnet": {"c_index": _metric(0.62, 0.55, 0.69)}, "fong": {"c_index": _metric(0.57, 0.5, 0.64)}}
    }
    (external / "metrics.json").write_text(json.dumps(ext))
    explain = tmp_path / "explain"
    full, partial = explain / "recurrence" / "coxnet", explain / "response" / "logistic"
    full.mkdir(parents=True)
    partial.mkdir(parents=True)
    _png(full / "bar.png")
    _png(full / "beeswarm.png")
    (full / "attribution_share.json").write_text(json.dumps({"clinical": 0.4, "radiomics": 0.6}))
    pd.DataFrame({"feature": ["cea_ng_ml", "rad_largest__x"], "mean_abs_shap": [0.3, 0.2]}).to_csv(
        full / "importance.csv", index=False
    )
    (partial / "attribution_share.json").write_text("{broken")
    text = _build(inputs, tmp_path, external_dir=external, explain_dir=explain)
    section = re.search(r'<section id="external">.*?</section>', text, re.S).group(0)
    assert "(0.610 to 0.710)" in section and "(0.550 to 0.690)" in section and "-0.040" in section
    shap = re.search(r'<section id="explain">.*?</section>', text, re.S).group(0)
    assert "60.0%" in shap and "rad_largest__x" in shap
    assert "could not be read" in shap and "bar.png: not available" in shap
    images = [a for t, a in _tags(text) if t == "img"]
    assert len(images) == 2 + 2  # 2 training plots + bar and beeswarm


def test_out_may_name_the_html_file(inputs, tmp_path):
    path = run_report(inputs["train"], tmp_path / "nested" / "run.html", repo_root=inputs["root"], track=False)
    assert path == tmp_path / "nested" / "run.html" and path.stat().st_size > 0


def test_tracking_without_a_store_skips_with_a_note(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_report(inputs["train"], tmp_path / "out", repo_root=inputs["root"], track=True)
    assert "not logged" in capsys.readouterr().out
    assert not (inputs["root"] / "mlruns").exists()


def test_report_is_logged_to_the_latest_train_parent_run(inputs, tmp_path, monkeypatch):
    import mlflow

    from pipeline import tracking

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    root = inputs["root"]
    root.mkdir()
    tracking.configure(root)
    try:
        run_ids = []
        for _ in range(2):
            with tracking.pipeline_run(report.TRAIN_RUN_NAME, {}, {}, repo_root=root) as parent:
                with tracking.model_run("recurrence/coxnet"):
                    pass
                run_ids.append(parent.info.run_id)
        with tracking.pipeline_run("other", {}, {}, repo_root=root):
            pass
        path = run_report(inputs["train"], tmp_path / "out", repo_root=root, track=True)
        logged = mlflow.MlflowClient().list_artifacts(run_ids[-1], report.MLFLOW_ARTIFACT_DIR)
        assert [Path(a.path).name for a in logged] == [path.name]
        assert not mlflow.MlflowClient().list_artifacts(run_ids[0], report.MLFLOW_ARTIFACT_DIR)
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


class _Text(HTMLParser):
    """What a reader sees: text with entities decoded, and every attribute value decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [v for _, v in attrs if v is not None]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_markup_in_ids_notes_and_columns_is_escaped_once(inputs, tmp_path):
    patient = "P<script>&1"
    note = "k grid <script>alert(2)</script> & 'quotes' \"double\""
    literal = "already &amp; escaped &lt;b&gt;"  # must reach the reader unchanged, not decoded
    column = "<script>&col"
    model = "m&<script>"
    table = pd.read_parquet(inputs["features"])
    table.loc[1, ["patient_id", "status", "reason"]] = [patient, "unreadable", literal]
    table[column] = 1
    table.to_parquet(inputs["features"])
    metrics = {**METRICS, "notes": {"recurrence": {"adaptations": [note]}, "skipped_tasks": {"response": note}}}
    (inputs["train"] / "metrics.json").write_text(json.dumps(metrics))
    shap = tmp_path / "explain" / "recurrence" / model
    shap.mkdir(parents=True)
    _png(shap / "bar.png")
    text = _build(inputs, tmp_path, explain_dir=tmp_path / "explain")

    assert "<script" not in text.lower()
    assert not any(t == "script" for t, _ in _tags(text))
    assert "P&lt;script&gt;&amp;1" in text
    assert "&lt;script&gt;&amp;col" in text
    assert "already &amp;amp; escaped &amp;lt;b&amp;gt;" in text  # the literal entity text, escaped once
    assert "&amp;lt;script" not in text and "&amp;amp;1" not in text  # nothing escaped twice
    assert '<span class="ci">(0.610 to 0.710)</span>' in text  # the template's own markup is markup
    reader = _Text()
    reader.feed(text)
    seen = "".join(reader.text)
    for value in (patient, note, literal, column, model):
        assert value in seen, value  # decoded once, the reader sees the data as written
    assert f"{model}: mean |SHAP| per feature (global importance)" in reader.attributes  # the img alt


def test_templates_are_package_data():
    import fnmatch
    import tomllib

    root = Path(report.__file__).resolve().parent
    patterns = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    templates = [p.relative_to(root).as_posix() for p in (root / "templates").iterdir()]
    assert report.TEMPLATE in [Path(t).name for t in templates]
    for name in templates:  # a wheel (non-editable install) ships only what these patterns match
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns["pipeline"]), name


def test_reverse_kaplan_meier_median_follow_up_on_hand_worked_examples():
    # censored at 1, 3, 5 (events at 2, 4, 6): reverse KM 5/6, then x 3/4 = 0.625, then x 1/2 = 0.3125 at 5
    time = np.arange(1.0, 7.0)
    assert report.reverse_km_median(time, np.array([0, 1, 0, 1, 0, 1], bool)) == 5.0
    # a tie: at 2 one event and one censoring; the event leaves the risk set first (scikit-survival,
    # as for censoring weights): 1 - 1/4 = 0.75 at 2, x (1 - 1/3) = 0.5 at 3
    tied = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0])
    assert report.reverse_km_median(tied, np.array([1, 0, 1, 0, 1, 0], bool)) == 3.0
    assert report.reverse_km_median(time, np.ones(6, bool)) is None  # nobody censored: not reached


def test_novelty_flag_rates_and_flagged_vs_unflagged_metrics_are_shown_with_their_data(inputs, tmp_path):
    """Issue 13 item 5: held-out (training cohort) vs external flag rates; a group too small for a metric
    shows the note, never a number."""
    train = json.loads((inputs["train"] / "metrics.json").read_text())
    train.setdefault("notes", {}).setdefault("recurrence", {})["novelty"] = {
        "coxnet": {"value": 4 / 72, "n_flagged": 4, "n_scored": 72}
    }
    (inputs["train"] / "metrics.json").write_text(json.dumps(train))
    external = tmp_path / "external"
    external.mkdir()
    too_few = "too few to estimate (3 patients, 1 events; at least 10 and 3 needed)"
    ext = {
        "recurrence": {"coxnet": {"c_index": _metric(0.62, 0.55, 0.69)}},
        "notes": {
            "recurrence": {
                "novelty": {
                    "coxnet": {
                        "value": 3 / 100,
                        "n_flagged": 3,
                        "n_scored": 100,
                        "by_flag": {
                            "flagged": {"metric": "c_index", "n": 3, "value": None, "note": too_few},
                            "unflagged": {"metric": "c_index", "n": 97, "value": 0.6312, "note": None},
                        },
                    }
                }
            }
        },
    }
    (external / "metrics.json").write_text(json.dumps(ext))
    text = _build(inputs, tmp_path, external_dir=external)
    section = re.search(r'<section id="external">.*?</section>', text, re.S).group(0)
    assert "Novelty flag" in section and "held-out split, training cohort" in section
    assert "5.6% (4/72)" in section and "3.0% (3/100)" in section
    assert too_few in section and "0.631 (n = 97)" in section


def test_icc_distribution_is_embedded_when_icc_csv_is_given(inputs, tmp_path):
    rng = np.random.default_rng(0)
    names = [
        f"rad_largest__{t}_{c}_F{i}"
        for t in ("original", "wavelet-LLH")
        for c in ("glcm", "firstorder")
        for i in range(5)
    ]
    icc = pd.DataFrame(
        {
            "feature": [*names, "patient_liver_volume_ml"],
            "icc": [*rng.uniform(0, 1, len(names)), 0.99],
            "n_patients": 40,
            "n_perturbations": 4,
            "image_type": [n.split("__")[1].split("_")[0] for n in names] + ["morphology"],
            "feature_class": [n.split("__")[1].split("_")[1] for n in names] + ["morphology"],
        }
    )
    icc.to_csv(tmp_path / "icc.csv", index=False)
    section = re.search(
        r'<section id="robustness">.*?</section>', _build(inputs, tmp_path, icc=tmp_path / "icc.csv"), re.S
    )
    images = [attrs.get("src") or "" for t, attrs in _tags(section.group(0)) if t == "img"]
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")
    # this run's models (recurrence only) were trained without robustness, and it says so
    assert "<li>recurrence: no robustness (every imaging column, no copies)</li>" in section.group(0)
    assert "<li>response" not in section.group(0) and "solid:" not in section.group(0)
    filtered = {
        **METRICS,
        "notes": {
            "robustness": {
                "recurrence": {"icc_filter": {"threshold": 0.5, "applied": True, "note": "ICC filter: kept 9 of 20"}}
            }
        },
    }
    (inputs["train"] / "metrics.json").write_text(json.dumps(filtered))
    section = re.search(
        r'<section id="robustness">.*?</section>', _build(inputs, tmp_path, icc=tmp_path / "icc.csv"), re.S
    )
    assert "<li>recurrence: ICC filter: kept 9 of 20</li>" in section.group(0)
    assert "solid: the ICC filter of recurrence." in section.group(0)
    icc["icc"] = np.nan  # too few patients: said, not drawn
    icc.to_csv(tmp_path / "icc.csv", index=False)
    text = _build(inputs, tmp_path, icc=tmp_path / "icc.csv")
    section = re.search(r'<section id="robustness">.*?</section>', text, re.S).group(0)
    assert "no feature has an ICC" in section and "<img" not in section
    assert 'id="robustness"' not in _build(inputs, tmp_path)  # not given: no section


def test_the_report_says_per_task_what_train_robustness_did():
    """A per-task setting (what params.yaml applies since 2026-12-06): the filtered task names the
    columns kept, the one without a note says no robustness, a filter that could not apply and the
    copies say why and how many."""
    metrics = {
        "recurrence": {},
        "response": {},
        "notes": {
            "robustness": {
                "recurrence": {
                    "icc_threshold": 0.5,
                    "augment": False,
                    "icc_filter": {
                        "note": "ICC filter (ICC(1,1) >= 0.5, 58 patients): kept 1028 of 2267 imaging columns"
                    },
                }
            }
        },
    }
    assert report.robustness_settings(metrics) == [
        "recurrence: ICC filter (ICC(1,1) >= 0.5, 58 patients): kept 1028 of 2267 imaging columns",
        "response: no robustness (every imaging column, no copies)",
    ]
    metrics["notes"]["robustness"]["response"] = {
        "icc_filter": None,
        "icc_filter_note": "no imaging columns in the feature table: the ICC filter does not apply",
        "augmentation": {"rows_used": 240},
    }
    said = report.robustness_settings(metrics)[1]
    assert said == (
        "response: no imaging columns in the feature table: the ICC filter does not apply; "
        "240 perturbed copies of training patients as extra training rows"
    )
    site = {"rows_used": 840, "chain": "site", "fitted": {"rows": 836, "patients": 280, "of_training_patients": 280}}
    metrics["notes"]["robustness"]["response"] = {"augmentation": site}
    assert report.robustness_settings(metrics)[1] == (
        "response: 836 perturbed site-k copies of 280 of the task's 280 training patients as extra training rows"
    )
    assert report.robustness_settings({"recurrence": {}}) == [
        "recurrence: no robustness (every imaging column, no copies)"
    ]


def test_the_icc_plot_draws_each_applied_filter_once_per_threshold():
    from models.plots import icc_distribution

    icc = pd.DataFrame(
        {
            "icc": [0.2, 0.6, 0.95, 0.8],
            "feature_class": ["glcm", "glcm", "firstorder", "firstorder"],
            "image_type": "original",
        }
    )
    fig, data = icc_distribution(icc, "test", {"recurrence": 0.5, "response": 0.5})
    legend = fig.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["recurrence, response filter (ICC >= 0.5)"]
    assert set(data["group"]) == {"glcm", "firstorder", "original"}
    fig, _ = icc_distribution(icc, "test")
    assert fig.axes[0].get_legend() is None
