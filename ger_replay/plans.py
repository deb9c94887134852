"""Run plans: a run's configuration and its samples → batches → requests.

A plan is all that is needed to rebuild every request key, so it is stored with the run and a
replay in CI rebuilds the same keys from the store alone, without the media.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property, lru_cache
from typing import Any

from . import media
from .datasets import Dataset
from .errors import ConfigError, MediaError
from .manifests import Sample, Skipped
from .prompts import NOUNS, TemplateSet
from .requests import BATCH_SIZES, Item, Params, Request, batch_order, build, chunk
from .store import Store
from .strategy import DEFAULT_SCHEDULE, Schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what the model is asked and how the calls are walked."""

    dataset: Dataset
    input_kind: str
    model: str
    templates: TemplateSet
    batch_size: int
    frames: int
    grey: bool = False
    max_side: int | None = None
    max_tokens: int = 1000
    temperature: float | None = None
    detail: str | None = None
    shuffle_seed: int | None = None
    schedule: str = DEFAULT_SCHEDULE
    keep_answered: bool = False
    replicate: int | None = None
    subset: str | None = None  # a named variant of the test set, e.g. Twitter I's "4agree"

    @classmethod
    def make(cls, dataset: Dataset, model: str, templates: TemplateSet,
             input_kind: str | None = None, batch_size: int | None = None,
             frames: int | None = None, **options: Any) -> RunConfig:
        """A config with the paper's defaults for whatever is not given."""
        input_kind = input_kind or dataset.default_input
        # Where the files live is not part of a run: the same samples elsewhere are the same run.
        dataset = replace(dataset, manifest=None, root=None)
        Schedule.parse(options.get("schedule", DEFAULT_SCHEDULE))
        subsets = dict(dataset.variants)
        if options.get("subset") and options["subset"] not in subsets:
            known = ", ".join(subsets) or "none"
            raise ConfigError(f"dataset {dataset.name!r} has no subset {options['subset']!r}; "
                              f"subsets: {known}")
        return cls(dataset=dataset, input_kind=input_kind, model=model, templates=templates,
                   batch_size=batch_size or BATCH_SIZES[input_kind],
                   frames=frames or dataset.frames, grey=options.pop("grey", False) or dataset.grey,
                   **options)

    @property
    def noun(self) -> str:
        return NOUNS[self.input_kind]

    @property
    def params(self) -> Params:
        return Params(model=self.model, max_tokens=self.max_tokens, temperature=self.temperature,
                      detail=self.detail, replicate=self.replicate)

    def prompt(self, n: int) -> str:
        return self.templates.render(self.dataset.task, self.input_kind, n, self.dataset.labels,
                                     self.frames)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["templates"] = {"name": self.templates.name, "templates": dict(self.templates.templates)}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        data["dataset"] = Dataset.from_json(data["dataset"])
        templates = data["templates"]
        data["templates"] = TemplateSet(templates["name"],
                                        tuple(sorted(templates["templates"].items())))
        return cls(**data)


@dataclass(frozen=True)
class PlannedSample:
    name: str
    label: str
    text: str | None
    images: tuple[str, ...]
    batch: int
    position: int


@dataclass(frozen=True)
class Plan:
    """A run: its configuration and its samples in batching order."""

    run_id: str
    config: RunConfig
    samples: tuple[PlannedSample, ...]

    def batches(self) -> list[tuple[str, ...]]:
        found: dict[int, list[str]] = {}
        for sample in self.samples:
            found.setdefault(sample.batch, []).append(sample.name)
        return [tuple(found[batch]) for batch in sorted(found)]

    def request(self, names: Sequence[str]) -> Request:
        by_name = self.by_name
        items = [Item(name, by_name[name].images, by_name[name].text) for name in names]
        return build(self.config.prompt(len(items)), self.config.noun, items, self.config.params)

    @cached_property
    def by_name(self) -> dict[str, PlannedSample]:
        return {sample.name: sample for sample in self.samples}

    def save(self, store: Store) -> None:
        store.save_run(self.run_id, self.config.dataset.name, self.config.input_kind,
                       self.config.model, self.config.to_json(),
                       [{"name": s.name, "label": s.label, "text": s.text,
                         "images": list(s.images), "batch": s.batch, "position": s.position}
                        for s in self.samples],
                       [(self.request(batch).key, batch) for batch in self.batches()])

    def drift(self, store: Store) -> list[int]:
        """Batches whose request today's code builds differently from when the run was planned."""
        planned = store.planned_keys(self.run_id)
        return [index for index, batch in enumerate(self.batches())
                if index in planned and planned[index] != self.request(batch).key]


