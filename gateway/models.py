"""The stored state: spooled mail, tickets, their messages, attachments and events.

Tables in the order of the flow:

    raw_message   the exact bytes we accepted, once per distinct content
    inbound       one row per accepted message per mailbox: its envelope and
                  processing state (received -> processed | quarantined)
    ticket        the conversation; ``number`` is what people see
    sla_clock     a ticket's SLA clocks (first/next response, resolution)
    participant   who may add to a ticket (requester, Cc'd colleagues, agents)
    message       a message of a ticket, inbound or outbound
    blob          attachment bytes, stored once per sha256
    attachment    a message's attachment, pointing at its blob
    event         every state change, for an auditable history
    reply_key     hashed keys of support+KEY@ addresses: ticket and owner
    outbox        rendered outbound mail and its delivery state
    agent         the roster as last configured, for its history
    guest_*       the portal: links to tickets, browser sessions, one-time codes
    suppression   recipients that bounced permanently, until when
    imap_checkpoint  per IMAP mailbox and folder: the last UID imported under
                  which UIDVALIDITY, and the poller's live state for `status`
    job_run       the last run of each timed job, for `status`
    instance      each running daemon and its listeners, for `status`
    api_token     agents' API tokens (hashed); idempotency_key: answered POSTs
    counter       named counters (ticket numbers), safe across instances
    schema_meta   the schema version

Times are naive UTC (``db.utcnow``) so that SQLite and PostgreSQL agree.
All models bind to ``database``, a proxy initialised by ``db.open_database``.
"""

from __future__ import annotations

from typing import ClassVar

import peewee as pw

database = pw.DatabaseProxy()

SCHEMA_VERSION = 2


class BaseModel(pw.Model):
    """Binds every table to the proxy and names tables after their class."""

    # Declared (peewee would add it anyway) so that type checkers know it;
    # a model with its own primary key field replaces it.
    id = pw.AutoField()

    class Meta:
        database = database
        legacy_table_names = False
        # save() writes only the fields that changed: the ticket step and a
        # timed job may update one row in turn (SLA clock marks, a reminder's
        # time, the status), and a whole-row write by one would undo the other.
        only_save_dirty = True


class SchemaMeta(BaseModel):
    """Key/value facts about the schema itself (``schema_version``)."""

    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()


class Counter(BaseModel):
    """A named counter; incrementing it inside a transaction locks the row."""

    name = pw.CharField(primary_key=True, max_length=64)
    value = pw.BigIntegerField()


class RawMessage(BaseModel):
    """The bytes of an accepted message, exactly as received, stored once."""

    sha256 = pw.CharField(max_length=64, unique=True)
    size = pw.IntegerField()
    data = pw.BlobField()


class Inbound(BaseModel):
    """One accepted delivery of a message to one mailbox, and what became of it."""

    RECEIVED = "received"
    PROCESSED = "processed"
    QUARANTINED = "quarantined"

    queue_id = pw.CharField(max_length=32, unique=True)
    raw_message = pw.ForeignKeyField(RawMessage, on_delete="RESTRICT")
    mailbox = pw.CharField(max_length=320, index=True)
    protocol = pw.CharField(max_length=16)
    peer = pw.TextField(default="")
    helo = pw.TextField(default="")
    mail_from = pw.TextField(default="")
    rcpt_to = pw.TextField()  # JSON list of the envelope recipients for this mailbox
    message_id = pw.TextField(default="")
    dedup_key = pw.CharField(max_length=64)
    status = pw.CharField(max_length=16, default=RECEIVED, index=True)
    reason = pw.TextField(null=True)
    attempts = pw.IntegerField(default=0)
    received_at = pw.DateTimeField()
    processed_at = pw.DateTimeField(null=True)

    class Meta:
        indexes: ClassVar = ((("mailbox", "dedup_key"), True),)


