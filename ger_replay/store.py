"""The response store, `cache.db`: requests by key, numbered attempts, image hashes and runs.

Plain sqlite-utils tables with JSON text columns, so `datasette cache.db` or `sqlite-utils` can
browse it. Every write is committed as it happens (a killed run loses nothing answered), the
schema carries its version in `PRAGMA user_version`, and WAL plus a busy timeout let two
`ger record` processes share one file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import StoreError
from .requests import Request, canonical_json, key_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One call of a request key, as the API answered it (refusals and hard errors included)."""

    key: str
    n: int
    status: str  # "answered" | "refused" | "error"
    epoch: int = 0
    kind: str | None = None  # why refused or failed: content_policy, content_filter, refusal, ...
    http_status: int = 200
    text: str | None = None
    finish_reason: str | None = None
    refusal: str | None = None
    raw: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    latency_ms: int = 0
    created: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _migration_1(db: sqlite_utils.Database) -> None:
    db["requests"].create({"key": str, "model": str, "n_samples": int, "canonical": str,
                           "created": str}, pk="key")
    db["images"].create({"sha256": str, "size": int, "bytes": bytes}, pk="sha256")
    db["attempts"].create({"key": str, "epoch": int, "n": int, "status": str, "kind": str,
                           "http_status": int, "text": str, "finish_reason": str,
                           "refusal": str, "raw": str, "usage": str, "latency_ms": int,
                           "created": str}, pk=("key", "epoch", "n"),
                          foreign_keys=[("key", "requests", "key")])
    db["errors"].create({"id": int, "key": str, "http_status": int, "message": str,
                         "created": str}, pk="id")
    db["runs"].create({"id": str, "dataset": str, "input": str, "model": str, "config": str,
                       "status": str, "created": str, "updated": str}, pk="id")
    db["run_samples"].create({"run_id": str, "name": str, "position": int, "batch": int,
                              "label": str, "text": str, "images": str},
                             pk=("run_id", "name"), foreign_keys=[("run_id", "runs", "id")])
    db["run_calls"].create({"run_id": str, "batch": int, "seq": int, "path": str, "level": int,
                            "key": str, "n": int, "verdict": str, "samples": str,
                            "answered": str}, pk=("run_id", "batch", "seq"),
                           foreign_keys=[("run_id", "runs", "id")])
    db["predictions"].create({"run_id": str, "name": str, "status": str, "ranking": str,
                              "key": str, "n": int, "diagnostics": str},
                             pk=("run_id", "name"), foreign_keys=[("run_id", "runs", "id")])
    db["attempts"].create_index(["key"])
    db["errors"].create_index(["key"])


def _migration_2(db: sqlite_utils.Database) -> None:
    """Each run's planned batches with the key of their first request, so `ger store verify`
    can tell when today's code would ask something else than the store answered."""
    db["run_batches"].create({"run_id": str, "batch": int, "key": str, "samples": str},
                             pk=("run_id", "batch"), foreign_keys=[("run_id", "runs", "id")])


# Numbered migrations: the store's `PRAGMA user_version` says how many have run.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_migration_1, _migration_2)


