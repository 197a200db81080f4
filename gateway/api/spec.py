"""The OpenAPI 3.1 document of the API, served at /api/v1/openapi.json.

Written as data, next to the code it describes; the test suite runs
schemathesis against the served document, so a response that drifts from
it (a field, a status, a type) fails the build.
"""

from __future__ import annotations

from typing import Any

from gateway import __version__

STATUSES = ["new", "open", "waiting_on_customer", "resolved", "closed"]
PRIORITIES = ["low", "medium", "high", "urgent"]


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


TIME = _nullable("string", format="date-time")
PERSON = _object({"email": {"type": "string"}, "name": {"type": "string"}})

SCHEMAS: dict[str, Any] = {
    "Problem": _object(
        {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "items": _object({"field": {"type": "string"}, "message": {"type": "string"}}),
            },
        },
        required=["type", "title", "status", "detail"],
    ),
    "TicketSummary": _object(
        {
            "number": {"type": "integer"},
            "subject": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "priority": {"type": "string", "enum": PRIORITIES},
            "category": {"type": "string"},
            "mailbox": {"type": "string"},
            "requester": PERSON,
            "language": {"type": "string"},
            "assignee": _nullable("string"),
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "resolved_at": TIME,
            "closed_at": TIME,
            "rating": {"type": ["string", "null"], "enum": ["good", "bad", None]},
            "continues": _nullable("integer"),
        }
    ),
    "Attachment": _object(
        {
            "id": {"type": "integer"},
            "filename": {"type": "string"},
            "content_type": {"type": "string"},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
        }
    ),
    "Message": _object(
        {
            "id": {"type": "integer"},
            "message_id": {"type": "string"},
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "author": _object(
                {
                    "email": {"type": "string"},
                    "name": {"type": "string"},
                    "role": {"type": "string"},
                }
            ),
            "visibility": {"type": "string", "enum": ["public", "internal"]},
            "auto": {"type": "boolean"},
            "subject": {"type": "string"},
            "text": {"type": "string"},
            "html": _nullable("string"),
            "attachments": {"type": "array", "items": _ref("Attachment")},
            "created_at": {"type": "string", "format": "date-time"},
        }
    ),
    "Ticket": {
        "allOf": [
            _ref("TicketSummary"),
            _object(
                {
                    "participants": {
                        "type": "array",
                        "items": _object(
                            {
                                "email": {"type": "string"},
                                "name": {"type": "string"},
                                "role": {"type": "string"},
                            }
                        ),
                    },
                    "messages": {"type": "array", "items": _ref("Message")},
                    "events": {
                        "type": "array",
                        "items": _object(
                            {
                                "kind": {"type": "string"},
                                "actor": {"type": "string"},
                                "detail": {"type": "object"},
                                "created_at": {"type": "string", "format": "date-time"},
                            }
                        ),
                    },
                    "sla": _object(
                        {
                            "owed": {
                                "type": ["string", "null"],
                                "enum": ["first_response", "next_response", None],
                            },
                            "due_at": TIME,
                            "seconds_left": _nullable("integer"),
                        }
                    ),
                }
            ),
        ]
    },
    "TicketPage": _object(
        {
            "tickets": {"type": "array", "items": _ref("TicketSummary")},
            "next_cursor": _nullable("string"),
        }
    ),
    "Waiting": _object(
        {
            "number": {"type": "integer"},
            "mailbox": {"type": "string"},
            "status": {"type": "string", "enum": ["new", "open"]},
            "priority": {"type": "string", "enum": PRIORITIES},
            "category": {"type": "string"},
            "subject": {"type": "string"},
            "requester": {"type": "string"},
            "assignee": _nullable("string"),
            "created_at": {"type": "string", "format": "date-time"},
            "owed": {"type": ["string", "null"], "enum": ["first_response", "next_response", None]},
            "due_at": TIME,
            "seconds_left": _nullable("integer"),
            "late": {"type": "boolean"},
        }
    ),
    "Accepted": _object({"status": {"const": "accepted"}, "detail": {"type": "string"}}),
    "FileInput": {
        **_object(
            {
                "filename": {"type": "string", "minLength": 1, "maxLength": 255},
                "content_type": {
                    "type": "string",
                    "pattern": "^[^/\\s;]+/[^/\\s;]+$",
                    "examples": ["image/png"],
                },
                "content_base64": {
                    "type": "string",
                    "contentEncoding": "base64",
                    "pattern": "^[A-Za-z0-9+/]*={0,2}$",
                },
            },
            required=["filename", "content_base64"],
        ),
        "additionalProperties": False,
    },
}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {**_object(properties, required), "additionalProperties": False}
    return {
        "required": bool(required),
        "content": {"application/json": {"schema": schema}},
    }


# Some visible character, and no NUL (which no mail can carry).
VISIBLE = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
TEXT = {"type": "string", "minLength": 1, "maxLength": 100_000, "pattern": VISIBLE}
FILES = {"type": "array", "maxItems": 10, "items": _ref("FileInput")}

