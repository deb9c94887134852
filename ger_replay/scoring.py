"""The paper's metrics, computed with scikit-learn, in percent at full precision.

The prediction is the first label of the ranking, case-normalised; an out-of-set label is wrong.
Abstract and ArtPhoto are scored on polarity; CMU-MOSI and CH-SIMS on the binary non-zero task.
The paper scores the answered samples and reports coverage apart; `strict` counts a missing
answer as wrong.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from .datasets import Dataset

POSITIVE = ("positive", "weakly positive")
MISSING = "<no answer>"


@dataclass(frozen=True)
class Row:
    """One sample: its ground truth (a label, or an intensity as text) and the model's ranking."""

    name: str
    truth: str
    ranking: tuple[str, ...] | None


@dataclass(frozen=True)
class Scores:
    dataset: str
    n: int
    total: int
    coverage: float
    metrics: dict[str, float]
    strict: dict[str, float]


def _predict(ranking: tuple[str, ...] | None, dataset: Dataset, first_candidate: bool) -> str | None:
    """The predicted label, lowercased; None when there is no answer."""
    if not ranking:
        return None
    if first_candidate:
        candidates = {label.lower() for label in dataset.labels}
        return next((label.strip().lower() for label in ranking
                     if label.strip().lower() in candidates), MISSING)
    return ranking[0].strip().lower()


def _pairs(dataset: Dataset, rows: Sequence[Row], first_candidate: bool
           ) -> list[tuple[str, str | None]]:
    """(true class, predicted class or None) in the space the metric is computed in."""
    pairs = []
    remap = dataset.remap_dict
    for row in rows:
        predicted = _predict(row.ranking, dataset, first_candidate)
        if dataset.metric == "f1_non0":
            intensity = float(row.truth)
            if intensity == 0:
                continue
            truth = "positive" if intensity > 0 else "negative"
            if predicted is not None:
                predicted = "positive" if predicted in POSITIVE else "negative"
        else:
            truth = row.truth.strip().lower()
            if remap:
                truth = remap.get(truth, truth)
                if predicted is not None:
                    predicted = remap.get(predicted, MISSING)
        pairs.append((truth, predicted))
    return pairs


def _metrics(dataset: Dataset, truths: list[str], predictions: list[str]) -> dict[str, float]:
    if not truths:
        nan = math.nan
        if dataset.metric == "f1_non0":
            return {"f1_non0": nan, "acc2_non0": nan}
        return {"accuracy": nan, "war": nan, "uar": nan, "weighted_f1": nan}
    # Classes as integers: scikit-learn is many times faster on them than on strings.
    codes = {label: code for code, label in enumerate(sorted(set(truths) | set(predictions)))}
    y_true = np.fromiter((codes[t] for t in truths), dtype=np.int64, count=len(truths))
    y_pred = np.fromiter((codes[p] for p in predictions), dtype=np.int64, count=len(predictions))
    present = sorted({codes[t] for t in truths})
    accuracy = 100 * accuracy_score(y_true, y_pred)
    weighted = 100 * f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)
    if dataset.metric == "f1_non0":
        return {"f1_non0": weighted, "acc2_non0": accuracy}
    uar = 100 * recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    return {"accuracy": accuracy, "war": accuracy, "uar": uar, "weighted_f1": weighted}


def score(dataset: Dataset, rows: Sequence[Row], *, first_candidate: bool = False) -> Scores:
    """Paper-style metrics over answered samples, strict ones over all, and the coverage."""
    pairs = _pairs(dataset, rows, first_candidate)
    answered = [(t, p) for t, p in pairs if p is not None]
    strict_predictions = [p if p is not None else _wrong(t, dataset) for t, p in pairs]
    return Scores(
        dataset=dataset.name, n=len(answered), total=len(pairs),
        coverage=100 * len(answered) / len(pairs) if pairs else math.nan,
        metrics=_metrics(dataset, [t for t, _ in answered], [p for _, p in answered]),
        strict=_metrics(dataset, [t for t, _ in pairs], strict_predictions))