class Store:
    """A ger store. Thread-safe: one connection, serialised by a lock."""

    def __init__(self, path: str | Path, *, create: bool = True, keep_images: bool = False):
        self.path = Path(path)
        self.keep_images = keep_images
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: no such store; record a run first or pass --store")
        self._lock = threading.RLock()
        try:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.enable_wal()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a ger store ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._lock:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(f"{self.path}: written by a newer ger (schema {version}); upgrade ger")
            if version == 0 and self.db.table_names() and "requests" not in self.db.table_names():
                raise StoreError(f"{self.path}: a SQLite file, but not a ger store")
            for number in range(version, len(MIGRATIONS)):
                with self.db.atomic():
                    MIGRATIONS[number](self.db)
                    self.db.execute(f"PRAGMA user_version = {number + 1}")
                log.info("store %s: migrated to schema %d", self.path, number + 1)

    # Requests, images and attempts.

    def put_request(self, request: Request) -> None:
        with self._lock:
            self.db["requests"].insert({
                "key": request.key, "model": request.canonical.get("model"),
                "n_samples": len(request.samples),
                "canonical": canonical_json(request.canonical), "created": _now(),
            }, ignore=True)

    def request(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db["requests"].rows_where("key = ?", [key]))
        if not rows:
            return None
        return json.loads(rows[0]["canonical"])

    def put_image(self, digest: str, data: bytes) -> None:
        """Remember an image's hash; its bytes only when the store was opened to keep them."""
        with self._lock:
            self.db["images"].insert({"sha256": digest, "size": len(data),
                                      "bytes": data if self.keep_images else None}, ignore=True)
            if self.keep_images:
                self.db.execute("UPDATE images SET bytes = ? WHERE sha256 = ? AND bytes IS NULL",
                                [data, digest])

    def image_bytes(self, digest: str) -> bytes | None:
        with self._lock:
            row = self.db.execute("SELECT bytes FROM images WHERE sha256 = ?", [digest]).fetchone()
        return row[0] if row else None

    def latest_epoch(self, key: str) -> int:
        with self._lock:
            row = self.db.execute("SELECT MAX(epoch) FROM attempts WHERE key = ?", [key]).fetchone()
        return row[0] if row and row[0] is not None else 0

    def attempt(self, key: str, n: int, epoch: int) -> Attempt | None:
        with self._lock:
            rows = list(self.db["attempts"].rows_where("key = ? AND epoch = ? AND n = ?",
                                                       [key, epoch, n]))
        return _attempt(rows[0]) if rows else None

    def attempts(self, key: str) -> list[Attempt]:
        """The attempts replay serves for a key: those of its newest epoch, in order."""
        epoch = self.latest_epoch(key)
        with self._lock:
            rows = self.db["attempts"].rows_where("key = ? AND epoch = ?", [key, epoch],
                                                  order_by="n")
            return [_attempt(row) for row in rows]

    def add_attempt(self, attempt: Attempt) -> Attempt:
        """Store an attempt unless another process stored that number first; return the stored one."""
        row = {
            "key": attempt.key, "epoch": attempt.epoch, "n": attempt.n, "status": attempt.status,
            "kind": attempt.kind, "http_status": attempt.http_status, "text": attempt.text,
            "finish_reason": attempt.finish_reason, "refusal": attempt.refusal,
            "raw": attempt.raw, "usage": json.dumps(attempt.usage),
            "latency_ms": attempt.latency_ms, "created": attempt.created or _now(),
        }
        with self._lock:
            self.db["attempts"].insert(row, ignore=True)
            stored = self.attempt(attempt.key, attempt.n, attempt.epoch)
        assert stored is not None
        return stored

    def calls_since_hours(self, hours: float) -> int:
        """Attempts paid for lately, so a requests-per-day budget spans several runs."""
        since = (datetime.now(timezone.utc) - timedelta(hours=hours)).isoformat(timespec="seconds")
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM attempts WHERE created >= ?",
                                   [since]).fetchone()[0]

    def log_error(self, key: str, http_status: int | None, message: str) -> None:
        """A transient failure (429, 5xx, timeout): logged, never served as an attempt."""
        with self._lock:
            self.db["errors"].insert({"key": key, "http_status": http_status,
                                      "message": message[:2000], "created": _now()})

    # Runs.

    def save_run(self, run_id: str, dataset: str, input_kind: str, model: str,
                 config: dict[str, Any], samples: Sequence[dict[str, Any]],
                 batches: Sequence[tuple[str, Sequence[str]]] = ()) -> None:
        """Record a run's configuration and plan (samples, and batches with their first key);
        an existing run keeps its plan."""
        with self._lock, self.db.atomic():
            if self.db["runs"].count_where("id = ?", [run_id]):
                self.db["runs"].update(run_id, {"updated": _now()})
                return
            self.db["runs"].insert({"id": run_id, "dataset": dataset, "input": input_kind,
                                    "model": model, "config": json.dumps(config, sort_keys=True),
                                    "status": "planned", "created": _now(), "updated": _now()})
            self.db["run_samples"].insert_all(
                [{"run_id": run_id, **sample, "images": json.dumps(sample.get("images", []))}
                 for sample in samples])
            self.db["run_batches"].insert_all(
                [{"run_id": run_id, "batch": index, "key": key, "samples": json.dumps(list(names))}
                 for index, (key, names) in enumerate(batches)])

    def planned_keys(self, run_id: str) -> dict[int, str]:
        """The key each batch of a run was planned with (empty for runs older than schema 2)."""
        with self._lock:
            return {row["batch"]: row["key"]
                    for row in self.db["run_batches"].rows_where("run_id = ?", [run_id])}

    def set_run_status(self, run_id: str, status: str) -> None:
        with self._lock:
            self.db["runs"].update(run_id, {"status": status, "updated": _now()})

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.db["runs"].rows_where(order_by="rowid"))
        for row in rows:
            row["config"] = json.loads(row["config"])
        return rows

    def run(self, run_id: str) -> dict[str, Any]:
        matches = [row for row in self.runs() if row["id"] == run_id or row["id"].startswith(run_id)]
        if len(matches) != 1:
            known = ", ".join(row["id"] for row in self.runs()) or "none"
            what = "no run" if not matches else "several runs"
            raise StoreError(f"{self.path}: {what} matching {run_id!r}; runs: {known}")
        return matches[0]

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.db["run_samples"].rows_where("run_id = ?", [run_id],
                                                          order_by="position"))
        for row in rows:
            row["images"] = json.loads(row["images"])
        return rows

    def save_calls(self, run_id: str, batch: int, calls: Sequence[dict[str, Any]]) -> None:
        """The walked tree of one batch, replacing what an interrupted walk left."""
        with self._lock, self.db.atomic():
            self.db.execute("DELETE FROM run_calls WHERE run_id = ? AND batch = ?", [run_id, batch])
            self.db["run_calls"].insert_all(
                [{"run_id": run_id, "batch": batch, "seq": seq, **call,
                  "samples": json.dumps(call["samples"]),
                  "answered": json.dumps(call.get("answered", []))}
                 for seq, call in enumerate(calls)])

    def calls(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.db["run_calls"].rows_where("run_id = ?", [run_id],
                                                        order_by="batch, seq"))
        for row in rows:
            row["samples"] = json.loads(row["samples"])
            row["answered"] = json.loads(row["answered"])
        return rows

    def save_predictions(self, run_id: str, predictions: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            self.db["predictions"].upsert_all(
                [{"run_id": run_id, **p, "ranking": json.dumps(p.get("ranking")),
                  "diagnostics": json.dumps(p.get("diagnostics", {}))} for p in predictions],
                pk=("run_id", "name"))

    def predictions(self, run_id: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = list(self.db["predictions"].rows_where("run_id = ?", [run_id]))
        found = {}
        for row in rows:
            row["ranking"] = json.loads(row["ranking"]) if row["ranking"] else None
            row["diagnostics"] = json.loads(row["diagnostics"] or "{}")
            found[row["name"]] = row
        return found

    # Inspection.

    def stats(self) -> dict[str, Any]:
        """Counts a user checks before sharing or trusting a store."""
        q = self.db.execute
        with self._lock:
            statuses = dict(q("SELECT status, COUNT(*) FROM attempts GROUP BY status").fetchall())
            usage = q("SELECT COALESCE(SUM(json_extract(usage, '$.prompt_tokens')), 0),"
                      " COALESCE(SUM(json_extract(usage, '$.completion_tokens')), 0)"
                      " FROM attempts").fetchone()
            return {
                "path": str(self.path),
                "schema": q("PRAGMA user_version").fetchone()[0],
                "requests": self.db["requests"].count,
                "attempts": sum(statuses.values()),
                "attempts_by_status": statuses,
                "transient_errors": self.db["errors"].count,
                "images": self.db["images"].count,
                "images_with_bytes": q("SELECT COUNT(*) FROM images WHERE bytes IS NOT NULL")
                .fetchone()[0],
                "runs": self.db["runs"].count,
                "predictions": self.db["predictions"].count,
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
            }

    def verify(self) -> Iterator[str]:
        """Disagreements between stored content and its hashes or references, one line each."""
        with self._lock:
            requests = list(self.db.execute("SELECT key, canonical FROM requests"))
            images = list(self.db.execute("SELECT sha256, bytes FROM images"))
            orphans = list(self.db.execute(
                "SELECT DISTINCT key FROM attempts WHERE key NOT IN (SELECT key FROM requests)"))
            calls = list(self.db.execute(
                "SELECT DISTINCT run_id, key FROM run_calls WHERE key NOT IN "
                "(SELECT key FROM requests)"))
        known_images = {digest for digest, _ in images}
        for key, canonical in requests:
            try:
                actual = key_of(json.loads(canonical))
            except json.JSONDecodeError:
                yield f"request {key}: canonical form is not JSON"
                continue
            if actual != key:
                yield f"request {key}: canonical form hashes to {actual}"
            for part in json.loads(canonical)["messages"][-1]["content"]:
                url = (part.get("image_url") or {}).get("url", "")
                digest = url.removeprefix("sha256:")
                if url and digest not in known_images:
                    yield f"request {key}: image {digest} is not in the images table"
        for digest, data in images:
            if data is not None and hashlib.sha256(data).hexdigest() != digest:
                yield f"image {digest}: stored bytes hash to {hashlib.sha256(data).hexdigest()}"
        for (key,) in orphans:
            yield f"attempts for {key}: no such request"
        for run_id, key in calls:
            yield f"run {run_id}: calls request {key}, which is not stored"


def _attempt(row: dict[str, Any]) -> Attempt:
    return Attempt(key=row["key"], epoch=row["epoch"], n=row["n"], status=row["status"],
                   kind=row["kind"], http_status=row["http_status"], text=row["text"],
                   finish_reason=row["finish_reason"], refusal=row["refusal"], raw=row["raw"],
                   usage=json.loads(row["usage"] or "{}"), latency_ms=row["latency_ms"] or 0,
                   created=row["created"])
