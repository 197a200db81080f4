"""commands: the "#status resolved" lines at the top of an agent's reply.

Replies are written the way agents type them in Gmail, Outlook, Apple Mail
and on phones, in English, Vietnamese and Persian: full-width signs from East
Asian keyboards, bidi marks from Persian keyboards and RTL clients, no-break
spaces, a colon after the command, a period after the value. Each test checks
the commands, body and errors an agent would see.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.commands import Command, CommandBlock, parse_commands

RLM, LRM, RLE, PDF, NBSP, ZWNJ = "\u200f", "\u200e", "\u202b", "\u202c", "\u00a0", "\u200c"
KNOWN = (
    "(known: #status, #resolve, #close, #reopen, #priority, #category, #assign, #note, "
    "#escalate, #on-behalf)"
)


def only(text: str, categories: tuple[str, ...] = ()) -> Command:
    """The single command of ``text``, which must parse without errors."""
    block = parse_commands(text, categories)
    assert block.errors == ()
    assert len(block.commands) == 1
    return block.commands[0]


def error(text: str, categories: tuple[str, ...] = ()) -> str:
    """The single error of ``text``."""
    block = parse_commands(text, categories)
    assert len(block.errors) == 1, block
    return block.errors[0]


# --- Each command and alias -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("#status open", "open"),
        ("#status waiting", "waiting_on_customer"),
        ("#status waiting_on_customer", "waiting_on_customer"),
        ("#status resolved", "resolved"),
        ("#status closed", "closed"),
        ("#resolve", "resolved"),
        ("#close", "closed"),
        ("#reopen", "open"),
    ],
)
def test_status_and_its_shorthands(text: str, value: str) -> None:
    assert only(text) == Command("status", value, text)


def test_pending_is_not_a_status() -> None:
    assert error("#status pending") == (
        "#status pending: status must be one of open, waiting, resolved, closed"
    )


@pytest.mark.parametrize("value", ["low", "medium", "high", "urgent"])
def test_priority(value: str) -> None:
    assert only(f"#priority {value}") == Command("priority", value, f"#priority {value}")


def test_priority_outside_the_list() -> None:
    assert error("#priority asap") == (
        "#priority asap: priority must be one of low, medium, high, urgent"
    )


def test_category_without_a_list_is_taken_as_written_lower_cased() -> None:
    assert only("#category Feature Request") == Command(
        "category", "feature request", "#category Feature Request"
    )


def test_category_with_a_list_is_checked_case_insensitively() -> None:
    configured = ("Billing", "Feature Request")
    assert only("#category BILLING", configured).value == "billing"
    assert only("#category feature   request", configured).value == "feature request"
    assert only("#category Feature-Request", configured).value == "feature request"


def test_unknown_category_lists_the_known_ones() -> None:
    assert error("#category refunds", ("Feature Request", "billing")) == (
        "#category refunds: unknown category (known: billing, Feature Request)"
    )


def test_category_needs_a_name() -> None:
    assert error("#category") == "#category: category needs a name"
    assert error("#category:  .", ("billing",)) == "#category:  .: category needs a name"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("#assign Minh.Tran@Support.Example.com", "minh.tran@support.example.com"),
        ("#assign <reza@example.ir>", "reza@example.ir"),
        ("#assign me", "me"),
        ("#assign ME", "me"),
    ],
)
def test_assign(text: str, value: str) -> None:
    assert only(text) == Command("assign", value, text)


@pytest.mark.parametrize(
    "text", ["#assign bob", "#assign bob@", "#assign @example.com", "#assign bob@localhost"]
)
def test_assign_needs_an_address_or_me(text: str) -> None:
    assert error(text) == f'{text}: assign takes an email address or "me"'


def test_assign_needs_a_value() -> None:
    assert error("#assign") == '#assign: assign takes an email address or "me"'


def test_an_address_with_a_space_is_not_an_address() -> None:
    assert error("#assign bob smith@example.com") == (
        '#assign bob smith@example.com: assign takes an email address or "me"'
    )


@pytest.mark.parametrize("name", ["on-behalf", "onbehalf", "on_behalf", "On-Behalf"])
def test_on_behalf_and_its_spellings(name: str) -> None:
    text = f"#{name} Lan.Nguyen@Gmail.com"
    assert only(text) == Command("on-behalf", "lan.nguyen@gmail.com", text)


def test_on_behalf_needs_an_address() -> None:
    assert error("#on-behalf Lan") == "#on-behalf Lan: on-behalf takes an email address"
    assert error("#on-behalf") == "#on-behalf: on-behalf takes an email address"


def test_note_and_escalate() -> None:
    block = parse_commands("#note\n#escalate\n\nCustomer is on the phone again.")
    assert block == CommandBlock(
        (Command("note", "", "#note"), Command("escalate", "", "#escalate")),
        "Customer is on the phone again.",
        (),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#escalate now", "#escalate now: escalate takes no value"),
        ("#close ticket", "#close ticket: close takes no value"),
        ("#resolve soon", "#resolve soon: resolve takes no value"),
    ],
)
def test_commands_without_a_value_refuse_one(text: str, message: str) -> None:
    assert error(text) == message


def test_text_after_note_is_the_first_body_line_as_written() -> None:
    block = parse_commands("#priority high #note: called her,  #billing  knows \nand more\n")
    assert block.commands == (
        Command("priority", "high", "#priority high"),
        Command("note", "", "#note:"),
    )
    assert block.body == "called her,  #billing  knows \nand more"
    assert block.errors == ()


def test_text_after_note_ends_the_block() -> None:
    block = parse_commands("#note ghi chú nội bộ\n#status resolved")
    assert block.commands == (Command("note", "", "#note"),)
    assert block.body == "ghi chú nội bộ\n#status resolved"


def test_a_period_after_note_is_not_text() -> None:
    block = parse_commands("#note.\nbody")
    assert block.commands == (Command("note", "", "#note."),)
    assert block.body == "body"


# --- Spelling -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["#STATUS RESOLVED", "#Status Resolved", "#sTaTuS rEsOlVeD", "#RESOLVE"]
)
def test_names_and_values_are_case_insensitive(text: str) -> None:
    assert only(text) == Command("status", "resolved", text)


@pytest.mark.parametrize(
    "text", ["#priority: high", "#priority high.", "#priority:high", "#priority : high ."]
)
def test_a_colon_after_the_command_and_a_period_after_the_value(text: str) -> None:
    assert only(text).value == "high"


def test_full_width_sign_letters_and_space() -> None:
    text = "＃ｐｒｉｏｒｉｔｙ　ｈｉｇｈ"
    assert parse_commands(f"{text}\nbody") == CommandBlock(
        (Command("priority", "high", text),), "body", ()
    )


def test_leading_spaces_no_break_spaces_and_bidi_marks() -> None:
    text = f"\t {NBSP}{RLM}{LRM}{RLE}#status resolved{PDF}\n{NBSP}{RLM}\n  #assign me\nok"
    block = parse_commands(text)
    assert block.commands == (
        Command("status", "resolved", "#status resolved"),
        Command("assign", "me", "#assign me"),
    )
    assert block.body == "ok"


def test_bidi_marks_inside_the_command_line() -> None:
    text = f"{RLM}#{RLM}priority{RLM} {RLM}high{RLM}"
    assert only(text) == Command("priority", "high", f"#{RLM}priority{RLM} {RLM}high")


@pytest.mark.parametrize(
    ("word", "value"),
    [("thấp", "low"), ("trung bình", "medium"), ("cao", "high"), ("khẩn cấp", "urgent")],
)
def test_vietnamese_priorities(word: str, value: str) -> None:
    assert only(f"#priority {word}").value == value
    assert only(f"#priority {word.upper()}").value == value
    # Typed as base letters plus combining marks, as some Vietnamese keyboards do.
    assert only(f"#priority {unicodedata.normalize('NFD', word)}").value == value


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("mở", "open"),
        ("chờ", "waiting_on_customer"),
        ("đã giải quyết", "resolved"),
        ("Đóng", "closed"),
    ],
)
def test_vietnamese_statuses(word: str, value: str) -> None:
    assert only(f"#status {word}").value == value


@pytest.mark.parametrize(
    ("word", "value"),
    [("پایین", "low"), ("متوسط", "medium"), ("بالا", "high"), ("فوری", "urgent")],
)
def test_persian_priorities(word: str, value: str) -> None:
    assert only(f"{RLM}#priority {RLM}{word}{RLM}").value == value


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("باز", "open"),
        ("در انتظار", "waiting_on_customer"),
        ("حل شده", "resolved"),
        (f"حل{ZWNJ}شده", "resolved"),
        ("بسته", "closed"),
    ],
)
def test_persian_statuses(word: str, value: str) -> None:
    assert only(f"#status {word}").value == value


def test_arabic_yeh_for_persian_yeh() -> None:
    assert only("#priority فوري").value == "urgent"  # U+064A, not U+06CC


def test_persian_digits_in_values() -> None:
    assert only("#assign ali۱۲@example.com").value == "ali12@example.com"
    assert only("#category سطح ۲").value == "سطح 2"
    assert error("#priority ۳") == "#priority ۳: priority must be one of low, medium, high, urgent"


def test_a_command_in_persian_is_an_unknown_command() -> None:
    assert error("#وضعیت باز") == f"#وضعیت باز: unknown command {KNOWN}"


# --- Where commands are -----------------------------------------------------------


def test_commands_only_at_the_top() -> None:
    text = "Hi Lan,\n#status resolved\nThanks"
    assert parse_commands(text) == CommandBlock((), text, ())


def test_a_ticket_number_is_not_a_command() -> None:
    text = "#10023 is still broken\n#status resolved"
    assert parse_commands(text) == CommandBlock((), text, ())


@pytest.mark.parametrize(
    "line", ["#１００２３ again", "#۱۰۰۲۳ again", "# Heading", "##status open"]
)
def test_other_lines_starting_with_a_sign_are_not_commands(line: str) -> None:
    assert parse_commands(f"{line}\nbody") == CommandBlock((), f"{line}\nbody", ())


def test_lines_after_the_block_are_body_even_with_a_sign() -> None:
    block = parse_commands("#status resolved\nDone.\n#priority low\n  #assign me")
    assert block.commands == (Command("status", "resolved", "#status resolved"),)
    assert block.body == "Done.\n#priority low\n  #assign me"


def test_several_commands_on_one_line() -> None:
    block = parse_commands("#status resolved #priority low #category feature request #assign me")
    assert block.commands == (
        Command("status", "resolved", "#status resolved"),
        Command("priority", "low", "#priority low"),
        Command("category", "feature request", "#category feature request"),
        Command("assign", "me", "#assign me"),
    )
    assert block.body == ""


def test_a_sign_inside_a_value_does_not_split_it() -> None:
    assert only("#category c# questions").value == "c# questions"


def test_blank_lines_before_between_and_after_commands() -> None:
    text = "\n \n#status resolved\n\n\n#priority low\n\n\nHello,\n\n  indented line  \n\n"
    block = parse_commands(text)
    assert [c.name for c in block.commands] == ["status", "priority"]
    assert block.body == "Hello,\n\n  indented line  "


def test_no_commands_keeps_the_text_without_blank_edges() -> None:
    assert parse_commands("\n\nCảm ơn anh.\n\n") == CommandBlock((), "Cảm ơn anh.", ())


@pytest.mark.parametrize("text", ["", "\n\n", f" {NBSP}{RLM}\n\t"])
def test_nothing_at_all(text: str) -> None:
    assert parse_commands(text) == CommandBlock((), "", ())


# --- Errors ---------------------------------------------------------------------------


def test_unknown_command_and_the_rest_of_the_block_still_parses() -> None:
    block = parse_commands("#priorty high #status resolved\n#assign bob\nThanks")
    assert block.commands == (Command("status", "resolved", "#status resolved"),)
    assert block.errors == (
        f"#priorty high: unknown command {KNOWN}",
        '#assign bob: assign takes an email address or "me"',
    )
    assert block.body == "Thanks"


def test_errors_quote_the_command_as_written() -> None:
    assert error("＃ｐｒｉｏｒｉｔｙ　ａｓａｐ") == (
        "＃ｐｒｉｏｒｉｔｙ　ａｓａｐ: priority must be one of low, medium, high, urgent"
    )


def test_two_values_for_one_command_conflict() -> None:
    block = parse_commands("#resolve\n#status open")
    assert block.commands == (Command("status", "resolved", "#resolve"),)
    assert block.errors == ("#status open: conflicts with #resolve",)


def test_a_repeated_command_counts_once() -> None:
    block = parse_commands("#resolve #status resolved\n#escalate\n#escalate")
    assert block.commands == (
        Command("status", "resolved", "#resolve"),
        Command("escalate", "", "#escalate"),
    )
    assert block.errors == ()


# --- Properties -------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "#",
        "＃",
        "﹟",
        "#status",
        "#note",
        "#priority",
        "#assign",
        "#on-behalf",
        "ｓｔａｔｕｓ",
        " ",
        "\t",
        NBSP,
        RLM,
        RLE,
        PDF,
        ZWNJ,
        ":",
        ".",
        "@",
        "me",
        "high",
        "khẩn cấp",
        "حل شده",
        "۱۲",
        "10023",
        "a@b.c",
        "\n",
        "\n\n",
    ]
)
COMMANDISH = st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=30).map("".join)


def check_body(text: str, block: CommandBlock) -> None:
    """Every body line is an input line, in order; the first may be the end of one."""
    if not block.body:
        return
    lines = text.split("\n")
    body = block.body.split("\n")
    candidates = [
        k
        for k in range(len(lines) - len(body) + 1)
        if lines[k].endswith(body[0]) and lines[k + 1 : k + len(body)] == body[1:]
    ]
    assert candidates, (text, block)
    if body[0] not in lines:  # only text after "#note" is cut from its line
        assert any(c.name == "note" for c in block.commands), (text, block)


@given(st.one_of(st.text(), COMMANDISH))
def test_never_raises_and_body_comes_from_the_input(text: str) -> None:
    block = parse_commands(text, ("billing",))
    check_body(text, block)
    assert all(isinstance(e, str) and e for e in block.errors)


@given(st.lists(st.text(st.characters(blacklist_characters="#＃﹟\n")), max_size=6))
def test_commands_on_top_leave_the_body_alone(lines: list[str]) -> None:
    body = "\n".join(lines)
    plain = parse_commands(body)
    assert plain.commands == () and plain.errors == ()
    block = parse_commands(f"#priority high\n\n#assign me\n{body}")
    assert block.body == plain.body
    assert [c.name for c in block.commands] == ["priority", "assign"]
