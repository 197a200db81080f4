"""Idempotency-Key: a POST retried with the same key answers what the first did.

The first request with a key inserts a row (token, key, hash of the
request) before doing anything; the unique index makes a concurrent twin
wait its turn with a 409. Once the action is done, its answer is stored and
every retry with the same key and the same request gets it again (with
``Idempotent-Replayed: true``); the same key with another request is a 422.
A failed request leaves no row, so it can simply be tried again.

The mail an action spools is pinned to the row before it is spooled. If
the daemon dies between spooling and storing the answer, the retry (after
:data:`STALE`) spools the very same bytes, which intake recognises as a
message it already has: the action still happens once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import peewee as pw
from aiohttp import web

from gateway import models
from gateway.api.problems import Problem
from gateway.api.tokens import Caller
from gateway.db import Store, transaction, utcnow

STALE = dt.timedelta(minutes=2)  # a first request this old without an answer died
KEEP = dt.timedelta(days=1)
Run = Callable[[web.Request, Caller, dict[str, Any]], Awaitable[tuple[int, Any]]]
ROW = web.RequestKey("idempotency_row", int)  # the request's idempotency_key row


async def handle(
    store: Store, request: web.Request, caller: Caller, run: Run, *, replay: bool = True
) -> web.Response:
    """Run ``run`` once per Idempotency-Key (when one is sent and ``replay``)."""
    body = await _json(request)
    key = request.headers.get("Idempotency-Key")
    if key is None or not replay:
        status, data = await run(request, caller, body)
        return web.json_response(data, status=status)
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise Problem(400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
    digest = _request_hash(request, body)
    state, row = await store.run(_begin, caller.token_id, key, digest)
    if state == "replay":
        assert row is not None and row.status is not None
        return web.json_response(
            json.loads(row.response or "null"),
            status=row.status,
            headers={"Idempotent-Replayed": "true"},
        )
    if state == "mismatch":
        raise Problem(422, "this Idempotency-Key was used for a different request")
    if state == "busy":
        raise Problem(409, "a request with this Idempotency-Key is still running; retry later")
    assert row is not None
    request[ROW] = row.id
    try:
        status, data = await run(request, caller, body)
    except BaseException:
        # Forgotten only if nothing was spooled yet. Once the mail is pinned
        # (and maybe spooled), the row stays: a retry after STALE takes it
        # over and spools the very same bytes, which intake stores once.
        await asyncio.shield(store.run(_forget_unpinned, row.id))
        raise
    if status >= 300:
        await store.run(_forget_unpinned, row.id)
    else:
        await store.run(_finish, row.id, status, json.dumps(data, ensure_ascii=False))
    return web.json_response(data, status=status)


async def pin(store: Store, request: web.Request, raw: bytes) -> bytes:
    """The bytes to spool for this request: pinned on its first try, the same on a retry."""
    row_id = request.get(ROW)
    if row_id is None:
        return raw
    pinned: bytes = await store.run(_pin, row_id, raw)
    return pinned


def purge() -> int:
    """Forget answers older than a day."""
    rows = models.IdempotencyKey
    return int(rows.delete().where(rows.created_at < utcnow() - KEEP).execute())


async def _json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise Problem(415, "send JSON with Content-Type: application/json")
    try:
        # A body with attachments can be megabytes: decoded off the event loop.
        data = await asyncio.to_thread(json.loads, raw) if len(raw) > 65536 else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Problem(400, "the body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise Problem(400, "the body must be a JSON object")
    return data


def _request_hash(request: web.Request, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{request.method} {request.path}\n{canonical}".encode()).hexdigest()


def _begin(token_id: int, key: str, digest: str) -> tuple[str, models.IdempotencyKey | None]:
    """new | replay | mismatch | busy, with the row."""
    rows = models.IdempotencyKey
    with transaction(models.database.obj):
        row = rows.get_or_none((rows.token == token_id) & (rows.key == key))
        if row is None:
            try:
                with models.database.obj.atomic():
                    row = rows.create(
                        token=token_id, key=key, request_hash=digest, created_at=utcnow()
                    )
            except pw.IntegrityError:
                return "busy", None
            return "new", row
        if row.request_hash != digest:
            return "mismatch", row
        if row.status is not None:
            return "replay", row
        if row.created_at > utcnow() - STALE:
            return "busy", row
        row.created_at = utcnow()  # taken over from a first try that died
        row.save()
        return "new", row


def _pin(row_id: int, raw: bytes) -> bytes:
    with transaction(models.database.obj):
        row = models.IdempotencyKey.get_by_id(row_id)
        if row.pinned is not None:
            return bytes(row.pinned)
        row.pinned = raw
        row.save()
    return raw


def _finish(row_id: int, status: int, response: str) -> None:
    with transaction(models.database.obj):
        models.IdempotencyKey.update(status=status, response=response, pinned=None).where(
            models.IdempotencyKey.id == row_id
        ).execute()


def _forget_unpinned(row_id: int) -> None:
    """Drop a first try that spooled nothing, so the key can simply be used again."""
    rows = models.IdempotencyKey
    with transaction(models.database.obj):
        rows.delete().where((rows.id == row_id) & rows.pinned.is_null()).execute()
