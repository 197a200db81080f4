"""Agent mail: replies and commands that arrive on an agent's key.

The ticket step hands over a message that came to an agent's reply key
(support+KEY@, from a notification) or personal address
(support+agent-KEY@). Here it is authorized, then applied:

    authorize   From is the key's agent, and (where trusted_authserv_id is
                set) the trusted MTA's Authentication-Results says DKIM or SPF
                passed aligned with From. Otherwise: held for review, the
                agent told, nothing posted. Machine mail (an agent's
                out-of-office) is never an agent action.
    commands    #status, #priority, ... at the top; any error rejects the
                whole reply (the agent is told, the customer gets nothing).
    post        the text, quotes stripped, as a public agent message (or an
                internal note with #note), sent to the customer from the
                mailbox address under the agent's name; copies to the team.

A From that matches an agent without a key never gets here: it is an
ordinary customer message, so a spoofed From gains nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from gateway import agents, authres, models, sla, tickets
from gateway.classify import is_automated_address
from gateway.commands import Command, CommandBlock, parse_commands
from gateway.config import Agent
from gateway.db import utcnow
from gateway.events import record
from gateway.notify import Attached, ticket_ref
from gateway.parse import Address
from gateway.quotes import strip_reply
from gateway.tickets import Incoming, Outcome

log = logging.getLogger("gateway.agent_mail")

# What the agent is told when their reply still holds our notification: a
# bottom-posted or unquoted reply would otherwise hand the customer the
# agent's private addresses (a personal address lets whoever holds it, with a
# forged From, open tickets that mail third parties; found in review).
QUOTE_LEFT = (
    "your reply still contains our notification, with private reply addresses "
    "(support+...@); delete the quoted part and send your answer again"
)


def personal_owner(incoming: Incoming, details: Sequence[str]) -> Agent | None:
    """The agent whose personal address the message was sent to, if any."""
    secret = incoming.notifier.secret
    if not secret:
        return None
    for detail in details:
        agent = agents.owner_of_personal(secret, incoming.mailbox, detail)
        if agent is not None:
            return agent
    return None


def on_reply_key(incoming: Incoming, key: models.ReplyKey, ticket: models.Ticket) -> Outcome:
    """A message to the reply key of an agent's notification about ``ticket``."""
    agent = incoming.mailbox.agent(key.email)
    sender = incoming.sender.email.lower()
    if incoming.verdict.auto:
        record(
            ticket,
            "agent_auto_reply_ignored",
            actor=sender,
            inbound=incoming.inbound,
            reasons=list(incoming.verdict.reasons),
        )
        return Outcome("ignored", ticket.number)
    if agent is None:
        return _hold(
            incoming,
            ticket,
            None,
            f"{key.email} is no longer an agent of {incoming.mailbox.address}",
        )
    problem = _authorize(incoming, agent)
    if problem:
        return _hold(incoming, ticket, agent, problem)
    return _reply(incoming, ticket, agent)


def on_personal_address(incoming: Incoming, agent: Agent) -> Outcome:
    """A message to an agent's personal address: #on-behalf opens a ticket for a customer."""
    if incoming.verdict.auto:
        record(
            None,
            "agent_auto_reply_ignored",
            actor=incoming.sender.email,
            inbound=incoming.inbound,
            reasons=list(incoming.verdict.reasons),
        )
        return Outcome("ignored")
    problem = _authorize(incoming, agent)
    if problem:
        return _hold(incoming, None, agent, problem)
    block = _block(incoming)
    behalf = [c for c in block.commands if c.name == "on-behalf"]
    errors = [*block.errors, *_role_errors(block.commands, agent, incoming, personal=True)]
    if _private_addresses(block.body, incoming):
        errors.append(QUOTE_LEFT)
    if not behalf:
        errors.append(
            "write '#on-behalf customer@example.org' on the first line to open a "
            "ticket for a customer"
        )
    elif not _may_write_to(behalf[0].value, incoming):
        errors.append(f"{behalf[0].line}: not an address we write to on anyone's behalf")
    if errors:
        return _reject(incoming, None, agent, errors)
    customer = Address("", behalf[0].value)
    ticket = tickets.open_ticket(incoming, customer)
    sla.on_created(ticket, incoming.mailbox, ticket.created_at)
    tickets.add_participants(ticket, [customer])
    record(
        ticket,
        "ticket_created",
        actor=agent.email,
        inbound=incoming.inbound,
        on_behalf_of=customer.email,
    )
    return _post(incoming, ticket, agent, block.body, block.commands, first=True)


