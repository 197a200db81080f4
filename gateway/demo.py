"""``ticket-gateway demo``: two weeks of support work, replayed through the real intake.

Customers writing in English, Vietnamese and Persian open tickets; agents
answer by replying to their notifications (the reply key in the
notification's Reply-To, as their mail client would); some customers write
back, some never do, some rate the answer. Every message is spooled by
:class:`gateway.intake.Intake` and processed by
:func:`gateway.process.process_inbound`, exactly as mail from the SMTP
listener is; the timed jobs run every simulated hour. The clock
(:func:`gateway.db.set_clock`) walks from two weeks ago to now, so SLA
clocks, breaches, auto-close and the report's figures all come out as they
would have.

The demo never sends mail: everything it queues is marked failed with the
reason "demo data, never sent" as soon as it is queued, and it refuses to
run beside a live daemon of the same configuration, whose outbox worker
could otherwise pick a row up first. Three demo agents join each mailbox's
team for the replay (in memory only). It refuses a database
that already holds tickets, unless forced: demo tickets would distort a
real team's reports.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr

from gateway import agents, models, ratings
from gateway.config import Agent, Config, Mailbox
from gateway.db import Store, set_clock, utcnow
from gateway.errors import GatewayError
from gateway.intake import Delivery, Envelope, Intake
from gateway.lifecycle import Jobs
from gateway.notify import Notifier
from gateway.outbox import NEVER_SENT
from gateway.process import process_inbound
from gateway.render import Renderer

DEMO_AGENTS = (
    Agent("lan.demo@example.com", "Lan Nguyen", "agent"),
    Agent("omid.demo@example.com", "Omid Rahimi", "agent"),
    Agent("sarah.demo@example.com", "Sarah Miller", "admin"),
)


@dataclass(frozen=True)
class Topic:
    """One customer request in one language, with the conversation around it."""

    language: str
    subject: str
    body: str
    answer: str
    follow_up: str


TOPICS = (
    Topic(
        "en",
        "Order #4471 has not arrived",
        "Hello,\n\nI ordered a kettle two weeks ago (order #4471) and it has not "
        "arrived yet. The tracking page has not changed since Monday.\n\nThanks,\n",
        "I am sorry for the wait. The parcel was held at the depot; it goes out today.",
        "It still says 'at depot' this morning. Can you check again?",
    ),
    Topic(
        "en",
        "Charged twice for my subscription",
        "Hi,\n\nmy card was charged twice for the November subscription "
        "(2 x 9.90 EUR). Could you refund one of them?\n\nBest regards,\n",
        "You are right, the second charge was our mistake. The refund is on its way.",
        "I do not see the refund yet, how long does it take?",
    ),
    Topic(
        "en",
        "Cannot log in after password reset",
        "Hello,\n\nafter resetting my password I get 'invalid token' every time "
        "I try to log in, on the app and on the website.\n",
        "Could you tell us which phone and app version you use?",
        "iPhone 13, app version 5.2.1.",
    ),
    Topic(
        "vi",
        "Đơn hàng chưa được giao",
        "Chào anh/chị,\n\nTôi đặt hàng từ tuần trước (mã đơn 88213) nhưng đến nay "
        "vẫn chưa nhận được. Nhờ anh/chị kiểm tra giúp.\n\nCảm ơn,\n",
        "Dạ em xin lỗi vì sự chậm trễ. Đơn của chị đã được chuyển đi sáng nay ạ.",
        "Em kiểm tra lại giúp chị, trên trang theo dõi vẫn chưa thấy cập nhật.",
    ),
    Topic(
        "vi",
        "Hóa đơn tháng 11 bị sai",
        "Xin chào,\n\nHóa đơn tháng 11 của công ty tôi bị tính thừa 2 tài khoản. "
        "Vui lòng điều chỉnh lại giúp.\n\nTrân trọng,\n",
        "Dạ em đã kiểm tra, hóa đơn đã được điều chỉnh và gửi lại cho anh ạ.",
        "Anh vẫn thấy số tiền cũ trong trang thanh toán.",
    ),
    Topic(
        "vi",
        "Không đăng nhập được ứng dụng",
        "Chào bạn,\n\nTừ hôm qua mình không đăng nhập được vào ứng dụng, báo lỗi "
        "'phiên hết hạn' liên tục.\n",
        "Bạn cho mình biết bạn dùng điện thoại nào và phiên bản ứng dụng nhé?",
        "Mình dùng Samsung A52, ứng dụng bản 5.2.0.",
    ),
    Topic(
        "fa",
        "سفارش من هنوز نرسیده است",
        "سلام،\n\nسفارش شماره ۵۵۱۰ را ده روز پیش ثبت کردم ولی هنوز به دستم نرسیده است. "
        "لطفاً پیگیری کنید.\n\nممنون\n",
        "بابت تأخیر عذرخواهی می‌کنیم. بسته شما امروز ارسال شد.",
        "هنوز در سامانه رهگیری تغییری نمی‌بینم.",
    ),
    Topic(
        "fa",
        "مبلغ اشتراک دو بار کسر شد",
        "با سلام،\n\nمبلغ اشتراک این ماه دو بار از کارت من کسر شده است. لطفاً یکی "
        "از آن‌ها را بازگردانید.\n",
        "حق با شماست؛ مبلغ اضافه تا سه روز کاری به حساب شما بازمی‌گردد.",
        "هنوز مبلغ به حسابم برنگشته است.",
    ),
    Topic(
        "fa",
        "ورود به حساب کاربری ممکن نیست",
        "سلام،\n\nبعد از تغییر رمز عبور دیگر نمی‌توانم وارد حسابم شوم.\n",
        "لطفاً بفرمایید از چه دستگاه و چه نسخه‌ای از برنامه استفاده می‌کنید؟",
        "گوشی شیائومی، نسخه ۵٫۲٫۱.",
    ),
)

RESOLVED = {
    "en": "This is sorted now. If anything is still wrong, just reply to this mail.",
    "vi": "Vấn đề đã được xử lý xong. Nếu còn gì chưa ổn, anh/chị cứ trả lời thư này nhé.",
    "fa": "مشکل برطرف شد. اگر هنوز چیزی درست نیست، کافی است به همین نامه پاسخ دهید.",
}

CUSTOMERS = {
    "en": ("Emma Clark", "Daniel Brooks", "Priya Shah"),
    "vi": ("Nguyễn Thị Mai", "Trần Văn Hùng", "Lê Thu Hà"),
    "fa": ("مریم احمدی", "علی رضایی", "سارا کریمی"),
}


@dataclass(frozen=True)
class Summary:
    """What the demo made, for the command's output."""

    tickets: int
    languages: dict[str, int]
    messages: int
    demo_agents: bool


