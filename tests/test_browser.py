"""The guest's whole journey in a real browser: Debian's Chromium, headless, via Playwright.

From the link in a delivered acknowledgement to a reply with an attachment
that arrives as the agent's notification. No JavaScript is needed by the
pages; the browser is here to prove what a person sees and does. Screenshots
of each step go to test-artifacts/ (kept by CI runs for a look).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.helpers import GatewayThread, write_config
from tests.portal_helpers import CUSTOMER, PORTAL, customer_ticket, latest_code

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
AGENT = "lan@team.example"
# Chromium on a machine without a network: no background calls home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM} (tests/services/chromium.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[GatewayThread]:
    path = write_config(tmp_path, database_url, extra_gateway=PORTAL, processing="worker")
    head, first, second = path.read_text().split("[[mailbox]]")
    team = f'\n[[mailbox.agent]]\nemail = "{AGENT}"\nname = "Lan"\n'
    path.write_text(head + "[[mailbox]]" + first + team + "[[mailbox]]" + second)
    with GatewayThread(path) as running:
        yield running


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_verified(site: GatewayThread, browser: Any, link: str, name: str) -> Any:
    """Open the link in a phone-sized window and prove the address with the mailed code."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="vi-VN")
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs  # what any alert() would have said
    base = f"http://127.0.0.1:{site.port('portal')}"
    page.goto(base + link)
    assert page.url == base + "/ticket"  # the token left the address bar
    assert "k***@example.vn" in page.content()
    shot(page, f"{name}-1-link")
    page.locator(
        "form[action='/code'] button[type=submit], form[action='/code'] input[type=submit]"
    ).first.click()
    page.wait_for_url(base + "/verify?sent=1")
    shot(page, f"{name}-2-code-sent")
    page.fill("input[name=code]", latest_code(site))
    page.locator("form[action='/verify'] [type=submit]").first.click()
    page.wait_for_url(base + "/tickets/10000")
    return page


def test_guest_journey_in_chromium(site: GatewayThread, browser: Any) -> None:
    link = customer_ticket(site, body="Tôi không in được hoá đơn tháng 11.")
    page = open_verified(site, browser, link, "journey")
    assert page.get_attribute("html", "lang") == "vi"
    assert "Tôi không in được hoá đơn tháng 11." in page.inner_text("body")
    shot(page, "journey-3-ticket")

    attachment = ARTIFACTS / "hoá-đơn.txt"
    attachment.write_text("Số hoá đơn: 42\n", encoding="utf-8")
    page.fill("textarea[name=text]", "Đây là ảnh chụp hoá đơn.")
    page.set_input_files("input[name=files]", str(attachment))
    page.locator("form[enctype='multipart/form-data'] [type=submit]").first.click()
    page.wait_for_url("**/tickets/10000?sent=1")
    body = page.inner_text("body")
    assert "Đây là ảnh chụp hoá đơn." in body
    assert "hoá-đơn.txt" in body
    shot(page, "journey-4-replied")
    assert page.dialogs == []

    site.settle()
    [ticket] = site.tickets()
    assert ticket["messages"][-1]["text"] == "Đây là ảnh chụp hoá đơn."
    assert ticket["messages"][-1]["attachments"][0]["filename"] == "hoá-đơn.txt"
    notified = [
        m
        for m in site.sent_mail()
        if str(m["Delivered-To"]) == AGENT
        and "Đây là ảnh chụp hoá đơn." in m.get_body(("plain",)).get_content()
    ]
    assert len(notified) == 1  # the reply reached the agent like any mail would


def test_script_in_a_ticket_never_runs(site: GatewayThread, browser: Any) -> None:
    payload = (
        '<script>alert("script")</script>\n<img src=x onerror="alert(\'img\')">\n'
        '<a href="javascript:alert(1)">click</a>'
    )
    link = customer_ticket(site, body=payload)
    page = open_verified(site, browser, link, "xss")
    page.wait_for_timeout(300)
    text = page.inner_text("body")
    assert '<script>alert("script")</script>' in text  # shown as text, inert
    assert page.locator("img").count() == 0
    assert page.locator("a[href^='javascript:']").count() == 0
    assert page.dialogs == []
    shot(page, "xss-ticket")
    assert CUSTOMER in site.tickets()[0]["requester"]["email"]
