"""What an operator sees of a running daemon: /metrics, JSON logs, `status`.

The daemon runs as its own process (so its counters start at zero), on
SQLite and PostgreSQL; mail goes in over SMTP, and the figures are read
back the way Prometheus, a log shipper and an operator read them.
"""

from __future__ import annotations

import json
import logging
import smtplib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import logs
from tests.helpers import SUPPORT, free_port, mail, wire, write_config
from tests.test_crash import Daemon


def observed_daemon(tmp_path: Path, database_url: str) -> tuple[Daemon, Path, int]:
    smtp, metrics = free_port(), free_port()
    config = write_config(
        tmp_path,
        database_url,
        f'metrics_listen = "127.0.0.1:{metrics}"\nlog_format = "json"',
        smtp_port=smtp,
        processing="worker",
    )
    return Daemon(config, smtp, tmp_path / "daemon.log"), config, metrics


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def status(config: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data: dict[str, object] = json.loads(done.stdout)
    return data


def test_metrics_logs_and_status_tell_what_happened(tmp_path: Path, database_url: str) -> None:
    daemon, config, metrics_port = observed_daemon(tmp_path, database_url)
    daemon.start()
    try:
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            client.sendmail("customer@example.org", [SUPPORT], wire(mail()))
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("customer@example.org")
            assert client.rcpt("nobody@elsewhere.example")[0] == 550
        deadline = time.monotonic() + 20
        figures = scrape(metrics_port)
        while time.monotonic() < deadline and not figures.get(
            ("gateway_mails_total", (("result", "sent"),))
        ):
            time.sleep(0.2)
            figures = scrape(metrics_port)
        assert figures[("gateway_messages_total", (("outcome", "accepted"),))] == 1
        assert figures[("gateway_recipients_refused_total", (("reason", "unknown"),))] >= 1
        assert figures[("gateway_tickets_created_total", ())] == 1
        assert figures[("gateway_inbound", (("status", "processed"),))] == 1
        assert figures[("gateway_mails_total", (("result", "sent"),))] >= 1  # the acknowledgement
        assert figures[("gateway_tickets_waiting_on_us", ())] == 1
        assert ("gateway_job_last_run_ok", (("job", "lifecycle"),)) in figures

        seen = status(config)
        [instance] = seen["instances"]  # type: ignore[misc]
        assert instance["alive"] and instance["listeners"]["smtp"] == f"127.0.0.1:{daemon.port}"
        assert instance["listeners"]["metrics"] == f"127.0.0.1:{metrics_port}"
        assert seen["inbound"] == {"processed": 1}
        assert {job["name"] for job in seen["jobs"]} == {"lifecycle", "purge"}  # type: ignore[attr-defined]
    finally:
        assert daemon.terminate() == 0
    assert status(config)["instances"] == []  # a clean stop says goodbye

    records = [json.loads(line) for line in daemon.log.read_text().splitlines() if line.strip()]
    [processed] = [r for r in records if r.get("action") == "created"]
    assert processed["ticket"] == 10000 and processed["mailbox"] == SUPPORT
    assert processed["queue_id"] and processed["message_id"].endswith("mail.example.org")
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    # One line per accepted message, the gateway's own; not aiosmtpd's dozen per
    # session (every command, with its addresses), which show at DEBUG only.
    [accepted] = [r for r in records if r["logger"] == "gateway.intake"]
    assert " accepted to support@example.com from customer@example.org" in accepted["message"]
    assert [r for r in records if r["logger"] == "mail.log"] == []


@pytest.mark.parametrize(
    ("level", "shown"),
    [("DEBUG", "DEBUG"), ("INFO", "WARNING"), ("WARNING", "WARNING"), ("ERROR", "ERROR")],
)
def test_aiosmtpd_lines_show_from_warning_and_never_below_the_level(level: str, shown: str) -> None:
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    try:
        logs.configure(level, "text")
        mail_log = logging.getLogger("mail.log")
        lowest = min(n for n in (10, 20, 30, 40) if mail_log.isEnabledFor(n))
        assert logging.getLevelName(lowest) == shown
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        logging.getLogger("mail.log").setLevel(logging.NOTSET)
