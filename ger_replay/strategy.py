"""The paper's calling strategy: call a failing batch again, then split it, down to single samples.

A walk is deterministic given the attempts it is served, so the tree walked while recording is
walked again, call for call, while replaying.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import ConfigError
from .parsing import looks_like_refusal, parse
from .requests import Request, in_batch_name
from .store import Attempt

# The published code: 3 calls of the whole batch, 2 of each half, then quarters, then singles.
DEFAULT_SCHEDULE = "1x3,2x2,2x1,nx1"
FAILURES = ("refused", "partial", "extra", "unparsed", "error")


@dataclass(frozen=True)
class Level:
    """Split each failing part into `parts` (None: single samples) and call each part `calls` times."""

    parts: int | None
    calls: int


@dataclass(frozen=True)
class Schedule:
    levels: tuple[Level, ...]

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """`1x3,2x2,2x1,nx1`: whole batch 3 times, halves twice, their halves once, singles once."""
        levels = []
        for step in text.replace(" ", "").split(","):
            match = re.fullmatch(r"(\d+|n)x(\d+)", step)
            if not match or match.group(2) == "0" or match.group(1) == "0":
                raise ConfigError(f"schedule step {step!r} is not PARTSxCALLS, e.g. 2x2 or nx1")
            parts = None if match.group(1) == "n" else int(match.group(1))
            levels.append(Level(parts, int(match.group(2))))
        if not levels or levels[0].parts not in (1, None):
            raise ConfigError(f"schedule {text!r} must start with the whole batch, e.g. 1x3")
        return cls(tuple(levels))


@dataclass(frozen=True)
class Judgement:
    """How one attempt went for the samples it carried (by sample name)."""

    verdict: str  # "ok" or one of FAILURES
    answers: dict[str, tuple[str, ...]]
    kind: str | None = None
    diagnostics: dict[str, list] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What became of one sample at the end of its batch's walk."""

    status: str  # "answered" | "refused" | "failed"
    ranking: tuple[str, ...] | None
    key: str
    n: int
    diagnostics: dict[str, list] = field(default_factory=dict)


def judge(attempt: Attempt, request: Request, noun: str, labels: Sequence[str]) -> Judgement:
    """Classify an attempt: an answer for every sample, a refusal, or which kind of failure."""
    if attempt.status == "refused":
        return Judgement("refused", {}, attempt.kind)
    if attempt.status == "error":
        return Judgement("error", {}, attempt.kind)
    names = [in_batch_name(noun, i) for i in range(len(request.samples))]
    parsed = parse(attempt.text or "", names, labels)
    answers = {request.samples[names.index(name)]: ranking
               for name, ranking in parsed.answers.items()}
    sample_of = dict(zip(names, request.samples))
    diagnostics = {key: list(value) for key, value in (
        ("missing", [sample_of[name] for name in parsed.missing]), ("unknown", parsed.unknown),
        ("out_of_set", [(sample_of.get(name, name), label) for name, label in parsed.out_of_set]),
        ("duplicates", parsed.duplicates)) if value}
    if not answers:
        if looks_like_refusal(attempt.text or ""):
            return Judgement("refused", {}, "refusal_text", diagnostics)
        return Judgement("unparsed", {}, None, diagnostics)
    if parsed.unknown:
        return Judgement("extra", answers, None, diagnostics)
    if parsed.missing:
        return Judgement("partial", answers, None, diagnostics)
    return Judgement("ok", answers, None, diagnostics)


@dataclass
class Walk:
    """One batch's tree of calls. `make` builds the request for some samples; `call` serves
    attempt n of it; `judge` reads the attempt."""

    make: Callable[[tuple[str, ...]], Request]
    call: Callable[[Request, int], Attempt]
    judge: Callable[[Attempt, Request], Judgement]
    schedule: Schedule
    keep_answered: bool = False
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)
    _counts: Counter = field(default_factory=Counter)

    def run(self, samples: Sequence[str]) -> dict[str, Outcome]:
        self._part(tuple(samples), 0, "0")
        return self.outcomes

    def _part(self, samples: tuple[str, ...], level: int, path: str) -> None:
        pending = samples
        last: Judgement | None = None
        request: Request | None = None
        n = 0
        for _ in range(self.schedule.levels[level].calls):
            request = self.make(pending)
            n = self._counts[request.key]
            self._counts[request.key] += 1
            attempt = self.call(request, n)
            last = self.judge(attempt, request)
            kept = last.verdict == "ok" or (last.verdict == "partial" and self.keep_answered)
            self.calls.append({"path": path, "level": level, "key": request.key, "n": n,
                               "verdict": last.verdict if last.verdict != "refused"
                               else f"refused:{last.kind}", "samples": list(pending),
                               "answered": sorted(last.answers) if kept else []})
            if kept:
                for sample, ranking in last.answers.items():
                    self.outcomes[sample] = Outcome("answered", ranking, request.key, n,
                                                    _only(last.diagnostics, sample))
                pending = tuple(s for s in pending if s not in last.answers)
            if not pending:
                return
        if len(pending) == 1 or level + 1 == len(self.schedule.levels):
            assert last is not None and request is not None
            status = "refused" if last.verdict == "refused" else "failed"
            for sample in pending:
                self.outcomes[sample] = Outcome(status, None, request.key, n,
                                                {"last": [last.verdict, last.kind]})
            return
        for index, part in enumerate(split(pending, self.schedule.levels[level + 1].parts)):
            self._part(part, level + 1, f"{path}.{index}")


def split(samples: tuple[str, ...], parts: int | None) -> list[tuple[str, ...]]:
    """`parts` nearly equal consecutive parts (the first ones one larger), or single samples."""
    count = len(samples) if parts is None else min(parts, len(samples))
    size, extra = divmod(len(samples), count)
    found, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        found.append(samples[start:end])
        start = end
    return found


def _only(diagnostics: dict[str, list], sample: str) -> dict[str, list]:
    """The diagnostics that concern one sample (its out-of-set labels), for its prediction."""
    mine = [label for name, label in diagnostics.get("out_of_set", []) if name == sample]
    return {"out_of_set": mine} if mine else {}
