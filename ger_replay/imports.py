"""The authors' published predictions: `name,gt,gpt4v` CSVs, `gpt4v` the ranking joined by commas.

Their `label.csv` (same header, `gpt4v` empty) lists every test sample. When it is given, or
sits beside the predictions file, samples it lists that have no prediction become unanswered
rows, so the coverage counts them; rows then follow its order. Names are matched without a media
extension (the published label files write `x.mp4` where the predictions write `x`), and a row's
name is written that way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from .datasets import Dataset
from .errors import ManifestError, PredictionsError
from .manifests import read_csv
from .scoring import Row, Scores, score

log = logging.getLogger(__name__)

LABELS_FILE = "label.csv"
MEDIA_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".png", ".jpg", ".jpeg", ".bmp",
                  ".npy")


@dataclass(frozen=True)
class _Line:
    """One data line of a published CSV file."""

    line: int
    name: str
    truth: str
    ranking: tuple[str, ...] | None


def sample_name(name: str) -> str:
    """A published name without its media extension."""
    lowered = name.lower()
    for suffix in MEDIA_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_truth(path: Path, line: int, truth: str, dataset: Dataset) -> None:
    if dataset.ground_truth == "intensity":
        try:
            ok = math.isfinite(float(truth))
        except ValueError:
            ok = False
        if not ok:
            raise PredictionsError(f"{path}:{line}: gt {truth!r} is not an intensity")
        return
    if not truth.strip():
        raise PredictionsError(f"{path}:{line}: gt is empty")


def _read(path: Path, dataset: Dataset, what: str) -> dict[str, _Line]:
    """The data lines of one file by sample name, checked; one-line errors name file and line."""
    try:
        rows = read_csv(path, what)
    except ManifestError as exc:
        raise PredictionsError(str(exc)) from None
    if not rows or [cell.strip().lower() for cell in rows[0][:2]] != ["name", "gt"]:
        raise PredictionsError(f"{path}:1: expected the header name,gt,gpt4v")
    found: dict[str, _Line] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) not in (2, 3):
            raise PredictionsError(f"{path}:{line}: expected name,gt,gpt4v; got {len(row)} fields")
        name, truth = sample_name(row[0].strip()), row[1].strip()
        if not name:
            raise PredictionsError(f"{path}:{line}: empty name")
        if name in found:
            raise PredictionsError(f"{path}:{line}: sample {name!r} appears twice "
                                   f"(first on line {found[name].line})")
        _check_truth(path, line, truth, dataset)
        ranking = tuple(label.strip() for label in (row[2] if len(row) == 3 else "").split(","))
        found[name] = _Line(line, name, truth, tuple(label for label in ranking if label) or None)
    return found


def _same_truth(a: str, b: str, dataset: Dataset) -> bool:
    if dataset.ground_truth == "intensity":
        return float(a) == float(b)
    return a.lower() == b.lower()


def read_predictions(path: str | Path, dataset: Dataset,
                     labels_path: str | Path | None = None) -> list[Row]:
    """Rows to score from a published predictions file and, if any, its sample list
    (`labels_path`, else a `label.csv` beside `path`). A prediction for a sample the list
    lacks, or with another ground truth than the list's, is an error naming both files."""
    path = Path(path)
    if labels_path is None and path.name != LABELS_FILE and (path.parent / LABELS_FILE).is_file():
        labels_path = path.parent / LABELS_FILE
    predictions = _read(path, dataset, "predictions")
    if labels_path is None:
        return [Row(p.name, p.truth, p.ranking) for p in predictions.values()]
    labels_path = Path(labels_path)
    listed = _read(labels_path, dataset, "sample list")
    # Disagreements are warned about, not fatal: published files are what they are, and the
    # predictions file's own ground truth is what its scores were computed from.
    for p in predictions.values():
        sample = listed.get(p.name)
        if sample is None:
            log.warning("%s:%d: sample %r is not in %s; scoring it anyway",
                        path, p.line, p.name, labels_path)
        elif not _same_truth(p.truth, sample.truth, dataset):
            log.warning("%s:%d: gt %r of %r differs from %r in %s:%d; using %r",
                        path, p.line, p.truth, p.name, sample.truth, labels_path, sample.line,
                        p.truth)
    rows = [Row(p.name, p.truth, p.ranking) if (p := predictions.get(sample.name))
            else Row(sample.name, sample.truth, None) for sample in listed.values()]
    rows += [Row(p.name, p.truth, p.ranking) for p in predictions.values() if p.name not in listed]
    return rows


def score_file(dataset: Dataset, path: str | Path, labels_path: str | Path | None = None,
               *, first_candidate: bool = False) -> Scores:
    """Score a published predictions file with the paper's metrics."""
    return score(dataset, read_predictions(path, dataset, labels_path),
                 first_candidate=first_candidate)