def _block(incoming: Incoming) -> CommandBlock:
    """The commands and the text of an agent's message.

    From a mail client: the commands on top of the reply, quotes stripped.
    From the API: the commands it put in X-Gateway-Commands, and the text
    exactly as given (a line starting with "#" there is text, not a command).
    """
    categories = incoming.mailbox.categories
    if incoming.inbound.protocol != "api":
        return parse_commands(strip_reply(incoming.parsed.text), categories)
    header = dict(incoming.parsed.headers).get("x-gateway-commands", "")
    commands = parse_commands(header, categories)
    return CommandBlock(commands.commands, incoming.parsed.text.strip(), commands.errors)


def _authorize(incoming: Incoming, agent: Agent) -> str | None:
    """Why this message is not the agent's own, or None.

    The API's messages were authenticated by the agent's token before they
    were spooled; no MTA stamped them, so Authentication-Results is not asked.
    """
    sender = incoming.sender.email.lower()
    if sender != agent.email:
        return f"sent from {sender or 'an unknown address'}, not from the agent {agent.email}"
    trusted = incoming.config.gateway.trusted_authserv_id
    if trusted and incoming.inbound.protocol != "api":
        verdict = authres.check(incoming.parsed.headers, sender, trusted)
        if not verdict.passed:
            return f"sender authentication failed: {verdict.reason}"
    return None


def _hold(
    incoming: Incoming, ticket: models.Ticket | None, agent: Agent | None, why: str
) -> Outcome:
    """Post nothing; keep the message for review and tell the agent."""
    sender = incoming.sender.email.lower()
    log.warning("%s held for review: %s", ticket_ref(ticket), why)
    record(
        ticket,
        "held_for_review",
        actor=sender,
        inbound=incoming.inbound,
        agent=agent.email if agent else None,
        why=why,
    )
    if agent is not None:
        event = "key_misuse" if ticket is not None else "address_misuse"
        incoming.notifier.to_agent(ticket, event, agent, mailbox=incoming.mailbox, intruder=sender)
    return Outcome("held", ticket.number if ticket else None, reason=f"held for review: {why}")


def _reject(
    incoming: Incoming, ticket: models.Ticket | None, agent: Agent, errors: list[str]
) -> Outcome:
    """Apply nothing, send nothing to the customer, and tell the agent why."""
    record(
        ticket,
        "agent_commands_rejected",
        actor=agent.email,
        inbound=incoming.inbound,
        errors=errors,
    )
    incoming.notifier.to_agent(
        ticket, "command_rejected", agent, mailbox=incoming.mailbox, errors=errors
    )
    return Outcome("rejected", ticket.number if ticket else None)


def _reply(incoming: Incoming, ticket: models.Ticket, agent: Agent) -> Outcome:
    block = _block(incoming)
    errors = [*block.errors, *_role_errors(block.commands, agent, incoming, personal=False)]
    if _private_addresses(block.body, incoming):
        errors.append(QUOTE_LEFT)
    if errors:
        return _reject(incoming, ticket, agent, errors)
    return _post(incoming, ticket, agent, block.body, block.commands, first=False)


def _post(
    incoming: Incoming,
    ticket: models.Ticket,
    agent: Agent,
    body: str,
    commands: Sequence[Command],
    *,
    first: bool,
) -> Outcome:
    """Store the agent's text, apply the commands, and send what must be sent."""
    note = any(c.name == "note" for c in commands)
    has_content = bool(body.strip()) or bool(incoming.parsed.attachments)
    message = None
    if has_content:
        message = tickets.add_message(
            incoming,
            ticket,
            text=body,
            role="agent",
            author_name=agent.name,
            visibility="internal" if note else "public",
        )
        record(
            ticket,
            "note_added" if note else "agent_replied",
            actor=agent.email,
            inbound=incoming.inbound,
            message=message.id,
        )
    answered = message is not None and not note
    if answered:
        sla.on_agent_answer(ticket, incoming.mailbox, agent.email, utcnow())
    old_status = ticket.status
    applied = _apply(incoming, ticket, agent, commands, body)
    if answered and not any(c.name == "status" for c in commands):
        tickets.set_status(
            ticket,
            "waiting_on_customer",
            mailbox=incoming.mailbox,
            actor=agent.email,
            inbound=incoming.inbound,
            why="agent replied",
        )
    customers = incoming.notifier.customers(ticket)
    if answered:
        incoming.notifier.agent_reply(ticket, agent, body, _attached(incoming), customers)
    elif ticket.status != old_status and ticket.status == "resolved":
        # Resolved by a command alone: the customer hears of it (with the
        # rating links). A close alone says nothing: closing spam must not
        # mail the spammer.
        incoming.notifier.status_to_customers(ticket, old_status, customers)
    if message is not None and incoming.mailbox.copy_agents:
        for other in incoming.mailbox.agents:
            if other.email != agent.email:
                incoming.notifier.to_agent(
                    ticket,
                    "agent_reply_copy",
                    other,
                    message=message,
                    agent={"name": agent.name, "email": agent.email},
                    applied=applied,
                )
    action = "agent_note" if note else "agent_replied" if answered else "agent_commands"
    return Outcome("created" if first else action, ticket.number)


