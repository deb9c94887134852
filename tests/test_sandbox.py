"""The sandbox over real HTTP with the official SDK."""

import hashlib
import io
import json
import urllib.request
from collections import Counter

import openai
import pytest
from PIL import Image

from ger_replay.parsing import parse
from ger_replay.requests import Item, Params, build, key_of
from ger_replay.sandbox import REFUSALS, Sandbox, SandboxConfig, labels_of, outcome

LABELS = ["happy", "sad", "angry", "calm"]


def jpeg(index, count=len(LABELS)):
    hue = int(255 * index / count)
    buffer = io.BytesIO()
    Image.new("HSV", (24, 24), (hue, 220, 220)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def request(shown, temperature=None, model="gpt-4o"):
    images = [jpeg(i) for i in shown]
    items = [Item(f"s{n}", (hashlib.sha256(b).hexdigest(),)) for n, b in enumerate(images)]
    prompt = f"We provide {len(items)} images. Here are the optional categories: {LABELS!r}."
    built = build(prompt, "image", items, Params(model, temperature=temperature))
    by_hash = {hashlib.sha256(b).hexdigest(): b for b in images}
    return built, built.body(by_hash.__getitem__)


def client(server):
    return openai.OpenAI(base_url=server.url, api_key="sk-sandbox-test", max_retries=0)


def test_answers_follow_the_images_and_parse_back():
    with Sandbox(SandboxConfig(seed=4, accuracy=1.0)).start() as server:
        built, body = request([0, 1, 2, 3, 2])
        reply = client(server).chat.completions.create(**body)
    text = reply.choices[0].message.content
    parsed = parse(text, [f"image-{i}" for i in range(1, 6)], LABELS)
    assert parsed.complete
    assert [parsed.answers[f"image-{i}"][0] for i in range(1, 6)] == [
        "happy", "sad", "angry", "calm", "angry"]
    assert all(sorted(r) == sorted(LABELS) for r in parsed.answers.values())
    assert reply.usage.total_tokens > 0


def test_answers_are_deterministic_per_seed_and_call():
    built, body = request([0, 1, 2])
    texts = []
    for _ in range(2):
        with Sandbox(SandboxConfig(seed=9, accuracy=0.5)).start() as server:
            api = client(server)
            texts.append([api.chat.completions.create(**body).choices[0].message.content
                          for _ in range(3)])
    assert texts[0] == texts[1]
    with Sandbox(SandboxConfig(seed=10, accuracy=0.5)).start() as server:
        other = [client(server).chat.completions.create(**body).choices[0].message.content
                 for _ in range(3)]
    assert other != texts[0]


def test_temperature_zero_repeats_the_same_answer():
    built, body = request([0, 1, 2, 3], temperature=0)
    with Sandbox(SandboxConfig(seed=2, accuracy=0.3)).start() as server:
        api = client(server)
        texts = {api.chat.completions.create(**body).choices[0].message.content for _ in range(4)}
    assert len(texts) == 1


def test_refusals_come_in_every_kind_as_outcome_predicts():
    config = SandboxConfig(seed=1, refusal_rate=0.6)
    built, body = request([0, 1])
    seen = Counter()
    with Sandbox(config).start() as server:
        api = client(server)
        for nth in range(40):
            expected = outcome(config, built.key, nth, poisoned=False)
            try:
                reply = api.chat.completions.create(**body)
            except openai.BadRequestError as error:
                assert expected == "refuse_400" and error.code == "content_policy_violation"
                seen[expected] += 1
                continue
            choice = choice_kind(reply)
            assert choice == expected, nth
            seen[choice] += 1
        assert server.stats()["calls"] == 40
        assert server.stats()["by_key"] == {built.key: 40}
    assert set(seen) == {"ok", *REFUSALS}


def choice_kind(reply):
    choice = reply.choices[0]
    if choice.finish_reason == "content_filter":
        return "refuse_filter"
    if choice.message.refusal:
        return "refuse_field"
    if choice.message.content.startswith("I'm sorry"):
        return "refuse_text"
    return "ok"


def test_poisoned_samples_are_always_refused():
    poison = hashlib.sha256(jpeg(1)).hexdigest()
    config = SandboxConfig(seed=1, poison=frozenset({poison}))
    with Sandbox(config).start() as server:
        api = client(server)
        for nth in range(5):
            built, body = request([0, 1, 2])
            try:
                assert choice_kind(api.chat.completions.create(**body)) != "ok"
            except openai.BadRequestError:
                pass
        built, body = request([0, 2])
        assert choice_kind(api.chat.completions.create(**body)) == "ok"


def test_dropped_and_extra_samples():
    config = SandboxConfig(seed=3, drop_rate=0.5, extra_rate=1.0)
    built, body = request([0, 1, 2])
    names = ["image-1", "image-2", "image-3"]
    with Sandbox(config).start() as server:
        api = client(server)
        kinds = Counter()
        for nth in range(10):
            parsed = parse(api.chat.completions.create(**body).choices[0].message.content,
                           names, LABELS)
            kinds[outcome(config, built.key, nth, False)] += 1
            if outcome(config, built.key, nth, False) == "drop":
                assert len(parsed.missing) == 1
            else:
                assert parsed.unknown == ("image-4",)
    assert kinds["drop"] and kinds["extra"]


def test_rate_limits_answer_429_with_headers():
    built, body = request([0])
    with Sandbox(SandboxConfig(rpm=120, window=1.0)).start() as server:
        api = client(server)
        first = api.chat.completions.with_raw_response.create(**body)
        assert first.headers["x-ratelimit-limit-requests"] == "120"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        api.chat.completions.create(**body)
        with pytest.raises(openai.RateLimitError) as limited:
            api.chat.completions.create(**body)
        headers = limited.value.response.headers
        assert 0 < float(headers["retry-after"]) <= 1.0
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert server.stats()["rate_limited"] == 1 and server.stats()["calls"] == 2


def test_the_daily_limit_lasts_until_a_new_day():
    built, body = request([0])
    with Sandbox(SandboxConfig(rpd=1)).start() as server:
        api = client(server)
        api.chat.completions.create(**body)
        with pytest.raises(openai.RateLimitError, match="requests per day"):
            api.chat.completions.create(**body)
        urllib.request.urlopen(urllib.request.Request(
            server.url.replace("/v1", "/sandbox/new-day"), data=b"", method="POST"))
        api.chat.completions.create(**body)
        stats = json.load(urllib.request.urlopen(server.url.replace("/v1", "/sandbox/stats")))
    assert stats["calls"] == 2 and stats["rate_limited"] == 1


def test_models_and_keys():
    with Sandbox().start() as server:
        assert "gpt-4o" in [m.id for m in client(server).models.list()]
    built, body = request([0, 1])
    assert key_of(built.canonical) == built.key
    assert labels_of(body["messages"][0]["content"][0]["text"]) == tuple(LABELS)
    assert labels_of("no list here") != ()
