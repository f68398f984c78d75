"""The ``crlm`` command line: one sub-command per pipeline stage (docs/design.md section 1).

Entry points read configuration files and pass plain objects to library functions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from features.schema import PERTURBATION_CHAINS
from pipeline.paths import (
    DEFAULT_EXTRACTION,
    DEFAULT_LABELS,
    DEFAULT_RADIOMICS,
    DEFAULT_ROBUSTNESS,
    DEFAULT_WORLD,
    REPO_ROOT,
)

# Relative paths, on the command line and in settings files, are relative to the working
# directory (where crlm or dvc runs; docs/settings.md): so under `dvc exp run --temp` a stage
# reads the experiment's params.yaml, not the workspace's.
DEFAULT_PARAMS = Path("params.yaml")
PARAMS_HELP = "params.yaml to read ({} blocks; default: params.yaml in the working directory)"
SCHEDULER_HELP = (
    "Dask scheduler to run the cases on, e.g. tcp://host:8786 (default: $DASK_SCHEDULER_ADDRESS, "
    "else local processes; 'local' forces local processes); see docs/cluster.md"
)

# Nothing in this project phones home (README "Privacy"): switch off library telemetry
# before any of those libraries is imported by a sub-command.
for _variable, _value in (("DVC_NO_ANALYTICS", "1"), ("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "1")):
    os.environ.setdefault(_variable, _value)


class _DeprecatedAlias(argparse.Action):
    """An old option name: still works, with a deprecation warning on stderr naming the new one."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            f"crlm: warning: {option_string} is deprecated here; use {self.new} (--params names "
            f"params.yaml in train, evaluate, explain and report)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def _jobs(value: str) -> int:
    jobs = int(value)
    if jobs == 0 or jobs < -1:
        raise argparse.ArgumentTypeError(f"--jobs must be a positive number or -1 (all cores), got {value}")
    return jobs


def _path_or_url(value: str) -> str | Path:
    """A local path, or an fsspec URL (``s3://...``, ``file:///...``) kept as text."""
    return value if "://" in value else Path(value)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return number


def cmd_synthesize(args: argparse.Namespace) -> int:
    from pipeline.cohort import write_cohort
    from pipeline.execution import resolve_scheduler
    from pipeline.world import load_labels, load_world

    world = load_world(args.world)
    labels = load_labels(args.labels)
    start = time.perf_counter()
    clinical = write_cohort(
        args.out,
        n=args.n,
        seed=args.seed,
        site=args.site,
        world=world,
        labels=labels,
        images=not args.no_images,
        jobs=args.jobs,
        scheduler=resolve_scheduler(args.scheduler),
    )
    seconds = time.perf_counter() - start
    print(
        f"wrote {len(clinical)} synthetic patients (site {args.site}, seed {args.seed}) "
        f"to {args.out} in {seconds:.1f} s"
    )
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from pipeline.execution import resolve_scheduler
    from pipeline.extract import run_extract

    run_extract(
        args.cohort,
        args.out,
        params=args.radiomics,
        config=args.config,
        labels_path=args.labels,
        jobs=args.jobs,
        cache=args.cache,
        liver_label=args.liver_label,
        lesion_label=args.lesion_label,
        resample_mask=args.resample_mask or None,
        scheduler=resolve_scheduler(args.scheduler),
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.validate import run_validate

    labels = None
    if args.images:
        from features import settings
        from pipeline.world import load_labels

        labels = load_labels(args.labels)
        if args.liver_label is not None or args.lesion_label is not None:
            labels = settings.replace(
                labels,
                "--liver-label/--lesion-label",
                liver=args.liver_label or labels.liver,
                lesion=args.lesion_label or labels.lesion,
            )
    return run_validate(
        args.cohort,
        args.mapping,
        labels=labels,
        resample_mask=args.resample_mask,
        images_out=args.images_out,
        jobs=args.jobs,
    )


def cmd_featurize(args: argparse.Namespace) -> int:
    from pipeline.featurize import run_featurize

    extraction_dir = None if args.no_images else args.extraction
    if extraction_dir is None and not args.no_images:
        raise ValueError("crlm featurize needs --extraction <dir> (from crlm extract) or --no-images")
    run_featurize(args.cohort, args.out, extraction_dir, config=args.config, mapping=args.mapping)
    return 0


def cmd_perturb(args: argparse.Namespace) -> int:
    from pipeline.execution import resolve_scheduler
    from pipeline.perturb import run_perturb

    run_perturb(
        args.cohort,
        args.features,
        args.out,
        args.icc,
        params_path=args.params,
        robustness_config=args.robustness,
        radiomics_params=args.radiomics,
        config=args.config,
        labels_path=args.labels,
        jobs=args.jobs,
        cache=args.cache,
        scheduler=resolve_scheduler(args.scheduler),
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.tracking import run_promote

    return run_promote(args.name, args.version, REPO_ROOT, alias=args.alias)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.train import run_train

    tasks = ("recurrence", "response") if args.task == "all" else (args.task,)
    covariates: tuple[str, ...] = ()
    name = args.name
    if args.mapping is not None:
        from features.mapping import load_mapping

        mapping = load_mapping(args.mapping)
        covariates = tuple(column.name for column in mapping.covariate_columns())
        name = name or mapping.cohort or None
    if name is None and not args.no_tracking:
        raise ValueError(
            "name the registered models: --name NAME registers NAME-recurrence / NAME-response "
            "(or give a --mapping with a cohort name, or --no-tracking); "
            "'crlm' is the pipeline's own name"
        )
    run_train(
        args.features,
        args.out,
        args.models,
        args.params,
        tasks,
        truth=args.truth,
        repo_root=REPO_ROOT,
        track=not args.no_tracking,
        covariates=covariates,
        name=name or "untracked",
        explicit_tasks=args.task != "all",
        jobs=args.jobs,
        perturbed=args.perturbed,
        icc=args.icc,
    )
    return 0


def cmd_choose_robustness(args: argparse.Namespace) -> int:
    from pipeline.choose_robustness import run_choose
    from pipeline.settings import load_params

    tasks = ("recurrence", "response") if args.task == "all" else (args.task,)
    run_choose(
        args.features, args.perturbed, args.icc, args.params, args.out, args.thresholds, args.tolerance, tasks,
        repeats=args.repeats, jobs=args.jobs if args.jobs is not None else load_params(args.params, "train").train.jobs,
        augment=args.augment,
    )  # fmt: skip
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import run_evaluate

    run_evaluate(
        args.model,
        args.features,
        args.out,
        args.params,
        truth=args.truth,
        repo_root=REPO_ROOT,
        track=not args.no_tracking,
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from pipeline.explain import run_explain
    from pipeline.settings import load_params

    params = load_params(args.params, "explain")
    run_explain(
        args.models,
        args.features,
        args.split,
        args.out,
        params.explain,
        repo_root=REPO_ROOT,
        track=not args.no_tracking,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import run_report

    run_report(
        args.train,
        args.out,
        features=args.features,
        extraction=args.extraction,
        external_dir=args.external,
        explain_dir=args.explain,
        truth=args.truth,
        params=args.params,
        repo_root=REPO_ROOT,
        track=not args.no_tracking,
        icc=args.icc,
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.execution import resolve_scheduler
    from pipeline.predict import run_predict

    run_predict(
        args.cohort,
        args.model,
        args.out,
        mapping=args.mapping,
        jobs=args.jobs,
        chunk_size=args.chunk_size,
        cache=args.cache,
        top_k=args.top_k,
        repo_root=REPO_ROOT,
        radiomics_params=args.radiomics,
        extraction_config=args.config,
        labels=args.labels,
        liver_label=args.liver_label,
        lesion_label=args.lesion_label,
        resample_mask=args.resample_mask or None,
        scheduler=resolve_scheduler(args.scheduler),
        allow_different_settings=args.allow_different_settings,
    )
    return 0


def _add_extraction_options(
    parser: argparse.ArgumentParser, cache_type=_path_or_url, for_predict: bool = False
) -> None:
    """The settings of image extraction, shared by crlm extract and crlm predict (where they
    default to the settings the model was trained with, see pipeline.predict.resolve_settings)."""
    model = " (default: the model's, else {})" if for_predict else " (default: {})"
    parser.add_argument(
        "--radiomics",
        type=Path,
        default=None if for_predict else DEFAULT_RADIOMICS,
        help="pyradiomics parameter file" + model.format("configs/radiomics.yaml"),
    )
    parser.add_argument(
        "--params", dest="radiomics", type=Path, action=_DeprecatedAlias, new="--radiomics", help=argparse.SUPPRESS
    )  # the old name of --radiomics; --params is params.yaml
    parser.add_argument(
        "--config",
        type=Path,
        default=None if for_predict else DEFAULT_EXTRACTION,
        help="crop margin, cache, aggregation" + model.format("configs/extraction.yaml"),
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None if for_predict else DEFAULT_LABELS,
        help="mask label roles (YAML)" + model.format("configs/labels.yaml"),
    )
    if for_predict:
        parser.add_argument(
            "--allow-different-settings",
            action="store_true",
            help="predict even if the extraction settings differ from the model's (named in a warning)",
        )
    parser.add_argument("--liver-label", type=int, default=None, help="override the liver label value")
    parser.add_argument("--lesion-label", type=int, default=None, help="override the lesion label value")
    parser.add_argument(
        "--resample-mask",
        action="store_true",
        help="resample masks on another grid onto the image (nearest neighbour, logged)",
    )
    parser.add_argument("--cache", type=cache_type, default=None, help="per-case cache folder (default from --config)")
    parser.add_argument("--jobs", type=_jobs, default=-1, help="parallel extraction workers (-1: all cores)")
    parser.add_argument("--scheduler", default=None, help=SCHEDULER_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crlm",
        description="crlm-prognosis: prognosis models for colorectal liver metastases "
        "(research software; synthetic results are not clinical evidence).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    syn = sub.add_parser("synthesize", help="simulate a synthetic cohort (tables, CT phantoms, masks)")
    syn.add_argument("--n", type=_positive, required=True, help="number of patients")
    syn.add_argument("--seed", type=int, required=True, help="random seed (same seed, same bytes)")
    syn.add_argument("--site", required=True, help="acquisition site, as named in the world file")
    syn.add_argument("--out", type=Path, required=True, help="output folder")
    syn.add_argument("--world", type=Path, default=DEFAULT_WORLD, help="simulated-world parameters (YAML)")
    syn.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="mask label roles (YAML)")
    syn.add_argument("--jobs", type=_jobs, default=-1, help="parallel workers (-1: all cores)")
    syn.add_argument("--no-images", action="store_true", help="write the tables only, no CT phantoms")
    syn.add_argument("--scheduler", default=None, help=SCHEDULER_HELP)
    syn.set_defaults(func=cmd_synthesize)

    ext = sub.add_parser("extract", help="per-lesion morphology and radiomics for a cohort (cached, parallel)")
    ext.add_argument(
        "--cohort", type=_path_or_url, required=True, help="CSV with patient_id, image, mask (paths relative to it)"
    )
    ext.add_argument(
        "--out", type=_path_or_url, required=True, help="output folder: lesions.parquet, extraction_report.csv"
    )
    _add_extraction_options(ext)
    ext.set_defaults(func=cmd_extract)

    val = sub.add_parser("validate", help="check a cohort's clinical table against the canonical schema")
    val.add_argument("--cohort", type=Path, required=True, help="clinical CSV, one row per patient")
    val.add_argument(
        "--mapping", type=Path, default=None, help="cohort mapping (YAML), e.g. configs/mappings/tcia_crlm.yaml"
    )
    val.add_argument(
        "--images",
        action="store_true",
        help="also check every image/mask pair from its headers (statuses as crlm extract gives)",
    )
    val.add_argument("--images-out", type=Path, default=None, help="CSV of the image statuses (with --images)")
    val.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="mask label roles (YAML)")
    val.add_argument("--liver-label", type=int, default=None, help="override the liver label value")
    val.add_argument("--lesion-label", type=int, default=None, help="override the lesion label value")
    val.add_argument(
        "--resample-mask", action="store_true", help="masks on another grid will be resampled: not a geometry_mismatch"
    )
    val.add_argument(
        "--jobs", type=_jobs, default=1, help="parallel image checks (-1: all cores; on a busy machine 1 was faster)"
    )
    val.set_defaults(func=cmd_validate)

    fea = sub.add_parser("featurize", help="one patient-level table: clinical features, scores, morphology, radiomics")
    fea.add_argument("--cohort", type=Path, required=True, help="clinical CSV, one row per patient")
    fea.add_argument("--extraction", type=Path, default=None, help="folder written by crlm extract")
    fea.add_argument("--out", type=Path, required=True, help="features.parquet to write")
    fea.add_argument("--mapping", type=Path, default=None, help="cohort mapping (YAML) for a non-canonical sheet")
    fea.add_argument("--config", type=Path, default=DEFAULT_EXTRACTION, help="aggregation rules")
    fea.add_argument("--no-images", action="store_true", help="clinical features and scores only")
    fea.set_defaults(func=cmd_featurize)

    per = sub.add_parser(
        "perturb", help="re-extract the training cohort under image perturbations; ICC(1,1) per feature"
    )
    per.add_argument("--cohort", type=Path, required=True, help="the training cohort's clinical CSV (image, mask)")
    per.add_argument(
        "--features",
        type=Path,
        default=Path("data/features/train/features.parquet"),
        help="its crlm featurize table (columns, patients with status ok)",
    )
    per.add_argument(
        "--out", type=Path, default=Path("data/features/train/perturbed.parquet"), help="perturbed features (parquet)"
    )
    per.add_argument("--icc", type=Path, default=Path("data/features/train/icc.csv"), help="ICC(1,1) per feature")
    per.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help=PARAMS_HELP.format("robustness"))
    per.add_argument(
        "--robustness", type=Path, default=DEFAULT_ROBUSTNESS, help="perturbation magnitudes (configs/robustness.yaml)"
    )
    per.add_argument("--radiomics", type=Path, default=DEFAULT_RADIOMICS, help="pyradiomics parameter file (YAML)")
    per.add_argument("--config", type=Path, default=DEFAULT_EXTRACTION, help="extraction settings (YAML)")
    per.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="mask label roles (YAML)")
    per.add_argument("--cache", type=Path, default=None, help="per-case cache folder (default from --config)")
    per.add_argument("--jobs", type=_jobs, default=None, help="parallel workers (default: robustness.jobs)")
    per.add_argument("--scheduler", default=None, help=SCHEDULER_HELP)
    per.set_defaults(func=cmd_perturb)

    tra = sub.add_parser("train", help="fit recurrence and response models, evaluate on the held-out split")
    tra.add_argument("--features", type=Path, required=True, help="features.parquet from crlm featurize")
    tra.add_argument("--out", type=Path, required=True, help="folder for metrics.json, plots/, predictions")
    tra.add_argument("--models", type=Path, default=None, help="folder for the fitted predictors (default: OUT/models)")
    tra.add_argument(
        "--task",
        choices=("recurrence", "response", "all"),
        default="all",
        help="all (default): every task whose outcome the cohort has; the others are skipped, with why",
    )
    tra.add_argument(
        "--name",
        default=None,
        help="registered model name prefix: NAME-recurrence, NAME-response (default: the mapping's "
        "cohort name; the pipeline's own run uses crlm)",
    )
    tra.add_argument("--jobs", type=_jobs, default=None, help="parallel fits in the grid search (default: train.jobs)")
    tra.add_argument("--truth", type=Path, default=None, help="truth.csv of a synthetic cohort (oracle)")
    tra.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help=PARAMS_HELP.format("train, evaluate"))
    tra.add_argument(
        "--mapping", type=Path, default=None, help="cohort mapping whose declared covariates the models use as they are"
    )
    tra.add_argument(
        "--perturbed",
        type=Path,
        default=None,
        help="perturbed.parquet from crlm perturb (read when train.robustness.augment is true)",
    )
    tra.add_argument(
        "--icc",
        type=Path,
        default=None,
        help="icc.csv from crlm perturb (read when train.robustness.icc_threshold is set)",
    )
    tra.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    tra.set_defaults(func=cmd_train)

    cho = sub.add_parser(
        "choose-robustness",
        help="score train.robustness candidates by CV on the training split, same site and simulated other "
        "scanner (never an external cohort; docs/robustness.md)",
    )
    cho.add_argument("--features", type=Path, required=True, help="training features.parquet from crlm featurize")
    cho.add_argument("--perturbed", type=Path, required=True, help="perturbed.parquet from crlm perturb")
    cho.add_argument("--icc", type=Path, required=True, help="icc.csv from crlm perturb")
    cho.add_argument("--out", type=Path, required=True, help="folder for robustness_choice.csv / .json")
    cho.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help=PARAMS_HELP.format("train"))
    cho.add_argument(
        "--thresholds", type=float, nargs="+", default=[0.5, 0.75, 0.9], help="ICC thresholds to try (no filter too)"
    )
    cho.add_argument(
        "--tolerance", type=float, default=0.01, help="same-site CV score a candidate may give up (default 0.01)"
    )
    cho.add_argument("--task", choices=("recurrence", "response", "all"), default="all", help="tasks scored")
    cho.add_argument(
        "--augment",
        nargs="+",
        choices=("false", *PERTURBATION_CHAINS),
        default=["false", *PERTURBATION_CHAINS],
        help="augmentation options to try with each threshold (default all three; false is always tried)",
    )
    cho.add_argument(
        "--repeats", type=int, default=1, help="repeats of the train.cv_folds-fold CV, each reshuffled (default 1)"
    )
    cho.add_argument("--jobs", type=_jobs, default=None, help="candidates scored in parallel (default: train.jobs)")
    cho.set_defaults(func=cmd_choose_robustness)

    eva = sub.add_parser("evaluate", help="validate trained models on another cohort (e.g. the external site)")
    eva.add_argument("--model", required=True, help="models folder from crlm train, or models:/<name>@<alias>")
    eva.add_argument("--features", type=Path, required=True, help="features.parquet of the cohort")
    eva.add_argument("--out", type=Path, required=True, help="folder for metrics.json")
    eva.add_argument("--truth", type=Path, default=None, help="truth.csv of a synthetic cohort (oracle)")
    eva.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help=PARAMS_HELP.format("evaluate"))
    eva.add_argument(
        "--no-tracking",
        action="store_true",
        help="do not log the external metrics to the MLflow run that trained the models",
    )
    eva.set_defaults(func=cmd_evaluate)

    exp = sub.add_parser("explain", help="SHAP values, global and per-patient plots of the fitted models")
    exp.add_argument(
        "--models", type=Path, default=REPO_ROOT / "artifacts" / "models", help="models folder from crlm train"
    )
    exp.add_argument("--features", type=Path, required=True, help="features.parquet the models were trained on")
    exp.add_argument("--split", type=Path, required=True, help="split.csv written by crlm train (test = explained)")
    exp.add_argument("--out", type=Path, required=True, help="folder for SHAP tables and plots")
    exp.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help=PARAMS_HELP.format("explain"))
    exp.add_argument("--no-tracking", action="store_true", help="do not log to the models' MLflow runs")
    exp.set_defaults(func=cmd_explain)

    rep = sub.add_parser("report", help="one self-contained HTML report of a run (images embedded)")
    rep.add_argument("--train", type=Path, default=REPO_ROOT / "reports" / "train", help="crlm train --out folder")
    rep.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "report.html", help="HTML file to write")
    rep.add_argument("--features", type=Path, default=None, help="features.parquet (cohort summary)")
    rep.add_argument("--extraction", type=Path, default=None, help="crlm extract --out folder (status counts)")
    rep.add_argument("--external", type=Path, default=None, help="crlm evaluate --out folder (external site)")
    rep.add_argument("--explain", type=Path, default=None, help="crlm explain --out folder (SHAP)")
    rep.add_argument("--truth", type=Path, default=None, help="truth.csv: marks the data as synthetic")
    rep.add_argument("--icc", type=Path, default=None, help="icc.csv of crlm perturb (feature robustness plot)")
    rep.add_argument(
        "--params",
        type=Path,
        default=DEFAULT_PARAMS,
        help=PARAMS_HELP.format("train, evaluate") + "; shown in the report",
    )
    rep.add_argument("--no-tracking", action="store_true", help="do not log the report to MLflow")
    rep.set_defaults(func=cmd_report)

    pre = sub.add_parser("predict", help="batch inference on a new cohort: predictions.csv, one row per input row")
    pre.add_argument(
        "--cohort",
        type=Path,
        required=True,
        help="clinical CSV, one row per patient (image, mask paths relative to it)",
    )
    pre.add_argument(
        "--model",
        action="append",
        required=True,
        help="models folder from crlm train, a {task}_{model}.joblib file, or models:/<name>@<alias>; "
        "repeat for the other task",
    )
    pre.add_argument("--out", type=Path, required=True, help="folder for predictions.csv, explanations/, summary.json")
    pre.add_argument("--mapping", type=Path, default=None, help="cohort mapping (YAML) for a non-canonical sheet")
    pre.add_argument("--chunk-size", type=_positive, default=32, help="patients per chunk (bounds memory)")
    pre.add_argument("--top-k", type=_positive, default=3, help="SHAP contributions per task in predictions.csv")
    _add_extraction_options(pre, cache_type=Path, for_predict=True)
    pre.set_defaults(func=cmd_predict)

    pro = sub.add_parser("promote", help="move a registered model's alias (default: champion) to a version")
    pro.add_argument("--name", required=True, help="registered model, e.g. crlm-recurrence or crlm-response")
    pro.add_argument("--version", type=_positive, required=True, help="model version to promote")
    pro.add_argument("--alias", default="champion", help="alias to move (default: champion)")
    pro.set_defaults(func=cmd_promote)
    return parser


def main(argv: list[str] | None = None) -> int:
    from features.settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SettingsError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"crlm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