class _Scene:
    """The demo's cast and stage: config, intake, a clock that moves forward."""

    def __init__(self, config: Config, store: Store, start: dt.datetime) -> None:
        self.config = config
        self.store = store
        self.intake = Intake(store)
        self.notifier = Notifier(
            config, Renderer(config.gateway.templates_dir), agents.gateway_secret(config)
        )
        self.jobs = Jobs(config, self.notifier)
        self.now = start
        self.messages = 0
        self.first_queued = store.call(_last_outbox_id)
        self.tickets: set[int] = set()  # numbers of the demo's tickets

    def never_send(self) -> None:
        """Mark the mail queued on the demo's tickets as failed, so none is ever sent."""
        self.store.call(_never_send, self.first_queued, sorted(self.tickets))

    def clock(self) -> dt.datetime:
        return self.now

    def deliver(self, message: EmailMessage, sender: str, rcpt: str) -> int | None:
        """Spool and process one message as the SMTP listener would; its ticket number."""
        message["Date"] = format_datetime(self.now.replace(tzinfo=dt.UTC))
        message["Message-ID"] = make_msgid(domain="demo.example.com")
        raw = message.as_bytes(policy=SMTP)
        mailbox = self.config.route(rcpt)
        assert mailbox is not None
        envelope = Envelope(sender, (rcpt,), "smtp", peer="127.0.0.1", helo="demo.example.com")
        delivery = Delivery(mailbox[0].address, (rcpt,))
        [spooled] = asyncio.run(self.intake.spool(raw, envelope, [delivery]))
        result = self.store.call(
            process_inbound, spooled.inbound_id, self.config, self.store.database, self.notifier
        )
        if result.ticket_number is not None:
            self.tickets.add(result.ticket_number)
        self.never_send()  # at once, not only at the end
        self.messages += 1
        return result.ticket_number

    def reply_key(self, number: int, recipient: str) -> str | None:
        """The Reply-To of the latest mail queued for ``recipient`` on ticket ``number``."""
        row = self.store.call(_latest_mail, number, recipient)
        if row is None:
            return None
        _, address = parseaddr(str(message_from_bytes(row).get("Reply-To", "")))
        return address or None


