"""``ticket-gateway demo`` on a fresh database answers a manager's questions.

Run as an operator would, as separate commands against the sample
configuration's layout, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gateway import models
from gateway.db import open_database
from gateway.outbox import NEVER_SENT

ROOT = Path(__file__).resolve().parent.parent


def gateway(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def sample_config(folder: Path, database_url: str) -> Path:
    """The sample mailboxes.toml, on the test's database, its files in ``folder``."""
    text = (ROOT / "mailboxes.toml").read_text()
    text = text.replace('database = "sqlite:///var/gateway.db"', f'database = "{database_url}"')
    path = folder / "mailboxes.toml"
    path.write_text(text)
    return path


def test_demo_loads_tickets_the_report_and_action_list_can_answer(
    tmp_path: Path, database_url: str
) -> None:
    config = sample_config(tmp_path, database_url)
    loaded = gateway(config, "demo")
    assert loaded.returncode == 0, loaded.stderr
    assert "27 tickets (9 en, 9 fa, 9 vi)" in loaded.stdout
    assert loaded.stderr == ""  # no warnings or tracebacks on the operator's terminal

    figures = json.loads(gateway(config, "report", "--json").stdout)
    totals = figures["totals"]
    assert totals["opened"] == 27
    assert 0 < totals["resolved"] < 27
    assert totals["first_response"]["count"] > 10
    assert totals["csat"]["rated"] > 0
    assert len(figures["agents"]) >= 3  # the sample's agent and the demo's
    assert any(row["responses"]["missed"] for row in figures["priorities"].values())

    waiting = json.loads(gateway(config, "tickets", "list", "--action-required", "--json").stdout)
    assert len(waiting) == 4  # the recent, unanswered ones
    left = [row["seconds_left"] for row in waiting]
    assert left == sorted(left)  # most urgent first

    database = open_database(database_url, tmp_path)
    try:
        with database.connection_context():
            languages = {t.language for t in models.Ticket.select()}
            outbox = {(r.status, r.last_error) for r in models.Outbox.select()}
            intake = {i.protocol for i in models.Inbound.select()}
            quarantined = models.Inbound.select().where(models.Inbound.status == "quarantined")
            assert quarantined.count() == 0
    finally:
        database.close_all()
    assert languages == {"en", "vi", "fa"}
    assert outbox == {("failed", NEVER_SENT)}  # nothing the demo queued is ever sent
    assert intake == {"smtp"}  # through the intake, as the listener spools mail

    again = gateway(config, "demo")
    assert again.returncode == 1
    assert "already holds tickets" in again.stderr


def test_demo_refuses_to_run_beside_a_live_daemon(tmp_path: Path, database_url: str) -> None:
    config = sample_config(tmp_path, database_url)
    pid_file = tmp_path / "var" / "ticket-gateway.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")  # a live process: this test's
    refused = gateway(config, "demo")
    assert refused.returncode == 1
    assert "a daemon is running" in refused.stderr and "Traceback" not in refused.stderr
