"""The paper's metrics, computed with scikit-learn, in percent at full float precision.

The prediction is the first label of the ranking, case-normalised; an out-of-set label is wrong
(`first_candidate=True` takes the first label that is a candidate instead). Abstract and ArtPhoto
are scored on polarity; CMU-MOSI and CH-SIMS on the binary task over non-zero intensities, where
`positive` and `weakly positive` predict positive and every other answer negative.

The paper scores the answered samples and reports coverage apart: that is `Scores.metrics`.
`Scores.strict` counts a missing answer as wrong. With no answered sample, `n` is 0 and every
metric is NaN rather than an error, so a fully refused run still has a row in a table.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from .datasets import Dataset
from .errors import DatasetError

log = logging.getLogger(__name__)

POSITIVE = ("positive", "weakly positive")
BINARY = ("negative", "positive")
OTHER = "<other>"  # an answer outside the scored classes: unmapped polarity, or no candidate
MISSING = "<no answer>"  # stands for a missing answer in the strict figure


@dataclass(frozen=True)
class Row:
    """One sample: its ground truth (a label, or an intensity as text) and the model's ranking."""

    name: str
    truth: str
    ranking: tuple[str, ...] | None


class Scored(NamedTuple):
    """One scored sample in the metric's class space; `predicted` is None for no answer."""

    name: str
    truth: str
    predicted: str | None


@dataclass(frozen=True)
class Scores:
    """Paper-style metrics (answered samples), strict ones (all samples) and the coverage.

    `n` counts the answered samples and `total` all scored ones; for `f1_non0` both leave out
    intensity 0. `samples` holds each scored sample's true and predicted class.
    """

    dataset: str
    n: int
    total: int
    coverage: float
    metrics: dict[str, float]
    strict: dict[str, float]
    samples: tuple[Scored, ...] = field(default=(), repr=False)


# The paper's headline figure per metric kind, in the order its tables give them.
HEADLINE = {"accuracy": ("accuracy",), "war_uar": ("war", "uar"), "f1_non0": ("f1_non0",)}


def metric_names(dataset: Dataset) -> tuple[str, ...]:
    """The keys of `Scores.metrics` for a dataset."""
    if dataset.metric == "f1_non0":
        return ("f1_non0", "acc2_non0")
    return ("accuracy", "war", "uar", "weighted_f1")


def _truth_class(dataset: Dataset, row: Row) -> str | None:
    """The true class in the scored space; None for an intensity of 0 (left out)."""
    if dataset.ground_truth == "intensity":
        try:
            intensity = float(row.truth)
        except ValueError:
            intensity = math.nan
        if not math.isfinite(intensity):
            raise DatasetError(f"dataset {dataset.name!r}: sample {row.name!r} has ground truth "
                               f"{row.truth!r}, not an intensity")
        if intensity == 0:
            return None
        return "positive" if intensity > 0 else "negative"
    truth = row.truth.strip().lower()
    if dataset.remap:
        # Published ground truths of Abstract and ArtPhoto are polarities already.
        polarities = set(dataset.remap_dict.values())
        truth = dataset.remap_dict.get(truth, truth)
        if truth not in polarities:
            log.warning("dataset %s: sample %s has ground truth %r, which is neither an emotion "
                        "of the remap nor a polarity; no answer can match it",
                        dataset.name, row.name, row.truth)
    elif truth not in {label.lower() for label in dataset.labels}:
        log.warning("dataset %s: sample %s has ground truth %r, not a candidate; no answer can "
                    "match it", dataset.name, row.name, row.truth)
    return truth


def _top_label(ranking: tuple[str, ...] | None, dataset: Dataset,
               first_candidate: bool) -> str | None:
    """The predicted label, lowercased; None for no answer, OTHER when no label is a candidate."""
    labels = [label.strip().lower() for label in ranking or () if label.strip()]
    if not labels:
        return None
    if first_candidate:
        candidates = {label.lower() for label in dataset.labels}
        return next((label for label in labels if label in candidates), OTHER)
    return labels[0]


