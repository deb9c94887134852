"""Parsing and scoring a store of 40,000 samples (2,000 responses of 20), from the store alone.

Run: python benchmarks/bench_parse_score.py [--samples 40000]
Builds the store first (synthetic image hashes, answers rendered in every output style), then
times a full replay (store reads, request keys, walking, parsing) and the scoring, and prints
where the time goes from a profile of the replay.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import random
import tempfile
import time
from pathlib import Path

from ger_replay import jobs, plans, prompts
from ger_replay.client import Caller
from ger_replay.datasets import REGISTRY
from ger_replay.plans import Plan, PlannedSample, RunConfig
from ger_replay.requests import batch_order, chunk, in_batch_name
from ger_replay.runs import execute
from ger_replay.store import Attempt, Store
from ger_replay.styles import STYLES, render


def build_store(path: Path, count: int) -> str:
    dataset = REGISTRY["rafdb"]
    config = RunConfig.make(dataset, "gpt-4-vision-preview", prompts.load("paper"))
    rng = random.Random(0)
    names = [f"test_{i:05d}.jpg" for i in range(count)]
    order = batch_order(names)
    samples = []
    for batch, members in enumerate(chunk(order, config.batch_size)):
        for name in members:
            digest = hashlib.sha256(name.encode()).hexdigest()
            samples.append(PlannedSample(name, rng.choice(dataset.labels), None, (digest,), batch,
                                         len(samples)))
    plan = Plan(f"rafdb.image.bench{count}", config, tuple(samples))
    styles = sorted(STYLES)
    with Store(path) as store:
        plan.save(store)
        with store.db.atomic():
            for index, batch in enumerate(plan.batches()):
                request = plan.request(batch)
                answers = [(in_batch_name("image", i), rng.sample(dataset.labels, len(dataset.labels)))
                           for i in range(len(batch))]
                text = render(styles[index % len(styles)], answers, before="Here you go:")
                store.put_request(request)
                store.add_attempt(Attempt(request.key, 0, "answered", text=text,
                                          usage={"prompt_tokens": 2000, "completion_tokens": 400}))
    return plan.run_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40000)
    options = parser.parse_args()
    path = Path(tempfile.mkdtemp(prefix="ger-bench-parse-")) / "cache.db"
    started = time.perf_counter()
    run_id = build_store(path, options.samples)
    print(f"built a store of {options.samples} samples in {time.perf_counter() - started:.1f} s")

    timings = {}
    with Store(path, create=False) as store:
        started = time.perf_counter()
        plan = plans.load(store, run_id)
        timings["load the plan from the store"] = time.perf_counter() - started
        started = time.perf_counter()
        result = execute(plan, Caller(store, "replay"))
        timings["replay: rebuild keys, read attempts, parse"] = time.perf_counter() - started
    started = time.perf_counter()
    scores = jobs.score_outcomes(plan, result)
    timings["score"] = time.perf_counter() - started
    for what, seconds in timings.items():
        print(f"  {what:<45s} {seconds:5.2f} s")
    print(f"total {sum(timings.values()):.2f} s for {len(plan.samples)} samples; accuracy "
          f"{scores.metrics['accuracy']:.2f} (random answers)")

    profile = cProfile.Profile()
    with Store(path, create=False) as store:
        profile.enable()
        execute(plan, Caller(store, "replay"))
        profile.disable()
    stats = pstats.Stats(profile)
    cumulative = {(Path(filename).stem, function): entry[3]
                  for (filename, _, function), entry in stats.stats.items()}
    total = cumulative[("runs", "walk_batch")]
    print("where the replay spends its time (share of walking every batch, profiled):")
    for module, function in (("strategy", "judge"), ("parsing", "parse"), ("store", "attempt"),
                             ("plans", "request"), ("requests", "build"), ("requests", "key_of")):
        share = 100 * cumulative.get((module, function), 0.0) / total
        print(f"  {module + '.' + function:<22s} {share:5.1f}%")


if __name__ == "__main__":
    main()
