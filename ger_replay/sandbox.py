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
from .limits import image_tokens
from .requests import canonical_from_body, items_of, key_of

log = logging.getLogger(__name__)

MODELS = ("gpt-4-vision-preview", "gpt-4o", "sandbox")
DEFAULT_LABELS = ("happy", "sad", "angry", "neutral")
REFUSALS = ("refuse_400", "refuse_filter", "refuse_field", "refuse_text")
PROSE = ("", "Here are the results:", "Sure! Based on the visual cues, here is my ranking.",
         "Note: these judgements are approximate.")
CREATED = 1700000000
SAFETY = "Your input image may contain content that is not allowed by our safety system."
REFUSAL_FIELD = "I'm sorry, I can't assist with that."
REFUSAL_TEXT = ("I'm sorry, but I can't help with identifying or making assumptions about people "
                "in images.")
SERVER_ERRORS = {500: "The server had an error while processing your request. Sorry about that!",
                 503: "The engine is currently overloaded, please try again later."}


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; every rate is a share of calls, decided per (key, nth call)."""

    seed: int = 0
    accuracy: float = 0.8
    refusal_rate: float = 0.0
    poison: frozenset[str] = frozenset()  # SHA-256 of image bytes or sample text: always refused
    drop_rate: float = 0.0
    extra_rate: float = 0.0
    error_rate: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    window: float = 60.0  # the rpm/tpm window in seconds; tests shrink it (and the budget) to 1 s
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


def poisoned(config: SandboxConfig, canonical: dict[str, Any]) -> bool:
    """Whether any image or sample text of the request is on the poison list."""
    _, items = items_of(canonical)
    return any(digest in config.poison for _, digests, _ in items for digest in digests) or any(
        hashlib.sha256(text.encode()).hexdigest() in config.poison for _, _, text in items if text)


def labels_of(prompt: str) -> tuple[str, ...]:
    """The candidate labels a prompt offers (a Python list after "categories:")."""
    match = re.search(r"categories:\s*(\[[^\]]*\])", prompt)
    try:
        found = ast.literal_eval(match.group(1)) if match else None
    except (ValueError, SyntaxError):
        found = None
    return tuple(str(x) for x in found) if found else DEFAULT_LABELS


def shown_label(text: str | None, images: list[bytes], labels: tuple[str, ...]) -> int | None:
    """The label a sample "shows": one its text names, else its first image's hue (demo convention).

    Hue is that of the mean colour, mapped to label `round(hue * L) % L`; grey shows nothing.
    """
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


def prompt_tokens(canonical: dict[str, Any], images: dict[str, bytes]) -> int:
    """Input tokens, estimated: text characters / 4, plus the published tile rule per image.

    The tile rule is `limits.image_tokens` (85 for a low-detail image, else 85 + 170 per 512-px
    tile), so a client pacing itself with `limits.request_tokens` meets this sandbox's budget.
    Raises OSError (PIL's UnidentifiedImageError) for an image that cannot be decoded.
    """
    chars, tokens = 0, 0
    for part in canonical["messages"][-1]["content"]:
        if part.get("type") == "text":
            chars += len(part["text"])
            continue
        image_url = part.get("image_url") or {}
        data = images.get(image_url.get("url", "").removeprefix("sha256:"))
        if data is None:
            tokens += 85
            continue
        with Image.open(io.BytesIO(data)) as image:
            tokens += image_tokens(*image.size, image_url.get("detail"))
    return chars // 4 + tokens


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `17ms`, `1.2s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, seconds = divmod(seconds, 60)
    text = f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def _completion(key: str, nth: int, model: str, content: str | None, refusal: str | None,
                finish: str, prompt: int) -> dict[str, Any]:
    completion = len(content or "") // 4
    return {
        "id": f"chatcmpl-{key[:12]}-{nth}", "object": "chat.completion", "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""


class _Meter:
    """Requests and tokens in the sliding window, and requests today; the server's lock guards it."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.day = 0

    def _budget(self, per_minute: int) -> int:
        return max(1, round(per_minute * self.config.window / 60))

    def _expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - self.config.window:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - self.config.window:
            self.tokens.popleft()

    def refuse(self, tokens: int, now: float) -> _Reply | None:
        """A 429 when a request of `tokens` does not fit a limit, else None."""
        config = self.config
        self._expire(now)
        if config.rpd is not None and self.day >= config.rpd:
            message = (f"Rate limit reached for requests per day (RPD): Limit {config.rpd}, "
                       f"Used {self.day}, Requested 1. Please try again tomorrow.")
            return _Reply(429, _error(message, "requests", "rate_limit_exceeded"),
                          {"retry-after": "86400"}, "429 rpd")
        wait, message = 0.0, ""
        if config.rpm is not None and len(self.requests) >= self._budget(config.rpm):
            wait = self.requests[0] + config.window - now
            message = (f"Rate limit reached for requests per min (RPM): Limit {config.rpm}, "
                       f"Used {len(self.requests)}, Requested 1.")
        elif config.tpm is not None and self.tokens:
            used, budget = sum(spent for _, spent in self.tokens), self._budget(config.tpm)
            if used + tokens > budget:
                # a request larger than the whole budget passes once the window is empty
                freed, wait = 0, self.tokens[-1][0] + config.window - now
                for at, spent in self.tokens:
                    freed += spent
                    if used - freed + tokens <= budget:
                        wait = at + config.window - now
                        break
                message = (f"Rate limit reached for tokens per min (TPM): Limit {config.tpm}, "
                           f"Used {used}, Requested {tokens}.")
        if not message:
            return None
        message += f" Please try again in {_duration(wait)}."
        millis = max(1, round(wait * 1000))
        headers = {"retry-after": f"{millis / 1000:.3f}", "retry-after-ms": str(millis),
                   **self.headers(now)}
        return _Reply(429, _error(message, "requests", "rate_limit_exceeded"), headers, "429")

    def spend(self, tokens: int, now: float) -> None:
        self.requests.append(now)
        self.tokens.append((now, tokens))
        self.day += 1

    def headers(self, now: float) -> dict[str, str]:
        """The `x-ratelimit-*` headers of the limits that are set."""
        config, found = self.config, {}
        if config.rpm is not None:
            reset = self.requests[0] + config.window - now if self.requests else 0.0
            found.update({
                "x-ratelimit-limit-requests": str(config.rpm),
                "x-ratelimit-remaining-requests": str(
                    max(0, self._budget(config.rpm) - len(self.requests))),
                "x-ratelimit-reset-requests": _duration(reset)})
        if config.tpm is not None:
            used = sum(spent for _, spent in self.tokens)
            reset = self.tokens[0][0] + config.window - now if self.tokens else 0.0
            found.update({
                "x-ratelimit-limit-tokens": str(config.tpm),
                "x-ratelimit-remaining-tokens": str(max(0, self._budget(config.tpm) - used)),
                "x-ratelimit-reset-tokens": _duration(reset)})
        return found


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    note = ""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line only (never headers, so never the Authorization header).
        suffix = f" {self.note}" if self.note else ""
        log.info("%s %s -> %s%s", self.command, self.path, code, suffix)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, reply: _Reply) -> None:
        self.note = reply.note
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._send(_Reply(404, _error(f"no route {self.command} {self.path}",
                                      "invalid_request_error", "unknown_url")))

    def do_GET(self) -> None:
        route = self.path.rstrip("/")
        if route == "/v1/models":
            self._send(_Reply(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "ger"}
                for m in MODELS]}))
        elif route == "/sandbox/stats":
            self._send(_Reply(200, self.server.stats()))
        else:
            self._not_found()

    def do_POST(self) -> None:
        try:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        except ValueError:
            self._send(_Reply(400, _error("bad content-length", "invalid_request_error", None)))
            return
        route = self.path.rstrip("/")
        if route == "/sandbox/new-day":
            self.server.new_day()
            self._send(_Reply(200, {"ok": True}))
        elif route == "/v1/chat/completions":
            self._send(self.server.complete(raw))
        else:
            self._not_found()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: SandboxConfig):
        super().__init__(address, _Handler)
        self.config = config
        self.lock = threading.Lock()
        self.meter = _Meter(config)
        self.served: Counter[str] = Counter()
        self.counts = Counter({"calls": 0, "rate_limited": 0, "refused": 0, "errors": 0})

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a killed `ger record`) is routine here, not a traceback."""
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {**self.counts, "day": self.meter.day, "by_key": dict(self.served)}

    def new_day(self) -> None:
        with self.lock:
            self.meter.day = 0

    def complete(self, raw: bytes) -> _Reply:
        """Answer one chat-completions body: parse, meter, decide, render."""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise TypeError("the body is not a JSON object")
            canonical, images = canonical_from_body(body)
            items_of(canonical)
            tokens = prompt_tokens(canonical, images)
        except OSError as exc:  # PIL could not decode an image
            return _Reply(400, _error(f"invalid image: {exc}", "invalid_request_error",
                                      "invalid_image_format"), note="bad image")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return _Reply(400, _error(f"malformed request: {exc}", "invalid_request_error",
                                      None), note="malformed")
        key, bad = key_of(canonical), poisoned(self.config, canonical)
        with self.lock:
            limited = self.meter.refuse(tokens, time.monotonic())
            if limited:
                self.counts["rate_limited"] += 1
                return limited
            nth = self.served[key]
            self.served[key] += 1
            self.counts["calls"] += 1
            self.meter.spend(tokens, time.monotonic())
            headers = self.meter.headers(time.monotonic())
            verdict = outcome(self.config, key, nth, bad)
            if verdict in REFUSALS:
                self.counts["refused"] += 1
            elif verdict == "error":
                self.counts["errors"] += 1
        if self.config.latency:
            time.sleep(self.config.latency)
        return self._reply(canonical, images, key, nth, verdict, tokens, headers)

    def _reply(self, canonical: dict[str, Any], images: dict[str, bytes], key: str, nth: int,
               verdict: str, tokens: int, headers: dict[str, str]) -> _Reply:
        note = f"{key[:12]} #{nth} {verdict}"
        model = str(canonical.get("model", "sandbox"))
        if verdict == "error":
            status = 500 if draw(self.config.seed, key, nth, "status") < 0.5 else 503
            return _Reply(status, _error(SERVER_ERRORS[status], "server_error", None), {}, note)
        if verdict == "refuse_400":
            return _Reply(400, _error(SAFETY, "invalid_request_error",
                                      "content_policy_violation"), headers, note)
        content, refusal, finish = None, None, "stop"
        if verdict == "refuse_filter":
            finish = "content_filter"
        elif verdict == "refuse_field":
            refusal = REFUSAL_FIELD
        elif verdict == "refuse_text":
            content = REFUSAL_TEXT
        else:
            content = answer(self.config, key, nth, canonical, images, verdict)
        body = _completion(key, nth, model, content, refusal, finish, tokens)
        return _Reply(200, body, headers, note)


class Sandbox:
    """A sandbox server on a thread: `with Sandbox(config).start() as s: ... s.url ...`."""

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self._server = _Server((host, port), config or SandboxConfig())
        # A short poll interval makes stop() quick, which keeps test suites fast.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

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
    """Serve until interrupted (the `ger sandbox` command); one INFO log line per request."""
    server = _Server((host, port), config)
    log.info("sandbox listening on http://%s:%s/v1", host, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