def _apply(
    incoming: Incoming, ticket: models.Ticket, agent: Agent, commands: Sequence[Command], body: str
) -> list[str]:
    """Carry out the commands; one short line per change, for the team's copy."""
    applied: list[str] = []
    inbound = incoming.inbound
    for command in commands:
        if command.name == "status":
            tickets.set_status(
                ticket,
                command.value,
                mailbox=incoming.mailbox,
                actor=agent.email,
                inbound=inbound,
                why="agent command",
            )
        elif command.name in {"priority", "category"}:
            tickets.set_field(
                ticket,
                command.name,
                command.value,
                mailbox=incoming.mailbox,
                actor=agent.email,
                inbound=inbound,
            )
        elif command.name == "assign":
            target = agent.email if command.value == "me" else command.value
            _assign(incoming, ticket, agent, target)
        elif command.name == "escalate":
            _escalate(incoming, ticket, agent, body)
        else:
            continue
        applied.append(f"{command.name} → {command.value or 'yes'}")
    return applied


def _assign(incoming: Incoming, ticket: models.Ticket, agent: Agent, target: str) -> None:
    tickets.set_field(
        ticket,
        "assignee",
        target,
        mailbox=incoming.mailbox,
        actor=agent.email,
        inbound=incoming.inbound,
    )
    assignee = incoming.mailbox.agent(target)
    if assignee is not None and assignee.email != agent.email:
        incoming.notifier.to_agent(
            ticket,
            "ticket_assigned",
            assignee,
            message=tickets.latest_customer_message(ticket),
            agent={"name": agent.name, "email": agent.email},
        )


def _escalate(incoming: Incoming, ticket: models.Ticket, agent: Agent, body: str) -> None:
    """Hand the ticket to the mailbox's admins: record it and tell each of them."""
    record(ticket, "escalated", actor=agent.email, inbound=incoming.inbound, note=body)
    latest = tickets.latest_customer_message(ticket)
    for admin in incoming.mailbox.admins:
        incoming.notifier.to_agent(
            ticket,
            "escalated",
            admin,
            agent={"name": agent.name, "email": agent.email},
            note=body,
            message=latest,
        )


def _role_errors(
    commands: Sequence[Command], agent: Agent, incoming: Incoming, *, personal: bool
) -> list[str]:
    """Commands this agent may not use here."""
    errors = []
    for command in commands:
        if command.name == "assign" and command.value not in {"me", agent.email}:
            if agent.role != "admin":
                errors.append(
                    f"{command.line}: only an admin may assign a ticket to someone "
                    "else; use #assign me"
                )
            elif incoming.mailbox.agent(command.value) is None:
                errors.append(
                    f"{command.line}: {command.value} is not an agent of {incoming.mailbox.address}"
                )
        if command.name == "on-behalf" and not personal:
            errors.append(
                f"{command.line}: write to your personal address to open a ticket for a customer"
            )
    return errors


def _private_addresses(text: str, incoming: Incoming) -> bool:
    """Whether ``text`` holds one of our plus-addresses (reply keys, personal addresses)."""
    for own in incoming.own_addresses:
        local, _, domain = own.partition("@")
        pattern = re.escape(local) + r"\+[A-Za-z0-9_.-]+@" + re.escape(domain)
        if re.search(pattern, text, re.IGNORECASE):
            return True
    return False


def _may_write_to(email: str, incoming: Incoming) -> bool:
    own = incoming.own_addresses
    return (
        email not in own
        and incoming.mailbox.agent(email) is None
        and not is_automated_address(email)
        and "@" in email
    )


def _attached(incoming: Incoming) -> list[Attached]:
    return [
        Attached(a.filename, a.content_type, a.data)
        for a in incoming.parsed.attachments
        if not a.inline
    ]
