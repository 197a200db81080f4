"""The ``ticket-gateway`` command line: run the daemon and look inside it.

This is an edge of the program: it configures logging, turns GatewayError
into a clear message and an exit status (2 for configuration problems, 1 for
everything else), and never shows a traceback for a problem an operator can
fix. Every listing prints a table for people, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import peewee as pw

from gateway import (
    __version__,
    agents,
    config,
    demo,
    logs,
    models,
    outbox,
    preview,
    privacy,
    queries,
    report,
    report_text,
)
from gateway.api import tokens as api_tokens
from gateway.daemon import serve
from gateway.db import Store, connect, ensure_schema, open_database, redact, transaction, utcnow
from gateway.errors import ConfigError, GatewayError, StorageError
from gateway.notify import Notifier
from gateway.portal.access import revoke_links
from gateway.process import process_inbound, release
from gateway.render import Renderer

log = logging.getLogger("gateway.cli")

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m gateway``."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    except GatewayError as exc:
        print(f"ticket-gateway: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (``| head``): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ticket-gateway", description="Email-to-ticket gateway daemon."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(
        commands,
        "serve",
        cmd_serve,
        "run the daemon (SMTP/LMTP, IMAP pollers, portal and API, metrics, outbox, timed jobs;"
        ' processing in a worker process unless processing = "inline")',
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log lines as text or JSON objects (default: log_format in the configuration)",
    )
    _command(
        commands,
        "check-config",
        cmd_check_config,
        "validate the configuration; exit 2 with one line per problem",
    )

    _command(
        commands,
        "migrate",
        cmd_migrate,
        "upgrade the database schema to this release's (the daemon also does it at start)",
    )

    reporter = _command(
        commands,
        "report",
        cmd_report,
        "tickets opened and resolved, response and resolution times, SLA, CSAT",
        json_flag=True,
    )
    reporter.add_argument("--mailbox", metavar="ADDR", help="only this mailbox")
    reporter.add_argument(
        "--since", type=_date, metavar="DATE", help="from DATE (YYYY-MM-DD or ISO time, UTC)"
    )
    reporter.add_argument(
        "--until", type=_date, metavar="DATE", help="before DATE (YYYY-MM-DD or ISO time, UTC)"
    )

    keys_parser = commands.add_parser("tokens", help="agents' API tokens")
    sub = keys_parser.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    creator = _command(
        sub, "create", cmd_tokens_create, "a new API token for an agent (shown once)"
    )
    creator.add_argument("--agent", required=True, metavar="EMAIL", help="the agent it acts as")
    creator.add_argument("--name", default="", metavar="NAME", help="what it is for")
    revoker = _command(sub, "revoke", cmd_tokens_revoke, "revoke a token at once")
    revoker.add_argument("id", type=int, metavar="ID")
    _command(sub, "list", cmd_tokens_list, "every token, without secrets", json_flag=True)

    people = commands.add_parser("customers", help="a customer's personal data (GDPR)")
    sub = people.add_subparsers(dest="customers_command", required=True, metavar="ACTION")
    forget = _command(
        sub,
        "forget",
        cmd_customers_forget,
        "erase a customer's personal data everywhere; tickets' numbers, times and "
        "statuses stay for reports",
    )
    forget.add_argument("email", metavar="EMAIL")
    exporter = _command(
        sub,
        "export",
        cmd_customers_export,
        "write everything stored about a customer as JSON, with their attachments",
    )
    exporter.add_argument("email", metavar="EMAIL")
    exporter.add_argument(
        "--output", metavar="DIR", default=".", help="folder to write into (default: here)"
    )

    demo_parser = _command(
        commands,
        "demo",
        cmd_demo,
        "load two weeks of realistic tickets (en, vi, fa) through the real intake, to try "
        "report and tickets list --action-required",
    )
    demo_parser.add_argument(
        "--force", action="store_true", help="even if the database already holds tickets"
    )

    tickets = commands.add_parser("tickets", help="list and show tickets")
    sub = tickets.add_subparsers(dest="tickets_command", required=True, metavar="ACTION")
    lister = _command(sub, "list", cmd_tickets_list, "list tickets, newest first", json_flag=True)
    lister.add_argument(
        "--status", choices=("new", "open", "waiting_on_customer", "resolved", "closed")
    )
    lister.add_argument("--mailbox", metavar="ADDR", help="only tickets of this mailbox")
    lister.add_argument(
        "--since",
        type=_date,
        metavar="DATE",
        help="created on or after DATE (YYYY-MM-DD or ISO time, UTC)",
    )
    lister.add_argument(
        "--until",
        type=_date,
        metavar="DATE",
        help="created before DATE (YYYY-MM-DD or ISO time, UTC)",
    )
    lister.add_argument(
        "--search", metavar="TEXT", help="in the requester's name or address and the subject"
    )
    lister.add_argument(
        "--action-required",
        action="store_true",
        help="only tickets waiting on us (new, open), most urgent first, with the time left",
    )
    lister.add_argument("--limit", type=int, default=500, help=argparse.SUPPRESS)
    show = _command(sub, "show", cmd_tickets_show, "a ticket and its messages", json_flag=True)
    show.add_argument("number", type=int, metavar="NUMBER")

    quarantine = commands.add_parser("quarantine", help="messages that could not be processed")
    sub = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    _command(sub, "list", cmd_quarantine_list, "quarantined messages and why", json_flag=True)
    retry = _command(sub, "retry", cmd_quarantine_retry, "process a quarantined message again")
    retry.add_argument("id", metavar="ID", help="the id or queue id from 'quarantine list'")

    _command(
        commands,
        "status",
        cmd_status,
        "running instances and their listeners, IMAP pollers, inbound and outbox queues, "
        "quarantine, timed jobs' last runs",
        json_flag=True,
    )
    _command(
        commands, "reload", cmd_reload, "make the running daemon re-read its configuration (SIGHUP)"
    )

    team = commands.add_parser("agents", help="the agents of each mailbox")
    sub = team.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    _command(sub, "list", cmd_agents_list, "every agent, as last configured", json_flag=True)
    for name, func, text in (
        ("address", cmd_agents_address, "an agent's personal address (#on-behalf tickets)"),
        ("revoke-address", cmd_agents_revoke, "invalidate an agent's personal address"),
    ):
        action = _command(sub, name, func, text)
        action.add_argument("email", metavar="EMAIL", help="the agent's address")
        action.add_argument(
            "--mailbox", metavar="ADDR", help="the mailbox (default: the first one the agent is on)"
        )

    links = commands.add_parser("links", help="guests' links to their tickets")
    sub = links.add_subparsers(dest="links_command", required=True, metavar="ACTION")
    revoke = _command(
        sub,
        "revoke",
        cmd_links_revoke,
        "make a ticket's portal links stop working (all, or one address's)",
    )
    revoke.add_argument("number", type=int, metavar="NUMBER")
    revoke.add_argument("--email", metavar="ADDR", help="only this guest's links")

    queue = commands.add_parser("outbox", help="outbound mail and its delivery")
    sub = queue.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    lister = _command(sub, "list", cmd_outbox_list, "outbound mail, newest first", json_flag=True)
    lister.add_argument("--status", choices=("queued", "sending", "sent", "deferred", "failed"))
    for name, func, text in (
        ("retry", cmd_outbox_retry, "send a deferred or failed mail now"),
        ("drop", cmd_outbox_drop, "never send a queued or deferred mail"),
    ):
        action = _command(sub, name, func, text)
        action.add_argument("id", type=int, metavar="ID", help="the id from 'outbox list'")

    templates = commands.add_parser("templates", help="outbound mail templates")
    sub = templates.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    show = _command(
        sub,
        "preview",
        cmd_templates_preview,
        "print an event's mail as it would be sent, without sending it",
    )
    show.add_argument(
        "event",
        metavar="EVENT",
        choices=preview.EVENTS,
        help="one of: " + ", ".join(preview.EVENTS),
    )
    show.add_argument("--lang", default=None, help="language (default: the ticket's, or en)")
    show.add_argument(
        "--ticket",
        type=int,
        metavar="NUMBER",
        help="use this ticket's data (default: a made-up example)",
    )
    return parser


def _command(
    commands: Any,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_: str,
    *,
    json_flag: bool = False,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_, description=help_)
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $GATEWAY_CONFIG or ./mailboxes.toml)",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON for programs")
    parser.set_defaults(func=func)
    return parser


def _date(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _open(args: argparse.Namespace) -> config.Config:
    """Load the configuration and open its database."""
    cfg = config.load(args.config)
    open_database(
        cfg.gateway.database, cfg.base_dir, ticket_number_start=cfg.gateway.ticket_number_start
    )
    return cfg


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    logs.configure(cfg.gateway.log_level, args.log_format or cfg.gateway.log_format)
    log.info("ticket-gateway %s starting with %s", __version__, cfg.path)

    asyncio.run(serve(cfg))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    print(f"{cfg.path}: OK ({len(cfg.mailboxes)} mailbox(es))")
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    database = connect(cfg.gateway.database, cfg.base_dir)
    models.database.initialize(database)
    try:
        with database.connection_context():
            found, now = ensure_schema(database, cfg.gateway.ticket_number_start)
    except pw.OperationalError as exc:
        raise StorageError(f"cannot open database {redact(cfg.gateway.database)}: {exc}") from exc
    if found == now:
        print(f"{redact(cfg.gateway.database)}: schema already at version {now}")
    else:
        print(f"{redact(cfg.gateway.database)}: schema upgraded from version {found} to {now}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    cfg = _open(args)
    if args.since and args.until and args.since >= args.until:
        raise GatewayError("--since must be before --until")
    if args.mailbox and cfg.mailbox(args.mailbox) is None:
        known = ", ".join(m.address for m in cfg.mailboxes)
        raise GatewayError(f"no mailbox {args.mailbox} in {cfg.path} (known: {known})")
    figures = report.build(report.Period(args.since, args.until, args.mailbox))
    if args.json:
        return _print_json(figures)
    print(report_text.render(figures))
    return EXIT_OK


def cmd_action_required(args: argparse.Namespace) -> int:
    cfg = _open(args)
    rows = report.action_required(cfg, utcnow(), args.mailbox)
    if args.json:
        return _print_json(rows)
    print(
        _table(
            ["NUMBER", "PRIORITY", "STATUS", "OWED", "TIME LEFT", "ASSIGNEE", "SUBJECT"],
            [
                [
                    str(r["number"]),
                    r["priority"],
                    r["status"],
                    (r["owed"] or "-").replace("_", " "),
                    report_text.time_left(r["seconds_left"]),
                    r["assignee"] or "-",
                    r["subject"],
                ]
                for r in rows
            ],
        )
    )
    late = sum(1 for r in rows if r["late"])
    print(f"{len(rows)} ticket(s) waiting on us, {late} late")
    return EXIT_OK


def cmd_tokens_create(args: argparse.Namespace) -> int:
    cfg = _open(args)
    agent = args.agent.strip().lower()
    if not any(m.agent(agent) for m in cfg.mailboxes):
        raise GatewayError(f"{agent} is not an agent of any mailbox in {cfg.path}")
    with transaction(models.database.obj):
        row, token = api_tokens.create(agent, args.name)
    print(f"token {row.id} for {agent}; shown this once, keep it secret:")
    print(token)
    return EXIT_OK


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    _open(args)
    with transaction(models.database.obj):
        revoked = api_tokens.revoke(args.id)
    if not revoked:
        print(f"ticket-gateway: no live token {args.id}", file=sys.stderr)
        return EXIT_ERROR
    print(f"token {args.id} revoked")
    return EXIT_OK


def cmd_tokens_list(args: argparse.Namespace) -> int:
    _open(args)
    rows = api_tokens.listing()
    if args.json:
        return _print_json(rows)
    print(
        _table(
            ["ID", "AGENT", "NAME", "CREATED", "LAST USED", "STATE"],
            [
                [
                    str(r["id"]),
                    str(r["agent"]),
                    str(r["name"]),
                    _short_time(str(r["created_at"])),
                    _short_time(str(r["last_used_at"])) if r["last_used_at"] else "-",
                    "revoked" if r["revoked"] else "live",
                ]
                for r in rows
            ],
        )
    )
    return EXIT_OK


def cmd_customers_forget(args: argparse.Namespace) -> int:
    cfg = _open(args)
    address = _customer_address(cfg, args.email)
    with transaction(models.database.obj):
        done = privacy.forget(address, actor="cli", secret=agents.gateway_secret(cfg))
    if not any(v for k, v in vars(done).items() if k != "placeholder"):
        print(f"{address}: nothing stored about this address")
        return EXIT_OK
    print(
        f"{address} forgotten, now {done.placeholder}: {done.tickets} ticket(s), "
        f"{done.messages} message(s), {done.attachments} attachment(s), "
        f"{done.raw_messages} raw message(s), {done.outbox} outbound mail(s), "
        f"{done.portal} portal link(s)/code(s)/session(s) erased"
    )
    return EXIT_OK


def cmd_customers_export(args: argparse.Namespace) -> int:
    cfg = _open(args)
    address = _customer_address(cfg, args.email)
    path = privacy.export(address, Path(args.output))
    print(f"{path}: everything stored about {address} (personal data: handle with care)")
    return EXIT_OK


def _customer_address(cfg: config.Config, email: str) -> str:
    """``email`` lower-cased, refused when it is not an address or is one of ours."""
    address = email.strip().lower()
    if "@" not in address or " " in address:
        raise GatewayError(f"{email!r} is not an email address")
    staff = {a.email for m in cfg.mailboxes for a in m.agents} | cfg.own_addresses()
    if address in staff:
        raise GatewayError(f"{address} is an agent or mailbox address, not a customer's")
    return address


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = _open(args)
    store = Store(models.database.obj)
    # The replay breaches SLAs on purpose; its warnings are not news.
    logging.getLogger("gateway").setLevel(logging.ERROR)
    try:
        summary = demo.run(cfg, store, force=args.force)
    finally:
        store.close()
    languages = ", ".join(f"{n} {lang}" for lang, n in sorted(summary.languages.items()))
    print(f"demo: {summary.tickets} tickets ({languages}), {summary.messages} messages")
    if summary.demo_agents:
        print("demo: three demo agents joined the team for the replay")
    print("demo: its mail was never sent (ticket-gateway outbox list shows it as failed)")
    print("try: ticket-gateway tickets list --action-required")
    print("     ticket-gateway report")
    return EXIT_OK


def cmd_tickets_list(args: argparse.Namespace) -> int:
    if args.action_required:
        return cmd_action_required(args)
    _open(args)
    rows = queries.list_tickets(
        queries.TicketFilter(
            status=args.status,
            mailbox=args.mailbox,
            since=args.since,
            until=args.until,
            search=args.search,
        ),
        limit=args.limit,
    )
    if args.json:
        return _print_json(rows)
    print(
        _table(
            ["NUMBER", "STATUS", "PRIORITY", "CREATED", "REQUESTER", "SUBJECT"],
            [
                [
                    str(r["number"]),
                    r["status"],
                    r["priority"],
                    _short_time(r["created_at"]),
                    r["requester"]["email"],
                    r["subject"],
                ]
                for r in rows
            ],
        )
    )
    print(f"{len(rows)} ticket(s)")
    return EXIT_OK


def cmd_tickets_show(args: argparse.Namespace) -> int:
    _open(args)
    ticket = queries.ticket_detail(args.number)
    if ticket is None:
        print(f"ticket-gateway: no ticket #{args.number}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        return _print_json(ticket)
    print(_ticket_text(ticket))
    return EXIT_OK


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    _open(args)
    rows = queries.quarantined()
    if args.json:
        return _print_json(rows)
    print(
        _table(
            ["ID", "QUEUE ID", "RECEIVED", "MAILBOX", "FROM", "REASON"],
            [
                [
                    str(r["id"]),
                    r["queue_id"],
                    _short_time(r["received_at"]),
                    r["mailbox"],
                    r["mail_from"] or "<>",
                    r["reason"] or "",
                ]
                for r in rows
            ],
        )
    )
    print(f"{len(rows)} message(s) in quarantine")
    return EXIT_OK


def cmd_quarantine_retry(args: argparse.Namespace) -> int:
    cfg = _open(args)
    from gateway.models import database

    row = queries.find_inbound(args.id)
    if row is None or not release(row.id, database.obj):
        print(f"ticket-gateway: {args.id} is not in the quarantine", file=sys.stderr)
        return EXIT_ERROR
    notifier = Notifier(cfg, Renderer(cfg.gateway.templates_dir), agents.gateway_secret(cfg))
    result = process_inbound(row.id, cfg, database.obj, notifier)
    if result.status == "quarantined":
        print(f"{row.queue_id}: still failing: {result.reason}")
        return EXIT_ERROR
    print(f"{row.queue_id}: {result.status}: {result.action} ticket #{result.ticket_number or '-'}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    _open(args)
    data = status()
    if args.json:
        return _print_json(data)
    print(
        _table(
            [
                "MAILBOX",
                "FOLDER",
                "STATE",
                "UIDVALIDITY",
                "LAST UID",
                "BACKLOG",
                "LAST OK",
                "ERROR",
            ],
            [
                [
                    r["mailbox"],
                    r["folder"],
                    "connected" if r["connected"] else "disconnected",
                    str(r["uidvalidity"]),
                    str(r["last_uid"]),
                    str(r["backlog"]),
                    _short_time(r["last_success_at"]),
                    r["last_error"] or "",
                ]
                for r in data["imap"]
            ],
        )
    )
    for name in ("inbound", "outbox"):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(data[name].items())) or "none"
        print(f"{name}: {counts}")
    print(f"quarantine: {data['inbound'].get('quarantined', 0)} message(s)")
    for item in data["instances"]:
        where = ", ".join(f"{k} {v}" for k, v in sorted(item["listeners"].items()))
        state = "" if item["alive"] else " (not seen for 2 minutes: stopped or stuck?)"
        print(f"instance {item['name']} {item['version']}: {where}{state}")
    for job in data["jobs"]:
        outcome = f"failed: {job['error']}" if job["error"] else f"{job['done']} done"
        print(f"job {job['name']}: last run {_short_time(job['started_at'])}, {outcome}")
    return EXIT_OK


def status() -> dict[str, Any]:
    """What the database knows about the running gateway (the pollers persist theirs)."""
    from gateway import models

    def when(moment: dt.datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    imap = [
        {
            "mailbox": row.mailbox,
            "folder": row.folder,
            "uidvalidity": row.uidvalidity,
            "last_uid": row.last_uid,
            "updated_at": when(row.updated_at),
            "connected": row.connected,
            "last_success_at": when(row.last_success_at),
            "last_error": row.last_error,
            "backlog": row.backlog,
        }
        for row in models.ImapCheckpoint.select().order_by(
            models.ImapCheckpoint.mailbox, models.ImapCheckpoint.folder
        )
    ]
    jobs = [
        {
            "name": row.name,
            "started_at": when(row.started_at),
            "finished_at": when(row.finished_at),
            "done": row.done,
            "error": row.error,
            "runs": row.runs,
        }
        for row in models.JobRun.select().order_by(models.JobRun.name)
    ]
    instances = [
        {
            "name": row.name,
            "version": row.version,
            "listeners": json.loads(row.listeners),
            "started_at": when(row.started_at),
            "seen_at": when(row.seen_at),
            "alive": (utcnow() - row.seen_at).total_seconds() < 120,
        }
        for row in models.Instance.select().order_by(models.Instance.name)
    ]
    return {
        "instances": instances,
        "imap": imap,
        **queries.counts_by_status(),
        "jobs": jobs,
    }


def cmd_reload(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)  # refuse to signal with a broken file
    assert cfg.gateway.pid_file is not None
    try:
        pid = int(cfg.gateway.pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(
            f"ticket-gateway: no running daemon found through {cfg.gateway.pid_file}: {exc}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    print(f"sent SIGHUP to {pid}; the daemon logs what changed")
    return EXIT_OK


def cmd_agents_list(args: argparse.Namespace) -> int:
    _open(args)
    rows = agents.roster()
    if args.json:
        return _print_json(rows)
    print(
        _table(
            ["MAILBOX", "EMAIL", "NAME", "ROLE", "ACTIVE"],
            [
                [
                    str(r["mailbox"]),
                    str(r["email"]),
                    str(r["name"]),
                    str(r["role"]),
                    "yes" if r["active"] else "no",
                ]
                for r in rows
            ],
        )
    )
    return EXIT_OK


def _agent_mailbox(cfg: config.Config, args: argparse.Namespace) -> config.Mailbox:
    candidates = [
        m
        for m in cfg.mailboxes
        if m.agent(args.email) is not None
        and (not args.mailbox or m.address == args.mailbox.lower())
    ]
    if not candidates:
        raise GatewayError(
            f"{args.email} is not an agent of {args.mailbox or 'any mailbox'} in {cfg.path}"
        )
    return candidates[0]


def cmd_agents_address(args: argparse.Namespace) -> int:
    cfg = _open(args)
    agents.sync(cfg)
    mailbox = _agent_mailbox(cfg, args)
    print(agents.personal_address(agents.gateway_secret(cfg), mailbox, args.email))
    return EXIT_OK


def cmd_agents_revoke(args: argparse.Namespace) -> int:
    cfg = _open(args)
    mailbox = _agent_mailbox(cfg, args)
    agents.revoke_personal(mailbox.address, args.email)
    fresh = agents.personal_address(agents.gateway_secret(cfg), mailbox, args.email)
    print(f"revoked; the new address is {fresh}")
    return EXIT_OK


def cmd_links_revoke(args: argparse.Namespace) -> int:
    _open(args)
    count = revoke_links(args.number, args.email)
    print(f"revoked {count} link(s) to ticket #{args.number}")
    return EXIT_OK


def cmd_outbox_list(args: argparse.Namespace) -> int:
    _open(args)
    rows = outbox.listing(args.status)
    if args.json:
        return _print_json(rows)
    print(
        _table(
            ["ID", "STATUS", "EVENT", "TICKET", "TO", "TRIES", "NEXT", "LAST ERROR"],
            [
                [
                    str(r["id"]),
                    r["status"],
                    r["event"],
                    str(r["ticket"] or "-"),
                    r["recipient"],
                    str(r["attempts"]),
                    _short_time(r["next_attempt_at"])
                    if r["status"] in ("queued", "deferred")
                    else "",
                    r["last_error"] or "",
                ]
                for r in rows
            ],
        )
    )
    print(f"{len(rows)} mail(s)")
    return EXIT_OK


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    _open(args)
    if not outbox.retry(args.id):
        print(f"ticket-gateway: outbox {args.id} is not deferred or failed", file=sys.stderr)
        return EXIT_ERROR
    print(f"outbox {args.id}: queued; the running daemon sends it within a minute")
    return EXIT_OK


def cmd_outbox_drop(args: argparse.Namespace) -> int:
    _open(args)
    if not outbox.drop(args.id):
        print(f"ticket-gateway: outbox {args.id} is not queued or deferred", file=sys.stderr)
        return EXIT_ERROR
    print(f"outbox {args.id}: dropped (listed as failed)")
    return EXIT_OK


def cmd_templates_preview(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    if args.ticket is not None:
        open_database(
            cfg.gateway.database, cfg.base_dir, ticket_number_start=cfg.gateway.ticket_number_start
        )
    sys.stdout.write(preview.render(cfg, args.event, args.lang, args.ticket))
    return EXIT_OK


def _print_json(data: Any) -> int:
    print(json.dumps(data, ensure_ascii=False, indent=2))
    return EXIT_OK


def _short_time(iso: str | None) -> str:
    return (iso or "")[:16].replace("T", " ")


def _table(headers: list[str], rows: list[list[str]], max_width: int = 50) -> str:
    """A plain left-aligned table; long cells are cut with an ellipsis."""
    cells = [[_cell(c, max_width) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _cell(text: str, max_width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def _person(who: dict[str, str]) -> str:
    """``Name <address>``, or the address alone when there is no name."""
    return f"{who['name']} <{who['email']}>" if who["name"] else who["email"]


def _ticket_text(ticket: dict[str, Any]) -> str:
    """A ticket for a person reading a terminal."""
    lines = [
        f"#{ticket['number']}  {ticket['subject'] or '(no subject)'}",
        f"status {ticket['status']}, priority {ticket['priority']}, "
        f"category {ticket['category']}, language {ticket['language']}",
        f"mailbox {ticket['mailbox']}; requester {_person(ticket['requester'])}",
        f"created {_short_time(ticket['created_at'])}, updated {_short_time(ticket['updated_at'])}",
    ]
    for number, message in enumerate(ticket["messages"], 1):
        flags = [
            message["direction"],
            message["visibility"],
            *(["auto"] if message["auto"] else []),
        ]
        lines += [
            "",
            f"--- message {number}: {_person(message['author'])} ({message['author']['role']}) "
            f"{_short_time(message['created_at'])} [{', '.join(flags)}]",
            message["text"].rstrip(),
        ]
        lines += [
            f"[attachment] {a['filename']} ({a['content_type']}, {a['size']} bytes)"
            for a in message["attachments"]
        ]
    return "\n".join(lines)