class Ticket(BaseModel):
    """A conversation between a customer and a mailbox's team."""

    STATUSES = ("new", "open", "waiting_on_customer", "resolved", "closed")
    PRIORITIES = ("low", "medium", "high", "urgent")

    # backrefs, for mypy: participants, messages, events, clocks
    participants: pw.ModelSelect[Participant]
    clocks: pw.ModelSelect[SlaClock]
    messages: pw.ModelSelect[Message]
    events: pw.ModelSelect[Event]

    number = pw.BigIntegerField(unique=True)
    mailbox = pw.CharField(max_length=320, index=True)
    subject = pw.TextField(default="")
    requester_email = pw.CharField(max_length=320, index=True)
    requester_name = pw.TextField(default="")
    status = pw.CharField(max_length=32, default="new", index=True)
    priority = pw.CharField(max_length=16, default="medium")
    category = pw.CharField(max_length=64, default="general")
    language = pw.CharField(max_length=16, default="en")
    assignee = pw.CharField(max_length=320, null=True)  # an agent's address
    created_at = pw.DateTimeField(index=True)
    updated_at = pw.DateTimeField()
    # --- lifecycle: when things happened (SLA clocks are rows of sla_clock)
    status_changed_at = pw.DateTimeField(null=True, index=True)
    first_responded_at = pw.DateTimeField(null=True)
    resolved_at = pw.DateTimeField(null=True, index=True)  # the latest resolution
    closed_at = pw.DateTimeField(null=True, index=True)
    reminded_at = pw.DateTimeField(null=True)  # waiting_on_customer reminder sent
    # --- satisfaction, continuation, privacy
    rating = pw.CharField(max_length=8, null=True)  # good | bad
    rating_comment = pw.TextField(null=True)
    rated_at = pw.DateTimeField(null=True)
    continues = pw.BigIntegerField(null=True)  # number of the closed ticket this one follows
    erased_at = pw.DateTimeField(null=True)  # the requester's personal data was erased


class SlaClock(BaseModel):
    """One SLA clock of a ticket: a response owed, or the resolution.

    ``first_response`` starts with the ticket and ``resolution`` too; a
    ``next_response`` clock starts when a customer writes again after an
    answer. A clock runs in business time, pauses while the ticket waits on
    the customer (``paused_at``; the pause is added to ``paused_seconds``
    when it ends) and stops when an agent answers (responses) or the ticket
    is resolved (resolution). ``due_at`` and ``warn_at`` are UTC instants
    recomputed at every change, so the timed jobs only compare them with
    now; ``warned_at`` and ``breached_at`` make each job happen once.
    """

    ticket = pw.ForeignKeyField(Ticket, backref="clocks", on_delete="CASCADE")
    kind = pw.CharField(max_length=16)  # first_response | next_response | resolution
    priority = pw.CharField(max_length=16)
    target_seconds = pw.IntegerField(null=True)  # business seconds; None: measured only
    started_at = pw.DateTimeField()
    paused_at = pw.DateTimeField(null=True)
    paused_seconds = pw.FloatField(default=0.0)  # business time paused, ended pauses
    due_at = pw.DateTimeField(null=True, index=True)
    warn_at = pw.DateTimeField(null=True, index=True)
    warned_at = pw.DateTimeField(null=True)
    breached_at = pw.DateTimeField(null=True)
    stopped_at = pw.DateTimeField(null=True, index=True)
    stopped_by = pw.CharField(max_length=320, null=True)  # the agent who answered
    business_seconds = pw.FloatField(null=True)  # when stopped: running time, pauses excluded
    late = pw.BooleanField(null=True)  # when stopped: after due_at


class Participant(BaseModel):
    """An address that may add to a ticket by mail."""

    ticket = pw.ForeignKeyField(Ticket, backref="participants", on_delete="CASCADE")
    email = pw.CharField(max_length=320)
    name = pw.TextField(default="")
    role = pw.CharField(max_length=16, default="customer")
    created_at = pw.DateTimeField()

    class Meta:
        indexes: ClassVar = ((("ticket", "email"), True),)


class Message(BaseModel):
    """One message of a ticket, as the people on it see it."""

    attachments: pw.ModelSelect[Attachment]  # backref, for mypy

    ticket = pw.ForeignKeyField(Ticket, backref="messages", on_delete="CASCADE")
    inbound = pw.ForeignKeyField(Inbound, null=True, unique=True, on_delete="SET NULL")
    message_id = pw.TextField(default="", index=True)
    direction = pw.CharField(max_length=8)  # inbound | outbound
    author_email = pw.CharField(max_length=320, default="")
    author_name = pw.TextField(default="")
    author_role = pw.CharField(max_length=16)  # customer | agent | system
    visibility = pw.CharField(max_length=16, default="public")  # public | internal
    auto = pw.BooleanField(default=False)
    subject = pw.TextField(default="")
    text = pw.TextField(default="")  # what people see: quotes and signature stripped
    full_text = pw.TextField(default="")  # the whole text body, nothing removed
    html = pw.TextField(null=True)  # sanitized with nh3
    created_at = pw.DateTimeField()


class Blob(BaseModel):
    """Attachment bytes, stored once per content hash."""

    sha256 = pw.CharField(max_length=64, unique=True)
    size = pw.IntegerField()
    data = pw.BlobField()