def _predicted_class(dataset: Dataset, label: str) -> str:
    """A predicted label in the scored space. Out-of-set labels of label datasets stay as they
    are (they can never equal a truth, and the confusion matrix shows them)."""
    if dataset.metric == "f1_non0":
        return "positive" if label in POSITIVE else "negative"
    if dataset.remap:
        return dataset.remap_dict.get(label, OTHER)
    return label


def _is_class(dataset: Dataset, value: str) -> bool:
    if dataset.remap:
        return value in set(dataset.remap_dict.values())
    return value in {label.lower() for label in dataset.labels}


def _scored(dataset: Dataset, rows: Sequence[Row], first_candidate: bool) -> list[Scored]:
    found = []
    for row in rows:
        truth = _truth_class(dataset, row)
        if truth is None:
            continue
        label = _top_label(row.ranking, dataset, first_candidate)
        predicted = None if label is None else _predicted_class(dataset, label)
        if predicted == truth and not _is_class(dataset, truth):
            predicted = OTHER  # an out-of-set answer never matches an out-of-set truth
        found.append(Scored(row.name, truth, predicted))
    return found


def _metrics(dataset: Dataset, truths: Sequence[str], predictions: Sequence[str]
             ) -> dict[str, float]:
    """The dataset's metrics with scikit-learn; UAR and weighted F1 over the true classes only,
    so a prediction outside them is simply wrong."""
    if not truths:
        return dict.fromkeys(metric_names(dataset), math.nan)
    # Classes as integers: scikit-learn is many times faster on them than on strings.
    codes = {label: code for code, label in enumerate(sorted({*truths, *predictions}))}
    y_true = np.fromiter((codes[t] for t in truths), dtype=np.int64, count=len(truths))
    y_pred = np.fromiter((codes[p] for p in predictions), dtype=np.int64, count=len(predictions))
    present = sorted({codes[t] for t in truths})
    accuracy = 100 * accuracy_score(y_true, y_pred)
    weighted = 100 * f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)
    if dataset.metric == "f1_non0":
        return {"f1_non0": float(weighted), "acc2_non0": float(accuracy)}
    uar = 100 * recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    return {"accuracy": float(accuracy), "war": float(accuracy), "uar": float(uar),
            "weighted_f1": float(weighted)}


def _wrong(dataset: Dataset, truth: str) -> str:
    """A prediction certain to be wrong, for a missing answer in the strict figure."""
    if dataset.metric == "f1_non0":
        return "negative" if truth == "positive" else "positive"
    return MISSING


def score(dataset: Dataset, rows: Sequence[Row], *, first_candidate: bool = False) -> Scores:
    """Paper-style metrics over the answered samples, strict ones over all, and the coverage."""
    scored = _scored(dataset, rows, first_candidate)
    answered = [s for s in scored if s.predicted is not None]
    return Scores(
        dataset=dataset.name, n=len(answered), total=len(scored),
        coverage=100 * len(answered) / len(scored) if scored else math.nan,
        metrics=_metrics(dataset, [s.truth for s in answered], [s.predicted for s in answered]),
        strict=_metrics(dataset, [s.truth for s in scored],
                        [s.predicted if s.predicted is not None else _wrong(dataset, s.truth)
                         for s in scored]),
        samples=tuple(scored))


def baselines(dataset: Dataset, rows: Sequence[Row], runs: int = 10, seed: int = 0
              ) -> dict[str, dict[str, float]]:
    """Random guessing (uniform over the candidates, `random.Random(seed + run)`) and majority
    guessing (the most frequent true class; ties go to the class of the earlier candidate), each
    averaged over `runs`. Guessers answer every sample, so all scored samples count."""
    truths = [s.truth for s in _scored(dataset, rows, False)]
    order = [_predicted_class(dataset, label.lower()) for label in dataset.labels]
    counts = Counter(truths)
    majority = min(counts, key=lambda c: (-counts[c], order.index(c) if c in order else len(order)),
                   default=None)
    found: dict[str, dict[str, float]] = {}
    for kind in ("random", "majority"):
        runs_found = []
        for run in range(runs):
            rng = random.Random(seed + run)
            guesses = [_predicted_class(dataset, rng.choice(dataset.labels).lower())
                       if kind == "random" else majority for _ in truths]
            runs_found.append(_metrics(dataset, truths, guesses))
        found[kind] = {name: float(np.mean([r[name] for r in runs_found]))
                       for name in metric_names(dataset)}
    return found