def _wrong(truth: str, dataset: Dataset) -> str:
    """A prediction certain to be wrong, for a missing answer in the strict figure."""
    if dataset.metric == "f1_non0":
        return "negative" if truth == "positive" else "positive"
    return MISSING


def baselines(dataset: Dataset, rows: Sequence[Row], runs: int = 10, seed: int = 0
              ) -> dict[str, dict[str, float]]:
    """Random guessing (uniform over candidates) and majority guessing, averaged over runs."""
    counts = Counter(row.truth.strip().lower() for row in rows)
    if dataset.metric == "f1_non0":
        counts = Counter("positive" if float(r.truth) > 0 else "negative"
                         for r in rows if float(r.truth) != 0)
        majority = "positive" if counts["positive"] >= counts["negative"] else "negative"
    else:
        order = {label.lower(): i for i, label in enumerate(dataset.labels)}
        best = max(counts.values(), default=0)
        majority = min((label for label, count in counts.items() if count == best),
                       key=lambda label: order.get(label, len(order)), default="")
    found: dict[str, dict[str, float]] = {}
    for kind in ("random", "majority"):
        totals: dict[str, list[float]] = {}
        for run in range(runs):
            rng = random.Random(seed + run)
            guessed = [Row(row.name, row.truth,
                           (rng.choice(dataset.labels) if kind == "random" else majority,))
                       for row in rows]
            for name, value in score(dataset, guessed).metrics.items():
                totals.setdefault(name, []).append(value)
        found[kind] = {name: float(np.mean(values)) for name, values in totals.items()}
    return found


def bootstrap_ci(dataset: Dataset, rows: Sequence[Row], *, n_boot: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """A seeded percentile bootstrap of each paper-style metric over the answered samples."""
    pairs = [(t, p) for t, p in _pairs(dataset, rows, False) if p is not None]
    if not pairs:
        return {}
    codes = {label: code for code, label in enumerate(sorted({x for pair in pairs for x in pair}))}
    truths = np.array([codes[t] for t, _ in pairs])
    predictions = np.array([codes[p] for _, p in pairs])
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        index = rng.integers(0, len(pairs), len(pairs))
        for name, value in _fast_metrics(dataset, truths[index], predictions[index],
                                         len(codes)).items():
            samples.setdefault(name, []).append(value)
    tail = (1 - confidence) / 2 * 100
    return {name: (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
            for name, values in samples.items()}


def _fast_metrics(dataset: Dataset, truths: np.ndarray, predictions: np.ndarray,
                  classes: int) -> dict[str, float]:
    """`_metrics` from a confusion matrix in numpy. Hand-written because a bootstrap computes it
    a thousand times per run, where scikit-learn's input checks dominate; the tests hold the two
    equal."""
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
    accuracy = 100 * correct.sum() / len(truths)
    weighted = 100 * float((f1 * support)[present].sum() / support[present].sum())
    if dataset.metric == "f1_non0":
        return {"f1_non0": weighted, "acc2_non0": accuracy}
    return {"accuracy": accuracy, "war": accuracy, "uar": 100 * float(recall[present].mean()),
            "weighted_f1": weighted}


def confusion(dataset: Dataset, rows: Sequence[Row]) -> tuple[list[str], list[list[int]]]:
    """Classes (ground truth first, then out-of-set predictions) and the confusion counts."""
    pairs = [(t, p) for t, p in _pairs(dataset, rows, False) if p is not None]
    if dataset.metric == "f1_non0":
        classes = ["negative", "positive"]
    elif dataset.remap:
        classes = sorted(set(dataset.remap_dict.values()))
    else:
        classes = [label.lower() for label in dataset.labels]
    classes += sorted({p for _, p in pairs} - set(classes))
    if not pairs:
        return classes, [[0] * len(classes) for _ in classes]
    matrix = confusion_matrix([t for t, _ in pairs], [p for _, p in pairs], labels=classes)
    return classes, matrix.tolist()
