"""The authors' published predictions: `name,gt,gpt4v` CSVs, `gpt4v` the ranking joined by commas.

Their `label.csv` lists every test sample; when given (or found beside the predictions), samples
without a prediction count against coverage. Names are matched without a media extension: the
published label files write `x.mp4` where the predictions write `x`.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import Dataset
from .errors import ManifestError
from .manifests import read_csv
from .scoring import Row, Scores, score

MEDIA_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".png", ".jpg", ".jpeg", ".bmp", ".npy")


def _key(name: str) -> str:
    lowered = name.lower()
    for suffix in MEDIA_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read(path: Path, dataset: Dataset) -> list[tuple[str, str, str]]:
    rows = read_csv(path, "predictions")
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["name", "gt"]:
        raise ManifestError(f"{path}:1: expected the header name,gt,gpt4v")
    found = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) not in (2, 3) or not row[0].strip():
            raise ManifestError(f"{path}:{line}: expected name,gt,gpt4v; got {len(row)} fields")
        name, truth = row[0].strip(), row[1].strip()
        if dataset.ground_truth == "intensity":
            try:
                float(truth)
            except ValueError:
                raise ManifestError(f"{path}:{line}: gt {truth!r} is not an intensity") from None
        found.append((name, truth, row[2] if len(row) == 3 else ""))
    return found


def read_predictions(path: str | Path, dataset: Dataset,
                     labels_path: str | Path | None = None) -> list[Row]:
    """Rows to score from a published predictions file (and the sample list, if any)."""
    path = Path(path)
    if labels_path is None and (path.parent / "label.csv").is_file() and path.name != "label.csv":
        labels_path = path.parent / "label.csv"
    rows = {}
    for name, truth, ranking in _read(path, dataset):
        key = _key(name)
        if key in rows:
            raise ManifestError(f"{path}: sample {name!r} appears twice")
        labels = tuple(label.strip() for label in ranking.split(",") if label.strip())
        rows[key] = Row(name, truth, labels or None)
    if labels_path is not None:
        for name, truth, _ in _read(Path(labels_path), dataset):
            rows.setdefault(_key(name), Row(name, truth, None))
    return list(rows.values())


def score_file(dataset: Dataset, path: str | Path, labels_path: str | Path | None = None,
               *, first_candidate: bool = False) -> Scores:
    """Score a published predictions file with the paper's metrics."""
    return score(dataset, read_predictions(path, dataset, labels_path),
                 first_candidate=first_candidate)
