"""Running a plan: walk every batch through the strategy, several batches in flight at once.

Recording and replaying are the same walk; only the `Caller` differs (it pays for missing
attempts, or refuses to). Each finished batch's tree and predictions are stored at once, so a
killed run resumes where it was.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from tqdm import tqdm

from .client import Caller, Reply
from .errors import GerError, ReplayMiss
from .plans import Plan
from .requests import Request, difference, similarity
from .store import Attempt, Store
from .strategy import Outcome, Schedule, Walk, judge

log = logging.getLogger(__name__)

# US dollars per million input and output tokens, for the progress bar's running cost.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4-vision-preview": (10.0, 30.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
}


@dataclass
class Tally:
    """Running figures of a run, for the progress bar and the closing summary."""

    samples: int = 0
    done: int = 0
    answered: int = 0
    refused: int = 0
    failed: int = 0
    in_flight: int = 0
    paid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    price: tuple[float, float] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cost(self) -> float | None:
        if self.price is None:
            return None
        return (self.prompt_tokens * self.price[0] + self.completion_tokens * self.price[1]) / 1e6

    def reply(self, reply: Reply) -> None:
        with self._lock:
            self.paid += 1
            self.prompt_tokens += reply.usage.get("prompt_tokens", 0)
            self.completion_tokens += reply.usage.get("completion_tokens", 0)

    def flight(self, change: int) -> None:
        with self._lock:
            self.in_flight += change

    def batch(self, outcomes: dict[str, Outcome]) -> None:
        with self._lock:
            counts = Counter(outcome.status for outcome in outcomes.values())
            self.done += len(outcomes)
            self.answered += counts["answered"]
            self.refused += counts["refused"]
            self.failed += counts["failed"]

    def postfix(self) -> dict[str, str]:
        figures = {"refused": str(self.refused), "in flight": str(self.in_flight),
                   "paid": str(self.paid),
                   "tokens": f"{self.prompt_tokens + self.completion_tokens:,}"}
        if self.cost is not None:
            figures["cost"] = f"${self.cost:.2f}"
        return figures


@dataclass(frozen=True)
class RunResult:
    run_id: str
    outcomes: dict[str, Outcome]
    tally: Tally


def execute(plan: Plan, caller: Caller, *, store: Store | None = None,
            image_bytes: Callable[[str], bytes] | None = None, workers: int = 1,
            progress: bool = False, tally: Tally | None = None) -> RunResult:
    """Walk every batch of a plan; with a store, save each batch's calls and predictions."""
    config = plan.config
    schedule = Schedule.parse(config.schedule)
    tally = tally or Tally(price=PRICES.get(config.model))
    tally.samples = len(plan.samples)
    batches = plan.batches()
    outcomes: dict[str, Outcome] = {}
    stop = threading.Event()
    bar = tqdm(total=len(plan.samples), desc=plan.run_id, unit="sample", disable=not progress,
               leave=True, dynamic_ncols=True)

    def no_media(digest: str) -> bytes:
        raise GerError(f"image {digest[:12]} is needed but neither the media nor the store has it")

    def walk_batch(index: int, names: tuple[str, ...]) -> None:
        if stop.is_set():
            return

        def call(request: Request, n: int) -> Attempt:
            try:
                return caller(request, n, image_bytes or no_media)
            except ReplayMiss:
                raise ReplayMiss(_miss_message(plan, index, request, n, caller.store)) from None

        walk = Walk(make=plan.request, call=call, schedule=schedule,
                    judge=lambda attempt, request: judge(attempt, request, config.noun,
                                                         config.dataset.labels),
                    keep_answered=config.keep_answered)
        tally.flight(+1)
        try:
            found = walk.run(names)
        finally:
            tally.flight(-1)
        if store is not None:
            store.save_calls(plan.run_id, index, walk.calls)
            store.save_predictions(plan.run_id, [
                {"name": name, "status": o.status, "ranking": list(o.ranking or []) or None,
                 "key": o.key, "n": o.n, "diagnostics": o.diagnostics}
                for name, o in found.items()])
        outcomes.update(found)
        tally.batch(found)
        bar.set_postfix(tally.postfix(), refresh=False)
        bar.update(len(found))

    log.info("%s: %d samples in %d batches, %s mode, %d in flight", plan.run_id,
             len(plan.samples), len(batches), caller.mode, max(1, workers))
    if store is not None:
        store.set_run_status(plan.run_id, "running")
    try:
        if workers <= 1:
            for index, names in enumerate(batches):
                walk_batch(index, names)
        else:
            _in_parallel(walk_batch, batches, workers, stop)
    except GerError as exc:
        if store is not None:
            store.set_run_status(plan.run_id, f"stopped: {type(exc).__name__}")
        raise
    finally:
        bar.close()
    log.info("%s: %d answered, %d refused, %d failed; %d calls paid", plan.run_id,
             tally.answered, tally.refused, tally.failed, tally.paid)
    if store is not None:
        store.set_run_status(plan.run_id, "complete")
    return RunResult(plan.run_id, outcomes, tally)


def _in_parallel(walk_batch: Callable[[int, tuple[str, ...]], None],
                 batches: list[tuple[str, ...]], workers: int, stop: threading.Event) -> None:
    """Walk batches on `workers` threads; the first error stops the rest once in-flight ones end."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(walk_batch, index, names) for index, names in enumerate(batches)]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failure = next((f.exception() for f in done if f.exception()), None)
        if failure is not None:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise failure


def _miss_message(plan: Plan, batch: int, request: Request, n: int, store: Store) -> str:
    """Which request replay lacked, and how it differs from the nearest one the store holds."""
    samples = request.samples
    shown = ", ".join(samples[:4]) + (f" and {len(samples) - 4} more" if len(samples) > 4 else "")
    head = (f"replay: dataset {plan.config.dataset.name}, batch {batch} ({shown}) needs attempt "
            f"{n} of request {request.key}, which the store lacks")
    if store.request(request.key) is not None:
        return f"{head} (only earlier attempts were recorded); record the rest with `ger record`"
    nearest = _nearest(store, plan, request.canonical)
    if nearest is None:
        return f"{head}; the store holds nothing like it: record it with `ger record`"
    return f"{head}; nearest stored request differs: {difference(request.canonical, nearest)}"


def _nearest(store: Store, plan: Plan, canonical: dict) -> dict | None:
    try:
        keys = [call["key"] for call in store.calls(plan.run_id)]
    except GerError:
        keys = []
    if not keys:
        keys = [row[0] for row in store.db.execute("SELECT key FROM requests")]
    stored = [store.request(key) for key in dict.fromkeys(keys)]
    stored = [c for c in stored if c is not None]
    return max(stored, key=lambda c: similarity(canonical, c), default=None)
