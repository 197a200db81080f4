"""schemathesis against the served OpenAPI document: no 5xx, every response as documented.

The gateway runs for real (SQLite and PostgreSQL) with a ticket in place;
schemathesis reads /api/v1/openapi.json over HTTP and sends what it
generates from it, valid and invalid, with an agent's token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import GatewayThread
from tests.test_agents import BOSS
from tests.test_api import Client, api_config, customer_ticket, token

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Every check but the ones that cannot hold for a ticket API:
#   positive_data_acceptance  a valid request for ticket 4711 still gets a 404
#                             when there is no such ticket;
#   use_after_free / ensure_resource_availability  need links between
#                             operations, which the document does not declare.
EXCLUDED = "positive_data_acceptance,use_after_free,ensure_resource_availability"
# schemathesis's own list of answers that reject bad input, and 413.
REJECTIONS = (
    '["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]'
)


def test_the_api_matches_its_openapi_document(tmp_path: Path, database_url: str) -> None:
    with GatewayThread(api_config(tmp_path, database_url, rate="100000/1min")) as gateway:
        customer_ticket(gateway)
        bearer = token(gateway.config.path, BOSS)
        url = f"http://127.0.0.1:{gateway.port('portal')}/api/v1/openapi.json"
        attachment = _attachment_id(gateway, bearer)
        # Real identifiers, so that generated requests also reach a ticket.
        settings = tmp_path / "schemathesis.toml"
        # 413 is a rejection too: a body over the size cap is refused before
        # it is read, whatever its fields say.
        settings.write_text(
            f'[parameters]\n"path.number" = 10000\n"path.id" = {attachment}\n'
            f"[checks.negative_data_rejection]\nexpected-statuses = {REJECTIONS}\n"
        )
        done = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(settings),
                "run",
                url,
                "--header",
                f"Authorization: Bearer {bearer}",
                "--checks",
                "all",
                "--exclude-checks",
                EXCLUDED,
                "--max-examples",
                "25",
                "--seed",
                "20261126",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
            cwd=tmp_path,  # its cache (.schemathesis/) stays out of the repository
            check=False,
        )
    (tmp_path / "schemathesis.txt").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout, done.stdout[-3000:]


def _attachment_id(gateway: GatewayThread, bearer: str) -> int:
    """Ticket 10000 gets an agent's reply with a file; the file's id."""
    client = Client(gateway, bearer)
    body = {
        "text": "Here is the form.",
        "attachments": [{"filename": "form.txt", "content_base64": "Zm9ybQ=="}],
    }
    status, ticket, _ = client.call("POST", "/tickets/10000/reply", body)
    assert status == 200, ticket
    return int(ticket["messages"][-1]["attachments"][0]["id"])
