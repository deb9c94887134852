import threading
import time

import pytest

from ger_replay.errors import DailyLimitReached
from ger_replay.limits import Limiter, image_tokens, parse_duration, request_tokens


@pytest.mark.parametrize("text, seconds", [("1.5", 1.5), ("20ms", 0.02), ("6m0s", 360.0),
                                           ("1h2m3.5s", 3723.5), ("7s", 7.0), ("", None),
                                           ("soon", None), (None, None)])
def test_header_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("size, detail, tokens", [
    ((1024, 1024), "high", 765),   # the provider's worked examples
    ((2048, 4096), "high", 1105),
    ((4096, 8192), "low", 85),
    ((100, 100), None, 255),
])
def test_the_tile_rule(size, detail, tokens):
    assert image_tokens(*size, detail=detail) == tokens


def test_request_tokens_add_text_and_images():
    assert request_tokens(400, [(1024, 1024), (1024, 1024)]) == 100 + 2 * 765


def test_requests_are_spaced_by_the_rpm():
    limiter = Limiter(rpm=600)
    started = time.monotonic()
    for _ in range(6):
        limiter.acquire()
    assert time.monotonic() - started >= 0.5 - 0.02


def test_threads_share_the_rate():
    limiter = Limiter(rpm=1200)
    times = []

    def worker():
        for _ in range(5):
            limiter.acquire()
            times.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times.sort()
    assert len(times) == 20
    assert times[-1] - times[0] >= 19 * 0.05 - 0.05


def test_the_token_budget_holds_within_a_minute():
    clock = [0.0]
    limiter = Limiter(tpm=1000, clock=lambda: clock[0])
    limiter.acquire(600)
    assert limiter._wait(300) <= 0
    limiter.acquire(300)
    assert limiter._wait(300) == pytest.approx(60.0)
    clock[0] = 61.0
    assert limiter._wait(300) <= 0


def test_a_server_pause_holds_everyone():
    limiter = Limiter()
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"})
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started >= 0.25


def test_the_daily_budget_spans_runs():
    limiter = Limiter(rpd=3, used_today=2)
    limiter.acquire()
    with pytest.raises(DailyLimitReached, match="requests-per-day limit"):
        limiter.acquire()
