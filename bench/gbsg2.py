"""The GBSG2 worked example measured: crlm's chosen model against a plain penalised Cox model.

GBSG2 (German Breast Cancer Study Group 2; scikit-survival's ``load_gbsg2``, n = 686,
recurrence-free survival, 8 covariates) is a real clinical-only cohort that no one here made.
This script runs the README's commands on it (validate, featurize --no-images, train --task
recurrence) in a scratch folder, then fits a plain penalised Cox model (scikit-survival's
``CoxPHSurvivalAnalysis``, ridge ``alpha`` chosen by 5-fold CV on the same training split) on the
same training patients and scores it on the same held-out patients. It prints both C-indices,
the paired bootstrap 95% CI of their difference, the same for runs with permuted outcomes
(whose CIs should cover 0.5, up to chance), and the wall time of each command. Not a test: it asserts nothing.

    .venv/bin/python bench/gbsg2.py [--bootstrap 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.datasets import load_gbsg2
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.machine_info import cpu_model  # noqa: E402

MAPPING = REPO / "configs" / "mappings" / "gbsg2.yaml"
DAYS_PER_MONTH = 30.4375


def write_gbsg2_csv(path: Path, permute_seed: int | None = None) -> Path:
    """GBSG2 as the CSV a user would have: one row per patient, the sheet's own column names."""
    X, y = load_gbsg2()
    sheet = X.copy()
    for column in sheet.columns:
        if sheet[column].dtype.name == "category":
            sheet[column] = sheet[column].astype(str)
    sheet.insert(0, "patient_id", [f"gbsg2-{i:03d}" for i in range(len(sheet))])
    sheet["time"], sheet["cens"] = y["time"], y["cens"].astype(int)
    if permute_seed is not None:  # outcomes shuffled as pairs: no covariate can predict them
        order = np.random.default_rng(permute_seed).permutation(len(sheet))
        sheet[["time", "cens"]] = sheet[["time", "cens"]].to_numpy()[order]
    sheet.to_csv(path, index=False)
    return path


