"""`ger sandbox`: a local OpenAI-compatible endpoint that answers the way GPT-4V did in the paper.

For tests, benchmarks and the demo. Every decision is a pure function of (seed, request key,
how many times that key was served), drawn from SHA-256, so a test can predict which calls are
refused and how many calls a whole tree of retries and splits costs. Requests at temperature 0
get the same ranking on every call; refusals stay random per call, as GPT-4V's were.
"""

from __future__ import annotations

import ast
import colorsys
import hashlib
import io
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from . import styles
from .requests import canonical_from_body, items_of, key_of

log = logging.getLogger(__name__)

MODELS = ("gpt-4-vision-preview", "gpt-4o", "sandbox")
DEFAULT_LABELS = ("happy", "sad", "angry", "neutral")
REFUSALS = ("refuse_400", "refuse_filter", "refuse_field", "refuse_text")
PROSE = ("", "Here are the results:", "Sure! Based on the visual cues, here is my ranking.",
         "Note: these judgements are approximate.")


@dataclass(frozen=True)
class SandboxConfig:
    seed: int = 0
    accuracy: float = 0.8
    refusal_rate: float = 0.0
    poison: frozenset[str] = frozenset()
    drop_rate: float = 0.0
    extra_rate: float = 0.0
    error_rate: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    window: float = 60.0
    latency: float = 0.0
    styles: tuple[str, ...] = tuple(styles.STYLES)


def draw(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) from the seed and parts: stable across runs and machines."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def outcome(config: SandboxConfig, key: str, nth: int, poisoned: bool) -> str:
    """What the nth call of a request gets: "ok", a refusal kind, "drop", "extra" or "error"."""
    kind = REFUSALS[int(draw(config.seed, key, nth, "kind") * len(REFUSALS))]
    if poisoned:
        return kind
    if draw(config.seed, key, nth, "error") < config.error_rate:
        return "error"
    if draw(config.seed, key, nth, "refuse") < config.refusal_rate:
        return kind
    if draw(config.seed, key, nth, "drop") < config.drop_rate:
        return "drop"
    if draw(config.seed, key, nth, "extra") < config.extra_rate:
        return "extra"
    return "ok"


def labels_of(prompt: str) -> tuple[str, ...]:
    """The candidate labels a prompt offers (a Python list after "categories:")."""
    match = re.search(r"categories:\s*(\[[^\]]*\])", prompt)
    try:
        found = ast.literal_eval(match.group(1)) if match else None
    except (ValueError, SyntaxError):
        found = None
    return tuple(str(x) for x in found) if found else DEFAULT_LABELS


def shown_label(text: str | None, images: list[bytes], labels: tuple[str, ...]) -> int | None:
    """The label a sample "shows": one its text names, else its images' hue (demo convention)."""
    if text:
        lowered = text.lower()
        for label in sorted(labels, key=len, reverse=True):
            if re.search(rf"\b{re.escape(label.lower())}\b", lowered):
                return labels.index(label)
    if not images:
        return None
    with Image.open(io.BytesIO(images[0])) as image:
        mean = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    red, green, blue = (channel / 255 for channel in mean)
    hue, saturation, _ = colorsys.rgb_to_hsv(red, green, blue)
    if saturation < 0.1:
        return None
    return round(hue * len(labels)) % len(labels)


def answer(config: SandboxConfig, key: str, nth: int, canonical: dict[str, Any],
           images: dict[str, bytes], verdict: str) -> str:
    """The answer text: a ranking of every candidate for each sample, in a seeded style."""
    prompt, items = items_of(canonical)
    labels = labels_of(prompt)
    call = nth if canonical.get("temperature", 1) != 0 else 0
    answers = []
    for name, digests, text in items:
        shown = shown_label(text, [images[d] for d in digests if d in images], labels)
        rank = sorted(range(len(labels)), key=lambda i: draw(config.seed, key, call, name, i))
        if shown is None or draw(config.seed, key, call, name, "right") >= config.accuracy:
            top = rank[0] if shown is None or rank[0] != shown else rank[1]
        else:
            top = shown
        rank.remove(top)
        answers.append((name, [labels[top]] + [labels[i] for i in rank]))
    if verdict == "drop" and answers:
        answers.pop(int(draw(config.seed, key, nth, "which") * len(answers)))
    if verdict == "extra":
        noun = items[0][0].rsplit("-", 1)[0] if items else "image"
        answers.append((f"{noun}-{len(items) + 1}", list(labels)))
    style = config.styles[int(draw(config.seed, key, call, "style") * len(config.styles))]
    before = PROSE[int(draw(config.seed, key, call, "before") * len(PROSE))]
    return styles.render(style, answers, before=before)