def bootstrap_ci(dataset: Dataset, rows: Sequence[Row], *, n_boot: int = 1000, seed: int = 0,
                 confidence: float = 0.95, first_candidate: bool = False
                 ) -> dict[str, tuple[float, float]]:
    """A seeded percentile bootstrap of each paper-style metric over the answered samples;
    (NaN, NaN) when nothing was answered."""
    pairs = [(s.truth, s.predicted) for s in _scored(dataset, rows, first_candidate)
             if s.predicted is not None]
    if not pairs:
        return dict.fromkeys(metric_names(dataset), (math.nan, math.nan))
    codes = {label: code for code, label in enumerate(sorted({x for pair in pairs for x in pair}))}
    truths = np.array([codes[t] for t, _ in pairs])
    predictions = np.array([codes[p] for _, p in pairs])
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in metric_names(dataset)}
    for _ in range(n_boot):
        index = rng.integers(0, len(pairs), len(pairs))
        for name, value in _fast_metrics(dataset, truths[index], predictions[index],
                                         len(codes)).items():
            samples[name].append(value)
    tail = (1 - confidence) / 2 * 100
    return {name: (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
            for name, values in samples.items()}


def _fast_metrics(dataset: Dataset, truths: np.ndarray, predictions: np.ndarray,
                  classes: int) -> dict[str, float]:
    """`_metrics` from a confusion matrix in numpy, on class codes. Hand-written because a
    bootstrap computes it a thousand times, where scikit-learn's input checks take about 7 s per
    1,000 resamples of 1,440 samples; the tests hold the two equal."""
    matrix = np.bincount(truths * classes + predictions, minlength=classes * classes)
    matrix = matrix.reshape(classes, classes).astype(float)
    support = matrix.sum(axis=1)
    present = support > 0
    correct = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    recall = np.divide(correct, support, out=np.zeros(classes), where=present)
    precision = np.divide(correct, predicted, out=np.zeros(classes), where=predicted > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(classes), where=total > 0)
    accuracy = 100 * float(correct.sum()) / len(truths)
    weighted = 100 * float((f1 * support)[present].sum() / support[present].sum())
    if dataset.metric == "f1_non0":
        return {"f1_non0": weighted, "acc2_non0": accuracy}
    return {"accuracy": accuracy, "war": accuracy, "uar": 100 * float(recall[present].mean()),
            "weighted_f1": weighted}


def confusion(dataset: Dataset, rows: Sequence[Row], *, first_candidate: bool = False
              ) -> tuple[list[str], list[list[int]]]:
    """Classes in the scored space and the counts (rows: truth, columns: prediction) of the
    answered samples. Classes: the candidates (lowercased), the polarities of a remap dataset,
    or negative/positive for `f1_non0`; then any out-of-set predictions, sorted."""
    scored = [s for s in _scored(dataset, rows, first_candidate) if s.predicted is not None]
    if dataset.metric == "f1_non0":
        classes = list(BINARY)
    elif dataset.remap:
        classes = sorted(set(dataset.remap_dict.values()))
    else:
        classes = [label.lower() for label in dataset.labels]
    classes += sorted({s.predicted for s in scored} - set(classes))
    if not scored:
        return classes, [[0] * len(classes) for _ in classes]
    matrix = confusion_matrix([s.truth for s in scored], [s.predicted for s in scored],
                              labels=classes)
    return classes, matrix.tolist()