def crlm(*args: str, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def plain_cox(features: pd.DataFrame, split: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge Cox on the eight covariates as the mapping gives them: alpha by 5-fold CV on the training split."""
    table = features.merge(split, on="patient_id")
    covariates = [
        "age_years",
        "tumour_size_mm",
        "positive_nodes",
        "progesterone_receptor",
        "estrogen_receptor",
        "tumour_grade",
        "postmenopausal",
        "hormone_therapy",
    ]  # configs/mappings/gbsg2.yaml
    X = table[covariates].astype(float)
    y = np.array(
        list(zip(table["recurrence_event"].astype(bool), table["recurrence_months"].astype(float), strict=True)),
        dtype=[("event", bool), ("time", float)],
    )
    train, test = (table["split"] == "train").to_numpy(), (table["split"] == "test").to_numpy()
    search = GridSearchCV(
        make_pipeline(StandardScaler(), CoxPHSurvivalAnalysis()),
        {"coxphsurvivalanalysis__alpha": [0.01, 0.1, 1.0, 10.0, 100.0]},
        cv=KFold(5, shuffle=True, random_state=seed),
    )
    search.fit(X[train], y[train])
    return (
        table.loc[test, "patient_id"].to_numpy(),
        search.predict(X[test]),
        float(search.best_params_["coxphsurvivalanalysis__alpha"]),
    )


def paired_bootstrap(event, time_, risk_a, risk_b, n: int, seed: int) -> tuple[float, float, float, float, float]:
    """C of a, C of b, difference a - b with its percentile 95% CI, and a's CI."""

    def c(risk, index):
        return concordance_index_censored(event[index], time_[index], risk[index])[0]

    everyone = np.arange(len(event))
    rng = np.random.default_rng(seed)
    diffs, a_values = [], []
    for _ in range(n):
        index = rng.integers(0, len(event), len(event))
        if not event[index].any():
            continue
        a_values.append(c(risk_a, index))
        diffs.append(a_values[-1] - c(risk_b, index))
    low, high = np.quantile(diffs, [0.025, 0.975])
    a_low, a_high = np.quantile(a_values, [0.025, 0.975])
    return c(risk_a, everyone), c(risk_b, everyone), float(low), float(high), (float(a_low), float(a_high))


def run(folder: Path, permute_seed: int | None, n_boot: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    sheet = write_gbsg2_csv(folder / "gbsg2.csv", permute_seed)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    seconds = {
        "validate": crlm("validate", "--cohort", str(sheet), "--mapping", str(MAPPING), cwd=folder),
        "featurize": crlm(
            "featurize",
            "--cohort",
            str(sheet),
            "--mapping",
            str(MAPPING),
            "--no-images",
            "--out",
            str(folder / "features.parquet"),
            cwd=folder,
        ),
        "train": crlm(
            "train",
            "--features",
            str(folder / "features.parquet"),
            "--out",
            str(folder / "train"),
            "--task",
            "recurrence",
            "--mapping",
            str(MAPPING),
            "--params",
            str(folder / "params.yaml"),
            "--no-tracking",
            cwd=folder,
        ),
    }
    features = pd.read_parquet(folder / "features.parquet")
    split = pd.read_csv(folder / "train" / "split.csv", dtype={"patient_id": str})
    chosen = json.loads((folder / "train" / "cv.json").read_text())["recurrence"]["best"]
    predictions = pd.read_csv(folder / "train" / "predictions_test.csv", dtype={"patient_id": str})
    ours = predictions.loc[(predictions["task"] == "recurrence") & (predictions["model"] == chosen)]
    ids, cox_risk, alpha = plain_cox(features, split, int(params["train"]["seed"]))
    test = features.set_index("patient_id").loc[ids]
    ours_risk = ours.set_index("patient_id").loc[ids, "prediction"].to_numpy(float)
    event, time_ = test["recurrence_event"].astype(bool).to_numpy(), test["recurrence_months"].astype(float).to_numpy()
    c_ours, c_cox, low, high, ci_ours = paired_bootstrap(event, time_, ours_risk, cox_risk, n_boot, seed=0)
    return {
        "chosen": chosen,
        "c_ours": c_ours,
        "ci_ours": ci_ours,
        "c_cox": c_cox,
        "alpha": alpha,
        "diff": c_ours - c_cox,
        "diff_ci": (low, high),
        "n_test": len(ids),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--permutations", type=int, default=4, help="runs with outcomes permuted (seeds 1..N)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crlm-gbsg2-") as scratch:
        root = args.keep or Path(scratch)
        real = run(root / "real", None, args.bootstrap)
        permuted = [run(root / f"permuted{seed}", seed, args.bootstrap) for seed in range(1, args.permutations + 1)]
    print(f"GBSG2 (scikit-survival), {dt.date.today()}, {cpu_model()}; held-out n = {real['n_test']}")
    print(f"{'run':<12} {'crlm model':<10} {'crlm C [95% CI]':<24} {'plain Cox C':<12} {'difference [95% CI]':<26}")
    rows = [("real", real), *((f"permuted {i}", r) for i, r in enumerate(permuted, start=1))]
    for name, r in rows:
        print(
            f"{name:<12} {r['chosen']:<10} {r['c_ours']:.3f} [{r['ci_ours'][0]:.3f}, {r['ci_ours'][1]:.3f}]"
            f"{'':<5} {r['c_cox']:.3f} (a={r['alpha']:g}) {r['diff']:+.3f} [{r['diff_ci'][0]:+.3f}, "
            f"{r['diff_ci'][1]:+.3f}]"
        )
    print("seconds (real run): " + ", ".join(f"{k} {v:.1f}" for k, v in real["seconds"].items()))


if __name__ == "__main__":
    main()