@dataclass
class _State:
    """Counters shared by the server's threads."""

    served: Counter = field(default_factory=Counter)
    calls: int = 0
    rate_limited: int = 0
    refused: int = 0
    errors: int = 0
    day: int = 0
    recent: deque = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "ger"} for m in MODELS]})
        elif self.path.rstrip("/") == "/sandbox/stats":
            self._send(200, self.server.stats())
        else:
            self._send(404, _error(f"no route {self.path}", "invalid_request_error", None))

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") == "/sandbox/new-day":
            self.server.new_day()
            self._send(200, {"ok": True})
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, _error(f"no route {self.path}", "invalid_request_error", None))
            return
        try:
            body = json.loads(raw)
            canonical, images = canonical_from_body(body)
            items_of(canonical)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self._send(400, _error(f"malformed request: {exc}", "invalid_request_error", None))
            return
        self._send(*self.server.complete(canonical, images))


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}m{seconds:.3f}s" if minutes else f"{seconds:.3f}s"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: SandboxConfig):
        super().__init__(address, _Handler)
        self.config = config
        self.state = _State()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a killed `ger record`) is routine here, not a traceback."""
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)

    def stats(self) -> dict[str, Any]:
        with self.state.lock:
            return {"calls": self.state.calls, "rate_limited": self.state.rate_limited,
                    "refused": self.state.refused, "errors": self.state.errors,
                    "day": self.state.day, "by_key": dict(self.state.served)}

    def new_day(self) -> None:
        with self.state.lock:
            self.state.day = 0

    def _limit(self) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """A 429 when a limit is spent (the caller holds the lock), else None."""
        config, state, now = self.config, self.state, time.monotonic()
        while state.recent and state.recent[0] <= now - config.window:
            state.recent.popleft()
        if config.rpd is not None and state.day >= config.rpd:
            message = (f"Rate limit reached for requests per day (RPD): Limit {config.rpd}, "
                       f"Used {state.day}, Requested 1.")
            return 429, _error(message, "requests", "rate_limit_exceeded"), {}
        allowed = max(1, round((config.rpm or 0) * config.window / 60))
        if config.rpm is not None and len(state.recent) >= allowed:
            wait = state.recent[0] + config.window - now
            message = (f"Rate limit reached for requests per min (RPM): Limit {config.rpm}, "
                       f"Used {len(state.recent)}, Requested 1. Please try again in "
                       f"{_duration(wait)}.")
            return 429, _error(message, "requests", "rate_limit_exceeded"), {
                "retry-after": f"{wait:.3f}", "retry-after-ms": str(int(wait * 1000)),
                **self._headers(now)}
        return None

    def _headers(self, now: float) -> dict[str, str]:
        config, state = self.config, self.state
        if config.rpm is None:
            return {}
        allowed = max(1, round(config.rpm * config.window / 60))
        reset = state.recent[0] + config.window - now if state.recent else 0.0
        return {"x-ratelimit-limit-requests": str(config.rpm),
                "x-ratelimit-remaining-requests": str(max(0, allowed - len(state.recent))),
                "x-ratelimit-reset-requests": _duration(reset)}

    def complete(self, canonical: dict[str, Any], images: dict[str, bytes]) -> tuple:
        config, state = self.config, self.state
        key = key_of(canonical)
        with state.lock:
            limited = self._limit()
            if limited:
                state.rate_limited += 1
                return limited
            nth = state.served[key]
            state.served[key] += 1
            state.calls += 1
            state.day += 1
            state.recent.append(time.monotonic())
            headers = self._headers(time.monotonic())
        if config.latency:
            time.sleep(config.latency)
        _, items = items_of(canonical)
        poisoned = any(d in config.poison for _, digests, _ in items for d in digests) or any(
            hashlib.sha256((text or "").encode()).hexdigest() in config.poison
            for _, _, text in items if text)
        verdict = outcome(config, key, nth, poisoned)
        if verdict in REFUSALS:
            with state.lock:
                state.refused += 1
        if verdict == "error":
            with state.lock:
                state.errors += 1
            return 503, _error("The server is overloaded, try again.", "server_error", None), {}
        if verdict == "refuse_400":
            return 400, _error("Your input image may contain content that is not allowed by "
                               "our safety system.", "invalid_request_error",
                               "content_policy_violation"), headers
        content: str | None = None
        refusal = None
        finish = "stop"
        if verdict == "refuse_filter":
            finish = "content_filter"
        elif verdict == "refuse_field":
            refusal = "I'm sorry, I can't assist with that."
        elif verdict == "refuse_text":
            content = ("I'm sorry, but I can't help with identifying or making assumptions "
                       "about people in images.")
        else:
            content = answer(config, key, nth, canonical, images, verdict)
        prompt_tokens = len(json.dumps(canonical)) // 4 + 85 * len(images)
        completion_tokens = len(content or "") // 4
        return 200, {
            "id": f"chatcmpl-{key[:12]}-{nth}", "object": "chat.completion", "created": 1700000000,
            "model": canonical.get("model", "sandbox"),
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, headers


class Sandbox:
    """A sandbox server on a thread: `with Sandbox(config).start() as s: ... s.url ...`."""

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self._server = _Server((host, port), config or SandboxConfig())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> Sandbox:
        self._thread.start()
        return self

    def stats(self) -> dict[str, Any]:
        return self._server.stats()

    def new_day(self) -> None:
        self._server.new_day()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (the `ger sandbox` command)."""
    server = _Server((host, port), config)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