BODIES = {
    "new": _body(
        {
            "mailbox": {"type": "string", "format": "email"},
            "requester": {
                **_object(
                    {
                        "email": {"type": "string", "format": "email"},
                        "name": {"type": "string", "maxLength": 200},
                    },
                    required=["email"],
                ),
                "additionalProperties": False,
            },
            "subject": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": VISIBLE},
            "text": TEXT,
            "priority": {"type": "string", "enum": PRIORITIES},
            "category": {"type": "string"},
            "attachments": FILES,
        },
        ["requester", "subject", "text"],
    ),
    "reply": _body({"text": TEXT, "resolve": {"type": "boolean"}, "attachments": FILES}, ["text"]),
    "note": _body({"text": TEXT}, ["text"]),
    "escalate": _body({"note": {"type": "string", "maxLength": 100_000}}, []),
    "empty": _body({}, []),
    "patch": _body(
        {
            "priority": {"type": "string", "enum": PRIORITIES},
            "category": {"type": "string"},
            "assignee": {"type": "string", "format": "email"},
        },
        [],
    ),
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


PROBLEM = {
    "description": "an error (RFC 9457)",
    "content": {"application/problem+json": {"schema": _ref("Problem")}},
}
ERRORS = {
    status: {**PROBLEM, "description": text}
    for status, text in {
        "400": "bad input; `errors` names the fields",
        "401": "no valid API token",
        "404": "no such ticket in your mailboxes",
        "429": "rate limit reached; see Retry-After",
        "default": "any other error, as problem+json",
    }.items()
}
WRITE_ERRORS = {
    **ERRORS,
    "403": {**PROBLEM, "description": "your role may not do this"},
    "409": {**PROBLEM, "description": "not applied, or the same Idempotency-Key is running"},
    "415": {**PROBLEM, "description": "the body is not JSON"},
    "422": {**PROBLEM, "description": "the Idempotency-Key was used for another request"},
}
NUMBER = {
    "name": "number",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999},
}
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a retry with the same key answers what the first request did",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
DONE = {
    "200": _json("Ticket", "done; the ticket as it is now"),
    "202": _json("Accepted", "stored and queued; it will be applied shortly"),
}


def _action(summary: str, body: str, operation: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "parameters": [NUMBER, IDEMPOTENCY],
            "requestBody": BODIES[body],
            "responses": {**DONE, **WRITE_ERRORS},
        }
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


LIST_PARAMETERS = [
    _query("status", {"type": "string", "enum": STATUSES}, "only this status"),
    _query("mailbox", {"type": "string"}, "only this mailbox (one of yours)"),
    _query("priority", {"type": "string", "enum": PRIORITIES}, "only this priority"),
    _query("category", {"type": "string"}, "only this category"),
    _query("requester", {"type": "string"}, "only this requester's address"),
    _query("since", {"type": "string", "format": "date-time"}, "created at or after"),
    _query("until", {"type": "string", "format": "date-time"}, "created before"),
    _query("q", {"type": "string"}, "words in the subject or the requester's name or address"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size (50)"),
    _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
]


def document(server: str) -> dict[str, Any]:
    """The whole document; ``server`` is the portal's public URL, if set."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ticket Gateway API",
            "version": __version__,
            "description": (
                "Drive tickets from your own systems with an agent's token "
                "(ticket-gateway tokens create --agent EMAIL). Every action goes "
                "through the same steps as an agent's mail: the same events, "
                "notifications and outbound mail."
            ),
        },
        "servers": [{"url": f"{server}/api/v1" if server else "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
        "paths": {
            "/tickets": {
                "get": {
                    "operationId": "listTickets",
                    "summary": "tickets of your mailboxes, newest first",
                    "parameters": LIST_PARAMETERS,
                    "responses": {"200": _json("TicketPage", "a page of tickets"), **ERRORS},
                },
                "post": {
                    "operationId": "createTicket",
                    "summary": "open a ticket on behalf of a customer (acknowledged like mail)",
                    "parameters": [IDEMPOTENCY],
                    "requestBody": BODIES["new"],
                    "responses": {
                        "201": _json("Ticket", "created"),
                        "200": _json("Ticket", "the subject named a ticket of this customer"),
                        "202": _json("Accepted", "stored and queued"),
                        **WRITE_ERRORS,
                    },
                },
            },
            "/tickets/action-required": {
                "get": {
                    "operationId": "actionRequired",
                    "summary": "tickets waiting on us, most urgent first",
                    "responses": {
                        "200": {
                            "description": "the tickets",
                            "content": {
                                "application/json": {
                                    "schema": _object(
                                        {"tickets": {"type": "array", "items": _ref("Waiting")}}
                                    )
                                }
                            },
                        },
                        **ERRORS,
                    },
                }
            },
            "/tickets/{number}": {
                "get": {
                    "operationId": "getTicket",
                    "summary": "a ticket with its public and internal messages",
                    "parameters": [NUMBER],
                    "responses": {"200": _json("Ticket", "the ticket"), **ERRORS},
                },
                "patch": {
                    "operationId": "updateTicket",
                    "summary": "change priority, category or assignee",
                    "parameters": [NUMBER],
                    "requestBody": BODIES["patch"],
                    "responses": {**DONE, **WRITE_ERRORS},
                },
            },
            "/tickets/{number}/attachments/{id}": {
                "get": {
                    "operationId": "getAttachment",
                    "summary": "an attachment's bytes",
                    "parameters": [
                        NUMBER,
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        **ERRORS,
                    },
                }
            },
            "/tickets/{number}/reply": _action(
                "a public answer to the customer, optionally resolving", "reply", "reply"
            ),
            "/tickets/{number}/note": _action("an internal note", "note", "addNote"),
            "/tickets/{number}/close": _action("close the ticket", "empty", "close"),
            "/tickets/{number}/reopen": _action("open the ticket again", "empty", "reopen"),
            "/tickets/{number}/escalate": _action(
                "hand the ticket to the mailbox's admins", "escalate", "escalate"
            ),
        },
    }
