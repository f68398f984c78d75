"""The fitted pre-processing of a model, cut down to the input columns its estimator uses.

A fitted pipeline takes ~2,300 input columns (clinical plus every radiomics feature) and passes
20-80 of them to the estimator: near-constant removal, decorrelation and univariate selection
drop the rest. At inference the full pre-processing still imputes, rank-normalises
(``QuantileTransformer``: two ``np.interp`` and a normal quantile per column) and scales every
column before dropping most of them: ~0.7 s per model and batch of 32 patients, for columns
that cannot change a prediction (issue 14; measured in bench/results.md).

`slice_preprocessing` builds, once per fitted pipeline, copies of the fitted column-wise steps
(imputation, rank normalisation, scaling) restricted to the used columns (their fitted
statistics, quantiles, means and scales sliced column by column), and drops the selection
steps (every remaining column passes them). Every value is computed by scikit-learn's own
``transform`` on the same column with the same fitted numbers, so the result is the full
pre-processing's output, bit for bit. `prepare` checks this on the first batch of every
model against the full pre-processing and keeps using the full one, with a warning, if a
single value differs; pipelines with a step it does not know are never sliced.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

# Steps that map each column on its own with fitted per-column numbers (sliced here) and steps
# that only keep a subset of columns (``support_`` or ``get_support``; dropped once sliced).
_PER_COLUMN = {
    "SimpleImputer": ("statistics_",),
    "QuantileTransformer": ("quantiles_",),
    "StandardScaler": ("mean_", "var_", "scale_", "n_samples_seen_"),
}
_SUBSET = {"VarianceThreshold", "CorrelationFilter", "UnivariateSelector"}


class NotSliceable(ValueError):
    """The pipeline has a step whose output columns cannot be traced back to its inputs."""


def _support(step: Any) -> np.ndarray:
    support = getattr(step, "support_", None)
    if support is None:
        support = step.get_support()
    return np.asarray(support, dtype=bool)


def _slice_columns(step: Any, positions: np.ndarray, names: Sequence[str] | None) -> Any:
    """A copy of the fitted per-column ``step`` restricted to its input columns ``positions``."""
    kind = type(step).__name__
    if kind == "SimpleImputer":
        if getattr(step, "add_indicator", False) or (
            not step.keep_empty_features and np.isnan(np.asarray(step.statistics_, dtype=float)).any()
        ):
            raise NotSliceable("an imputer that adds or drops columns")
    sliced = copy.copy(step)
    for attribute in _PER_COLUMN[kind]:
        value = getattr(step, attribute, None)
        if value is None or np.ndim(value) == 0:
            continue  # e.g. StandardScaler's n_samples_seen_ when no value was missing
        value = np.asarray(value)
        setattr(sliced, attribute, value[:, positions] if value.ndim == 2 else value[positions])
    sliced.n_features_in_ = len(positions)
    if hasattr(step, "feature_names_in_"):
        if names is None:
            raise NotSliceable("a step fitted with column names it does not receive")
        sliced.feature_names_in_ = np.asarray(names, dtype=object)
    return sliced


@dataclass
class _Block:
    """One block of the fitted ColumnTransformer, cut to the columns it must compute."""

    columns: list[str]  # input columns fed to the block (frame columns)
    steps: list[Any]  # fitted transformers applied in order (sliced copies, or the whole block)
    take: np.ndarray | None = None  # output columns to keep afterwards (None: all)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        X: Any = frame[self.columns]
        for step in self.steps:
            X = step.transform(X)
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        return X if self.take is None else X[:, self.take]


@dataclass
class SlicedPreprocessing:
    """The pre-processing of a fitted pipeline restricted to what its estimator receives."""

    blocks: list[_Block]
    n_outputs: int
    checked: bool = field(default=False)  # compared with the full pre-processing on real rows

    @property
    def columns(self) -> list[str]:
        """The input columns whose values can change a prediction."""
        return list(dict.fromkeys(c for block in self.blocks for c in block.columns))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        parts = [block.transform(frame) for block in self.blocks]
        out = np.hstack(parts) if parts else np.empty((len(frame), 0))
        if out.shape[1] != self.n_outputs:
            raise NotSliceable(f"{out.shape[1]} columns computed, the estimator takes {self.n_outputs}")
        return out


def _numeric_block(pipeline: Pipeline, columns: Sequence[str], keep: np.ndarray) -> _Block:
    """Cut a block of per-column and subset steps to the outputs flagged in ``keep``."""
    # input column of every step's input, step by step (subset steps drop entries)
    origin = np.arange(len(columns))
    stage_inputs: list[np.ndarray] = []
    for _, step in pipeline.steps:
        if step in ("passthrough", None):
            stage_inputs.append(origin)
            continue
        kind = type(step).__name__
        stage_inputs.append(origin)
        if kind in _SUBSET:
            support = _support(step)
            if support.shape != origin.shape:
                raise NotSliceable(f"{kind} fitted on {support.size} columns, receives {origin.size}")
            origin = origin[support]
        elif kind not in _PER_COLUMN:
            raise NotSliceable(f"step {kind}")
    if keep.shape != origin.shape:
        raise NotSliceable(f"block gives {origin.size} columns, the ColumnTransformer says {keep.size}")
    used = origin[keep]  # ascending: every step keeps column order
    names = [columns[i] for i in used]
    steps = []
    for (_, step), inputs in zip(pipeline.steps, stage_inputs, strict=True):
        if step in ("passthrough", None) or type(step).__name__ in _SUBSET:
            continue
        positions = np.searchsorted(inputs, used)
        steps.append(_slice_columns(step, positions, names if step is pipeline.steps[0][1] else None))
    return _Block(names, steps)


def slice_preprocessing(pipeline: Pipeline) -> SlicedPreprocessing:
    """`SlicedPreprocessing` of a fitted pipeline whose steps before the estimator are a fitted
    ``ColumnTransformer`` optionally followed by column-subset steps (`models.preprocessing`).
    Raises `NotSliceable` for any other structure."""
    steps = pipeline.steps[:-1]
    if not steps or type(steps[0][1]).__name__ != "ColumnTransformer":
        raise NotSliceable("the pre-processing does not start with a ColumnTransformer")
    transformer = steps[0][1]
    for _, step in steps[1:]:
        if type(step).__name__ not in _SUBSET:
            raise NotSliceable(f"step {type(step).__name__} after the ColumnTransformer")
    indices = getattr(transformer, "output_indices_", None)
    if indices is None:
        raise NotSliceable("a ColumnTransformer without output_indices_")
    n_out = max((s.stop for s in indices.values()), default=0)
    keep = None  # the estimator's inputs: all of the last step's output
    for _, step in reversed(steps[1:]):  # back from the estimator's inputs
        support = _support(step)
        if keep is None:
            keep = np.ones(int(support.sum()), dtype=bool)
        if keep.size != support.sum():
            raise NotSliceable(f"{type(step).__name__} passes {support.sum()} columns, the next step takes {keep.size}")
        before = np.zeros(support.size, dtype=bool)
        before[np.flatnonzero(support)[keep]] = True
        keep = before
    if keep is None:
        keep = np.ones(n_out, dtype=bool)
    if keep.size != n_out:
        raise NotSliceable("the selection steps do not match the ColumnTransformer's output")
    blocks: list[_Block] = []
    names_in = list(getattr(transformer, "feature_names_in_", []))
    for name, block, columns in transformer.transformers_:
        if name == "remainder" and block == "drop":
            continue
        block_keep = keep[indices[name]]
        if not block_keep.any():
            continue
        if isinstance(block, str):
            raise NotSliceable(f"a {block!r} block")
        if isinstance(columns, slice | np.ndarray) or not all(isinstance(c, str) for c in columns):
            columns = [names_in[i] for i in np.arange(len(names_in))[columns]]
        columns = list(columns)
        per_column = isinstance(block, Pipeline) and all(
            step in ("passthrough", None) or type(step).__name__ in _PER_COLUMN | dict.fromkeys(_SUBSET)
            for _, step in block.steps
        )
        if per_column:
            blocks.append(_numeric_block(block, columns, block_keep))
        else:  # e.g. one-hot encoding: the whole (small) block, then its kept outputs
            blocks.append(_Block(columns, [block], None if block_keep.all() else np.flatnonzero(block_keep)))
    return SlicedPreprocessing(blocks, int(keep.sum()))


_SLICES: weakref.WeakKeyDictionary[Pipeline, SlicedPreprocessing | None] = weakref.WeakKeyDictionary()


def prepare(pipeline: Pipeline, frame: pd.DataFrame) -> Any:
    """``pipeline[:-1].transform(frame)``, computed only for the columns the estimator uses when
    the pipeline can be sliced (`slice_preprocessing`); the first call per pipeline computes
    both and keeps the full pre-processing, with a warning, unless they agree bit for bit."""
    if pipeline not in _SLICES:
        try:
            _SLICES[pipeline] = slice_preprocessing(pipeline)
        except (NotSliceable, AttributeError, IndexError, KeyError, TypeError, ValueError):
            _SLICES[pipeline] = None
    sliced = _SLICES[pipeline]
    if sliced is None:
        return pipeline[:-1].transform(frame)
    if not sliced.checked:
        full = pipeline[:-1].transform(frame)
        try:
            fast = sliced.transform(frame)
            dense = full.toarray() if hasattr(full, "toarray") else np.asarray(full)
            same = (
                isinstance(full, np.ndarray)
                and fast.shape == dense.shape
                and fast.dtype == dense.dtype
                and np.array_equal(fast, dense, equal_nan=True)
            )
        except (NotSliceable, AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            same, fast = False, exc
        if not same:
            warnings.warn(
                "the pre-processing cut to the model's used columns differs from the full one "
                f"({fast if isinstance(fast, Exception) else 'values differ'}); using the full pre-processing",
                RuntimeWarning,
                stacklevel=2,
            )
            _SLICES[pipeline] = None
        else:
            sliced.checked = True
        return full
    return sliced.transform(frame)
