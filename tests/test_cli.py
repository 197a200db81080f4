"""The CLI against a real database filled through the real SMTP intake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import models
from tests.helpers import GatewayThread, mail, reply_to, write_config


def run(*args: str) -> tuple[int, str, str]:
    """The CLI as an operator runs it, in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def filled(gateway: GatewayThread) -> GatewayThread:
    """Three tickets; the first has a reply with an attachment."""
    first = mail(subject="Đơn hàng bị giao nhầm", sender="Trần Minh <minh@example.vn>")
    gateway.send(first)
    answer = reply_to(first, "Ảnh đính kèm.", sender="minh@example.vn")
    answer.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="hoá đơn.pdf"
    )
    gateway.send(answer)
    gateway.send(mail(subject="مشکل ورود به حساب", sender="Sara <sara@example.ir>"))
    gateway.send(mail(subject="Password reset", sender="bob@example.com"))
    return gateway


def test_tickets_show_json_has_the_documented_fields(filled: GatewayThread) -> None:
    code, out, _ = run("tickets", "show", "10000", "--json", "--config", str(filled.config.path))
    assert code == 0
    ticket = json.loads(out)
    for key in (
        "number",
        "subject",
        "status",
        "priority",
        "category",
        "mailbox",
        "requester",
        "language",
        "created_at",
        "updated_at",
        "messages",
    ):
        assert key in ticket
    assert ticket["requester"] == {"email": "minh@example.vn", "name": "Trần Minh"}
    first, second = ticket["messages"]
    assert set(first) >= {
        "message_id",
        "direction",
        "author",
        "visibility",
        "auto",
        "text",
        "html",
        "attachments",
        "created_at",
    }
    assert set(first["author"]) == {"email", "name", "role"}
    [attachment] = second["attachments"]
    assert attachment["filename"] == "hoá đơn.pdf"
    assert attachment["content_type"] == "application/pdf"
    assert attachment["size"] == len(b"%PDF-1.4 fake")
    assert len(attachment["sha256"]) == 64
    assert second["text"] == "Ảnh đính kèm."


def test_tickets_show_for_people(filled: GatewayThread) -> None:
    code, out, _ = run("tickets", "show", "10000", "--config", str(filled.config.path))
    assert code == 0
    assert out.startswith("#10000  Đơn hàng bị giao nhầm\n")
    assert "--- message 1: Trần Minh <minh@example.vn> (customer)" in out
    assert "--- message 2: minh@example.vn (customer)" in out
    assert "[attachment] hoá đơn.pdf (application/pdf, 13 bytes)" in out


def test_tickets_show_unknown_number(filled: GatewayThread) -> None:
    code, _, err = run("tickets", "show", "4242", "--config", str(filled.config.path))
    assert code == 1
    assert "no ticket #4242" in err


def test_tickets_list_table_and_filters(filled: GatewayThread) -> None:
    cfg = str(filled.config.path)
    code, out, _ = run("tickets", "list", "--config", cfg)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NUMBER", "STATUS", "PRIORITY", "CREATED", "REQUESTER", "SUBJECT"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["10002", "10001", "10000"]
    assert lines[-1] == "3 ticket(s)"

    def numbers(*args: str) -> list[int]:
        _, text, _ = run("tickets", "list", "--json", "--config", cfg, *args)
        return [t["number"] for t in json.loads(text)]

    assert numbers("--search", "ĐƠN HÀNG") == [10000]  # case-insensitive beyond ASCII
    assert numbers("--search", "sara@") == [10001]
    assert numbers("--search", "Sara") == [10001]
    assert numbers("--status", "new") == [10002, 10001, 10000]
    assert numbers("--status", "closed") == []
    assert numbers("--mailbox", "SUPPORT@example.com") == [10002, 10001, 10000]
    assert numbers("--mailbox", "sales@example.com") == []
    assert numbers("--since", "2000-01-01", "--until", "2100-01-01") == [10002, 10001, 10000]
    assert numbers("--until", "2000-01-01") == []
    assert numbers("--since", "2100-01-01") == []


def test_tickets_list_bad_date(filled: GatewayThread) -> None:
    code, _, err = run(
        "tickets", "list", "--since", "yesterday", "--config", str(filled.config.path)
    )
    assert code == 2
    assert "'yesterday' is not a date" in err


def test_quarantine_list_and_retry(gateway: GatewayThread, tmp_path: Path) -> None:
    deep = mail(subject="deeply nested")
    message = deep
    for _ in range(25):  # over the cap of 20 nested levels
        outer = mail(subject="wrapper")
        outer.add_attachment(message)
        message = outer
    gateway.send(message)
    cfg = str(gateway.config.path)
    code, out, _ = run("quarantine", "list", "--json", "--config", cfg)
    [row] = json.loads(out)
    assert "nest" in row["reason"] or "depth" in row["reason"]
    code, out, _ = run("quarantine", "list", "--config", cfg)
    assert row["queue_id"] in out
    assert "1 message(s) in quarantine" in out
    # Still over the cap: the retry says so and the message stays put.
    code, out, _ = run("quarantine", "retry", str(row["id"]), "--config", cfg)
    assert code == 1
    assert "still failing" in out
    # The operator raises the cap, retries by queue id, and the ticket appears.
    (tmp_path / "raised").mkdir()
    raised = write_config(
        tmp_path / "raised", gateway.config.gateway.database, extra_gateway="max_mime_depth = 50"
    )
    code, out, _ = run("quarantine", "retry", row["queue_id"], "--config", str(raised))
    assert code == 0, out
    assert "processed: created ticket #10000" in out
    with gateway.db():
        assert models.Inbound.get().status == "processed"
    code, out, _ = run("quarantine", "retry", row["queue_id"], "--config", str(raised))
    assert code == 1


def test_help_lists_commands() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in ("serve", "check-config", "tickets", "quarantine"):
        assert command in out


def test_customers_export_then_forget(filled: GatewayThread, tmp_path: Path) -> None:
    config = str(filled.config.path)
    out_dir = tmp_path / "export"
    code, out, err = run(
        "customers", "export", "Minh@Example.vn", "--output", str(out_dir), "--config", config
    )
    assert code == 0, err
    exported = json.loads(next(out_dir.glob("customer-*.json")).read_text())
    assert [t["number"] for t in exported["tickets"]] == [10000]
    assert (out_dir / "attachments" / "10000").is_dir()
    assert "personal data" in out

    code, out, err = run("customers", "forget", "minh@example.vn", "--config", config)
    assert code == 0, err
    assert "minh@example.vn forgotten, now erased-" in out
    with filled.db():
        ticket = models.Ticket.get(models.Ticket.number == 10000)
        assert ticket.requester_email.endswith("@invalid") and ticket.erased_at is not None
        assert ticket.status == "new"  # the figures stay
    code, out, _ = run("customers", "forget", "minh@example.vn", "--config", config)
    assert (code, out.strip()) == (0, "minh@example.vn: nothing stored about this address")


@pytest.mark.parametrize(
    ("address", "why"),
    [("support@example.com", "not a customer's"), ("nobody", "not an email address")],
)
def test_customers_forget_refuses_what_is_not_a_customer(
    filled: GatewayThread, address: str, why: str
) -> None:
    code, _, err = run("customers", "forget", address, "--config", str(filled.config.path))
    assert code == 1 and why in err and "Traceback" not in err