class Attachment(BaseModel):
    """An attachment of a message; the name is for display only, never a path."""

    message = pw.ForeignKeyField(Message, backref="attachments", on_delete="CASCADE")
    blob = pw.ForeignKeyField(Blob, on_delete="RESTRICT")
    filename = pw.TextField()
    content_type = pw.CharField(max_length=255)
    size = pw.IntegerField()
    sha256 = pw.CharField(max_length=64)
    content_id = pw.TextField(null=True)
    inline = pw.BooleanField(default=False)


class Event(BaseModel):
    """Something that happened: who did what to which ticket, when, and why."""

    ticket = pw.ForeignKeyField(Ticket, null=True, backref="events", on_delete="CASCADE")
    inbound = pw.ForeignKeyField(Inbound, null=True, on_delete="SET NULL")
    actor = pw.TextField(default="system")
    kind = pw.CharField(max_length=64, index=True)
    detail = pw.TextField(default="{}")  # JSON object
    created_at = pw.DateTimeField(index=True)


class ReplyKey(BaseModel):
    """The key in a Reply-To address (support+KEY@), bound to a ticket and its owner.

    Only the SHA-256 of the key is stored: a copy of the database does not let
    anyone write into tickets as their participants.
    """

    key_hash = pw.CharField(max_length=64, unique=True)
    ticket = pw.ForeignKeyField(Ticket, null=True, backref="reply_keys", on_delete="CASCADE")
    email = pw.CharField(max_length=320)
    role = pw.CharField(max_length=16, default="customer")  # customer | agent
    created_at = pw.DateTimeField()
    revoked_at = pw.DateTimeField(null=True)


class Outbox(BaseModel):
    """One outbound mail to one recipient, from rendering to delivery.

    Written in the same transaction as the event that caused it; the worker
    claims rows (status "sending" with a lease) so no two workers send one row.
    """

    QUEUED, SENDING, SENT, DEFERRED, FAILED = "queued", "sending", "sent", "deferred", "failed"

    ticket = pw.ForeignKeyField(Ticket, null=True, backref="outbox", on_delete="SET NULL")
    event = pw.CharField(max_length=64)
    mailbox = pw.CharField(max_length=320)
    recipient = pw.CharField(max_length=320)
    rate_key = pw.CharField(max_length=320, index=True)  # recipient without +detail, for caps
    envelope_from = pw.TextField()
    bounce_token = pw.CharField(max_length=32, unique=True)
    message_id = pw.TextField(index=True)
    data = pw.BlobField()
    auto = pw.BooleanField(default=True)
    status = pw.CharField(max_length=16, default=QUEUED, index=True)
    attempts = pw.IntegerField(default=0)
    next_attempt_at = pw.DateTimeField(index=True)
    last_error = pw.TextField(null=True)
    claimed_by = pw.CharField(max_length=64, null=True)
    claimed_until = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(index=True)
    sent_at = pw.DateTimeField(null=True)


class AgentRecord(BaseModel):
    """An agent as last seen in the configuration, for the roster's history.

    mailboxes.toml is the source of truth; this table lets a reload tell who
    was added, removed or changed role, and holds the generation of the
    agent's personal address (bumped to revoke it).
    """

    mailbox = pw.CharField(max_length=320)
    email = pw.CharField(max_length=320)
    name = pw.TextField(default="")
    role = pw.CharField(max_length=16)
    active = pw.BooleanField(default=True)
    address_generation = pw.IntegerField(default=1)
    updated_at = pw.DateTimeField()

    class Meta:
        table_name = "agent"
        indexes: ClassVar = ((("mailbox", "email"), True),)


class GuestLink(BaseModel):
    """A link to a ticket for one guest address; only the token's SHA-256 is stored."""

    token_hash = pw.CharField(max_length=64, unique=True)
    ticket = pw.ForeignKeyField(Ticket, backref="guest_links", on_delete="CASCADE")
    email = pw.CharField(max_length=320)
    created_at = pw.DateTimeField()
    expires_at = pw.DateTimeField()
    revoked_at = pw.DateTimeField(null=True)


class GuestSession(BaseModel):
    """A browser's session in the portal: pending until a code proves the address.

    ``id_hash`` is the SHA-256 of the cookie; the CSRF token is per session.
    """

    id_hash = pw.CharField(max_length=64, unique=True)
    csrf = pw.CharField(max_length=64)
    email = pw.CharField(max_length=320, null=True)  # verified address
    pending_email = pw.CharField(max_length=320, null=True)  # address a code goes to
    pending_ticket = pw.ForeignKeyField(Ticket, null=True, on_delete="SET NULL")
    pending_request = pw.BlobField(null=True)  # a new request's message, sent once verified
    created_at = pw.DateTimeField()
    last_seen_at = pw.DateTimeField()
    verified_at = pw.DateTimeField(null=True)