def _latest_mail(number: int, recipient: str) -> bytes | None:
    row = (
        models.Outbox.select(models.Outbox.data)
        .join(models.Ticket)
        .where((models.Ticket.number == number) & (models.Outbox.recipient == recipient))
        .order_by(models.Outbox.id.desc())
        .first()
    )
    return bytes(row.data) if row is not None else None


def _mail(sender: str, name: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f'"{name}" <{sender}>'
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def with_demo_agents(config: Config) -> tuple[Config, bool]:
    """``config`` with the demo agents in every mailbox that has fewer than three."""
    if all(len(m.agents) >= len(DEMO_AGENTS) for m in config.mailboxes):
        return config, False
    boxes = tuple(
        m
        if len(m.agents) >= len(DEMO_AGENTS)
        else replace(m, agents=m.agents + tuple(a for a in DEMO_AGENTS if not m.agent(a.email)))
        for m in config.mailboxes
    )
    return replace(config, mailboxes=boxes), True


def run(
    config: Config,
    store: Store,
    *,
    force: bool = False,
    days: int = 14,
    tickets: int = 27,
    seed: int = 7,
) -> Summary:
    """Replay ``days`` of work ending now: ``tickets`` tickets in the first mailbox.

    Refuses a database that already holds tickets unless ``force``.
    """
    if _daemon_running(config):
        raise GatewayError(
            f"a daemon is running (pid file {config.gateway.pid_file}); stop it first: "
            "it would pick up the demo's mail while the replay is writing it"
        )
    if not force and store.call(lambda: models.Ticket.select().exists()):
        raise GatewayError(
            "the database already holds tickets; the demo would mix its tickets into "
            "your reports (use a fresh database, or --force)"
        )
    config, demo_agents = with_demo_agents(config)
    real_now = utcnow()
    scene = _Scene(config, store, real_now - dt.timedelta(days=days))
    plan = _plan(config.mailboxes[0], random.Random(seed), days, tickets, real_now)
    languages: dict[str, int] = {}
    set_clock(scene.clock)
    try:
        next_jobs = scene.now
        for moment, action in sorted(plan, key=lambda item: item[0]):
            while next_jobs <= moment:
                scene.now = next_jobs
                store.call(scene.jobs.run_all)
                next_jobs += dt.timedelta(hours=1)
            scene.now = moment
            language = action(scene)
            if language:
                languages[language] = languages.get(language, 0) + 1
        scene.now = real_now
        store.call(scene.jobs.run_all)
    finally:
        set_clock(None)
        scene.never_send()
    return Summary(sum(languages.values()), languages, scene.messages, demo_agents)


Action = Callable[[_Scene], str | None]


def _plan(
    mailbox: Mailbox, rng: random.Random, days: int, count: int, now: dt.datetime
) -> list[tuple[dt.datetime, Action]]:
    """Every step of every ticket, at its simulated time."""
    start = now - dt.timedelta(days=days)
    steps: list[tuple[dt.datetime, Action]] = []
    for index in range(count):
        topic = TOPICS[index % len(TOPICS)]
        name = rng.choice(CUSTOMERS[topic.language])
        email = f"customer{index + 1}@{topic.language}.example.net"
        # Spread over the period; the last few tickets are recent and unanswered.
        recent = index >= count - 4
        opened = (
            now - dt.timedelta(hours=rng.uniform(1, 30))
            if recent
            else start + dt.timedelta(hours=rng.uniform(0, (days - 2) * 24))
        )
        agent = (
            mailbox.agents[index % len(mailbox.agents)]
            if mailbox.agents
            else DEMO_AGENTS[index % 3]
        )
        story = _Story(mailbox, topic, name, email, agent, rng)
        steps.append((opened, story.open))
        if recent:
            continue
        if index % 4 == 1:  # triaged first: the agent raises the priority by a command
            steps.append((opened + dt.timedelta(minutes=20), story.triage))
        answered = opened + dt.timedelta(hours=rng.choice((0.5, 1, 2, 3, 5, 9, 20, 30)))
        steps.append((answered, story.answer))
        kind = rng.random()
        if kind < 0.25:  # the customer never writes back: reminders, auto-resolve, close
            continue
        back = answered + dt.timedelta(hours=rng.uniform(2, 30))
        steps.append((back, story.follow_up))
        resolved = back + dt.timedelta(hours=rng.uniform(1, 12))
        steps.append((resolved, story.resolve))
        if kind < 0.85:
            steps.append((resolved + dt.timedelta(hours=rng.uniform(1, 20)), story.rate))
    return steps


class _Story:
    """One ticket's conversation, step by step."""

    def __init__(
        self,
        mailbox: Mailbox,
        topic: Topic,
        name: str,
        email: str,
        agent: Agent,
        rng: random.Random,
    ) -> None:
        self.mailbox, self.topic, self.name, self.email = mailbox, topic, name, email
        self.agent = agent
        self.good = rng.random() < 0.75
        self.number: int | None = None

    def open(self, scene: _Scene) -> str | None:
        body = self.topic.body + self.name + "\n"
        message = _mail(self.email, self.name, self.mailbox.address, self.topic.subject, body)
        self.number = scene.deliver(message, self.email, self.mailbox.address)
        return self.topic.language

    def answer(self, scene: _Scene, text: str | None = None) -> None:
        if self.number is None:
            return
        key = scene.reply_key(self.number, self.agent.email)
        if key is None:
            return
        body = text if text is not None else self.topic.answer
        subject = f"Re: {self.mailbox.format_tag(self.number)} {self.topic.subject}"
        scene.deliver(
            _mail(self.agent.email, self.agent.name, key, subject, body), self.agent.email, key
        )

    def follow_up(self, scene: _Scene) -> None:
        if self.number is None:
            return
        key = scene.reply_key(self.number, self.email)
        if key is None:
            return
        subject = f"Re: {self.mailbox.format_tag(self.number)} {self.topic.subject}"
        scene.deliver(
            _mail(self.email, self.name, key, subject, self.topic.follow_up), self.email, key
        )

    def triage(self, scene: _Scene) -> None:
        self.answer(scene, "#priority " + ("urgent" if self.good else "high"))

    def resolve(self, scene: _Scene) -> None:
        self.answer(scene, "#resolve\n" + RESOLVED[self.topic.language])

    def rate(self, scene: _Scene) -> None:
        number = self.number
        if number is None:
            return

        def click() -> None:
            ticket = models.Ticket.get(models.Ticket.number == number)
            ratings.rate(ticket, "good" if self.good else "bad", self.email)

        scene.store.call(click)


def _daemon_running(config: Config) -> bool:
    """Whether the pid file names a live process (a daemon of this configuration)."""
    pid_file = config.gateway.pid_file
    try:
        pid = int(pid_file.read_text().strip()) if pid_file else 0
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _last_outbox_id() -> int:
    row = models.Outbox.select(models.Outbox.id).order_by(models.Outbox.id.desc()).first()
    return int(row.id) if row is not None else 0


def _never_send(after: int, numbers: list[int]) -> None:
    """Mark the mail queued (since ``after``) on the demo's tickets as failed.

    Only the demo's: another instance sharing the database may be queueing
    real mail meanwhile.
    """
    demo = models.Ticket.select(models.Ticket.id).where(models.Ticket.number.in_(numbers))
    models.Outbox.update(status=models.Outbox.FAILED, last_error=NEVER_SENT).where(
        (models.Outbox.id > after) & models.Outbox.ticket.in_(demo)
    ).execute()