def load(store: Store, run_id: str) -> Plan:
    """The plan of a stored run."""
    run = store.run(run_id)
    samples = tuple(PlannedSample(s["name"], s["label"], s["text"], tuple(s["images"]),
                                  s["batch"], s["position"]) for s in store.samples(run["id"]))
    return Plan(run["id"], RunConfig.from_json(run["config"]), samples)


class Media:
    """Encodes the samples' media: once to plan, and again on demand when a request is sent
    (an LRU cache, rather than every image in memory: datasets run to thousands of videos)."""

    def __init__(self, config: RunConfig, samples: Sequence[Sample]):
        self.config = config
        self.samples = {sample.name: sample for sample in samples}
        self._where: dict[str, str] = {}
        self.encode = lru_cache(maxsize=256)(self._encode)

    def _encode(self, name: str) -> tuple[bytes, ...]:
        sample = self.samples[name]
        kind = self.config.input_kind
        if sample.media is None or kind == "text":
            return ()
        if kind in ("video", "video+text"):
            return tuple(media.video_frames(sample.media, self.config.frames,
                                            grey=self.config.grey, max_side=self.config.max_side))
        return (media.encode_image(sample.media, grey=self.config.grey,
                                   max_side=self.config.max_side),)

    def hashes(self, name: str) -> tuple[str, ...]:
        digests = tuple(media.sha256_hex(data) for data in self.encode(name))
        for digest in digests:
            self._where[digest] = name
        return digests

    def text(self, name: str) -> str | None:
        sample = self.samples[name]
        if self.config.input_kind not in ("text", "video+text", "image+text"):
            return None
        return media.read_text(sample.text, sample.text_path)

    def image_bytes(self, digest: str) -> bytes:
        name = self._where.get(digest)
        for data in self.encode(name) if name else ():
            if media.sha256_hex(data) == digest:
                return data
        if name is None:
            raise MediaError(f"image {digest[:12]} belongs to no sample of this run")
        raise MediaError(f"sample {name}: its media changed since the run was planned; rerun")


def make(config: RunConfig, samples: Sequence[Sample], store: Store | None = None,
         progress: Any = None, skip_bad: bool = False) -> tuple[Plan, Media, list[Skipped]]:
    """Encode every sample's media, batch the samples, and name the run after its content.

    With a store, image hashes (and bytes, if the store keeps them) are remembered as they come.
    With `skip_bad`, samples whose media cannot be decoded are left out and listed.
    """
    source = Media(config, samples)
    encoded: dict[str, tuple[tuple[str, ...], str | None]] = {}
    skipped: list[Skipped] = []
    for sample in samples:
        try:
            digests = source.hashes(sample.name)
            encoded[sample.name] = digests, source.text(sample.name)
        except MediaError as exc:
            if not skip_bad:
                raise
            log.warning("skipping sample %s: %s", sample.name, exc)
            skipped.append(Skipped(sample.line, sample.name, str(exc)))
            continue
        finally:
            if progress is not None:
                progress.update(1)
        if store is not None:
            for digest in digests:
                store.put_image(digest, source.image_bytes(digest))
    if not encoded:
        raise MediaError("no sample has readable media; nothing to run")
    order = batch_order(list(encoded), config.shuffle_seed)
    batch_of = {name: index for index, batch in enumerate(chunk(order, config.batch_size))
                for name in batch}
    labels = {s.name: s.label for s in samples}
    planned = tuple(PlannedSample(name, labels[name], encoded[name][1], encoded[name][0],
                                  batch_of[name], position) for position, name in enumerate(order))
    identity = json.dumps([config.to_json(), [asdict(s) for s in planned]], sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    run_id = f"{config.dataset.name}.{config.input_kind.replace('+', '-')}.{digest}"
    return Plan(run_id, config, planned), source, skipped