class GuestCode(BaseModel):
    """A one-time code sent to a guest; only an HMAC of it is stored."""

    session = pw.ForeignKeyField(GuestSession, backref="codes", on_delete="CASCADE")
    email = pw.CharField(max_length=320, index=True)
    code_hash = pw.CharField(max_length=64)
    attempts = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(index=True)
    expires_at = pw.DateTimeField()
    used_at = pw.DateTimeField(null=True)


class Suppression(BaseModel):
    """A recipient we do not write to until ``until`` (a permanent bounce)."""

    email = pw.CharField(max_length=320, unique=True)
    reason = pw.TextField()
    until = pw.DateTimeField()
    created_at = pw.DateTimeField()


class ImapCheckpoint(BaseModel):
    """How far the poller has imported one IMAP folder, and how it is doing.

    ``last_uid`` is advanced only after the messages up to it were committed
    by intake, so a restart never skips one (RFC 3501 2.3.1.1: UIDs only grow
    while UIDVALIDITY stays the same). The remaining columns mirror the
    poller's live state so that ``ticket-gateway status`` can show it.
    """

    mailbox = pw.CharField(max_length=320)
    folder = pw.CharField(max_length=255)
    uidvalidity = pw.BigIntegerField(default=0)
    last_uid = pw.BigIntegerField(default=0)
    updated_at = pw.DateTimeField()
    connected = pw.BooleanField(default=False)
    last_success_at = pw.DateTimeField(null=True)
    last_error = pw.TextField(null=True)
    backlog = pw.IntegerField(default=0)

    class Meta:
        indexes: ClassVar = ((("mailbox", "folder"), True),)


class ApiToken(BaseModel):
    """An agent's API token; only the SHA-256 of the secret part is stored.

    The token is ``tgw_<id>_<secret>``: the id finds the row, the secret is
    compared in constant time, and a copy of the database grants nothing.
    """

    agent = pw.CharField(max_length=320, index=True)
    name = pw.TextField(default="")
    secret_hash = pw.CharField(max_length=64)
    created_at = pw.DateTimeField()
    last_used_at = pw.DateTimeField(null=True)
    revoked_at = pw.DateTimeField(null=True)


class IdempotencyKey(BaseModel):
    """A POST made with an Idempotency-Key: what it asked, and what it answered.

    A retry with the same key and the same request gets the stored answer;
    with another request it is refused. Kept for a day.
    """

    token = pw.ForeignKeyField(ApiToken, on_delete="CASCADE")
    key = pw.CharField(max_length=255)
    request_hash = pw.CharField(max_length=64)
    status = pw.IntegerField(null=True)  # None while the first request is running
    response = pw.TextField(null=True)  # the JSON body
    pinned = pw.BlobField(null=True)  # the mail the action spools, until it is answered
    created_at = pw.DateTimeField(index=True)

    class Meta:
        indexes: ClassVar = ((("token", "key"), True),)


class Instance(BaseModel):
    """A running daemon and where it listens, refreshed while it runs, for `status`."""

    name = pw.CharField(primary_key=True, max_length=255)  # host:pid
    version = pw.CharField(max_length=32)
    listeners = pw.TextField(default="{}")  # JSON: {"smtp": "127.0.0.1:2525", ...}
    started_at = pw.DateTimeField()
    seen_at = pw.DateTimeField()


class JobRun(BaseModel):
    """The last run of a timed job (any instance's), for ``ticket-gateway status``."""

    name = pw.CharField(primary_key=True, max_length=64)
    started_at = pw.DateTimeField()
    finished_at = pw.DateTimeField(null=True)
    done = pw.IntegerField(default=0)  # rows the run handled
    error = pw.TextField(null=True)
    runs = pw.BigIntegerField(default=0)


MODELS: tuple[type[BaseModel], ...] = (
    SchemaMeta,
    Counter,
    RawMessage,
    Inbound,
    Ticket,
    SlaClock,
    Participant,
    Message,
    Blob,
    Attachment,
    Event,
    ReplyKey,
    Outbox,
    AgentRecord,
    GuestLink,
    GuestSession,
    GuestCode,
    Suppression,
    ImapCheckpoint,
    JobRun,
    Instance,
    ApiToken,
    IdempotencyKey,
)
