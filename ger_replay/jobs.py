"""The jobs behind the commands: record a dataset, replay a store, score a run.

Each is one call a script or notebook can make as well as the CLI.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import datasets, manifests, plans, prompts
from .client import Caller, Transport
from .datasets import Dataset
from .errors import ConfigError, GerError
from .limits import Limiter
from .manifests import Skipped
from .plans import Plan, RunConfig
from .runs import PRICES, RunResult, Tally, execute
from .scoring import Row, Scores, score
from .store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a run's samples come from: a dataset and its manifest."""

    dataset: str
    manifest: str | None = None
    root: str | None = None
    definitions: str | None = None
    skip_bad: bool = False

    def resolve(self) -> Dataset:
        extra = datasets.load_definitions(self.definitions) if self.definitions else {}
        return datasets.get(self.dataset, extra)


@dataclass(frozen=True)
class Endpoint:
    """The API to call: any OpenAI-compatible base URL; the key only ever from the environment."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    workers: int = 4
    timeout: float = 120.0


@dataclass(frozen=True)
class RecordSummary:
    run_id: str
    result: RunResult
    skipped: list[Skipped] = field(default_factory=list)
    scores: Scores | None = None


def plan_run(source: Source, model: str, store: Store | None = None, progress: bool = False,
             **options: Any) -> tuple[Plan, plans.Media, list[Skipped]]:
    """Read the manifest, encode the media and batch the samples of one run."""
    dataset = source.resolve()
    templates = prompts.load(options.pop("templates", None) or "paper")
    config = RunConfig.make(dataset, model, templates, **options)
    if config.input_kind not in dataset.inputs:
        raise ConfigError(f"dataset {dataset.name!r} takes input {', '.join(dataset.inputs)}, "
                          f"not {config.input_kind!r}")
    manifest = source.manifest or dataset.manifest
    if not manifest:
        raise ConfigError(f"dataset {dataset.name!r} needs --manifest (a CSV of name,label[,text])")
    samples, skipped = manifests.read(manifest, dataset, config.input_kind,
                                      source.root or dataset.root, skip_bad=source.skip_bad)
    with tqdm(total=len(samples), desc="encoding media", unit="sample",
              disable=not progress, leave=False) as bar:
        plan, media, unreadable = plans.make(config, samples, store, progress=bar,
                                             skip_bad=source.skip_bad)
    return plan, media, skipped + unreadable


def record(store_path: str | Path, source: Source, model: str, endpoint: Endpoint, *,
           force: bool = False, keep_images: bool = False, progress: bool = False,
           price: tuple[float, float] | None = None, **options: Any) -> RecordSummary:
    """Record one run: serve what the store holds, pay for what it lacks, store every attempt."""
    with Store(store_path, keep_images=keep_images) as store:
        plan, media, skipped = plan_run(source, model, store, progress, **options)
        plan.save(store)
        log.info("recording run %s into %s", plan.run_id, store_path)
        used_today = store.calls_since_hours(24)
        limiter = Limiter(rpm=endpoint.rpm, tpm=endpoint.tpm, rpd=endpoint.rpd,
                          used_today=used_today)
        tally = Tally(price=price or PRICES.get(model))
        transport = Transport(endpoint.base_url, os.environ.get(endpoint.api_key_env),
                              timeout=endpoint.timeout)
        caller = Caller(store, "record", transport, limiter, force=force, on_reply=tally.reply)
        result = execute(plan, caller, store=store, image_bytes=media.image_bytes,
                         workers=endpoint.workers, progress=progress, tally=tally)
        return RecordSummary(plan.run_id, result, skipped, score_outcomes(plan, result))


def replay(store_path: str | Path, run_ids: list[str] | None = None,
           source: Source | None = None, model: str | None = None,
           **options: Any) -> list[tuple[Plan, RunResult, Scores]]:
    """Replay runs from the store alone: every stored run, some by id, or a run described anew."""
    with Store(store_path, create=False) as store:
        if source is not None:
            if not model:
                raise ConfigError("replaying a dataset needs --model, as it was recorded")
            plan, media, _ = plan_run(source, model, None, **options)
            todo = [(plan, media.image_bytes)]
        else:
            ids = run_ids or [run["id"] for run in store.runs()]
            if not ids:
                raise GerError(f"{store_path}: the store holds no runs; record one first")
            todo = [(plans.load(store, run_id), None) for run_id in ids]
        found = []
        for plan, image_bytes in todo:
            result = execute(plan, Caller(store, "replay"), image_bytes=image_bytes)
            found.append((plan, result, score_outcomes(plan, result)))
        return found


def score_outcomes(plan: Plan, result: RunResult, first_candidate: bool = False) -> Scores:
    """Score a walked run against its ground truth."""
    return score(plan.config.dataset, rows(plan, result), first_candidate=first_candidate)


def rows(plan: Plan, result: RunResult) -> list[Row]:
    found = []
    for sample in plan.samples:
        outcome = result.outcomes.get(sample.name)
        ranking = outcome.ranking if outcome and outcome.status == "answered" else None
        found.append(Row(sample.name, sample.label, tuple(ranking) if ranking else None))
    return found


def score_run(store_path: str | Path, run_id: str, first_candidate: bool = False) -> Scores:
    """Score a stored run, replaying it so today's parser reads its answers."""
    [(plan, result, _)] = replay(store_path, [run_id])
    return score_outcomes(plan, result, first_candidate)


def export_csv(store_path: str | Path, run_id: str) -> str:
    """A run's predictions in the authors' published format: name,gt,gpt4v (ranking joined)."""
    [(plan, result, _)] = replay(store_path, [run_id])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "gt", "gpt4v"])
    for row in rows(plan, result):
        writer.writerow([row.name, row.truth, ",".join(row.ranking or ())])
    return buffer.getvalue()


def verify(store_path: str | Path) -> list[str]:
    """Everything `ger store verify` reports: content that disagrees with its hash or its
    references, and runs whose requests today's code would build differently."""
    with Store(store_path, create=False) as store:
        problems = list(store.verify())
        for run in store.runs():
            for batch in plans.load(store, run["id"]).drift(store):
                problems.append(f"run {run['id']} batch {batch}: today's code builds another "
                                "request than the one planned (prompt, template or request "
                                "format changed); replaying it will miss")
    return problems
