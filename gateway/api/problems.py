"""Errors as RFC 9457 problem details: a clear title, a detail, the fields at fault.

Handlers raise :class:`Problem`; the API's middleware turns it (and any
other failure, as a 500 without internals) into ``application/problem+json``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(Exception):
    """An API error with its status, detail and (for bad input) the fields at fault."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


def invalid(field: str, message: str) -> Problem:
    """A 400 naming one field."""
    return Problem(400, f"{field}: {message}", errors=[{"field": field, "message": message}])


def response(problem: Problem, instance: str) -> web.Response:
    """The problem as an HTTP response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if problem.errors:
        body["errors"] = problem.errors
    headers = {"Cache-Control": "no-store", **problem.headers}
    if problem.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="ticket-gateway"')
    return web.Response(
        status=problem.status,
        text=json.dumps(body, ensure_ascii=False),
        content_type=CONTENT_TYPE,
        headers=headers,
    )
