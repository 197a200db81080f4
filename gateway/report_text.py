"""The report as text for a terminal: the same figures as ``--json``, readable.

Durations are business time, written as people say them ("5 h 20 min");
rates as percentages; a figure with nothing to measure is "-".
"""

from __future__ import annotations

from typing import Any

from gateway.notify import duration_text


def render(figures: dict[str, Any]) -> str:
    """The report ``gateway.report.build`` made, as aligned text blocks."""
    period = figures["period"]
    lines = [
        "Report for "
        + (period["mailbox"] or "all mailboxes")
        + f", {period['since'] or 'the beginning'} to {period['until'] or 'now'}",
        "",
        *_block("All tickets", figures["totals"]),
        "",
        "SLA attainment (within target / decided)",
        _row(["PRIORITY", "RESPONSES", "RESOLUTION"]),
    ]
    for priority, row in figures["priorities"].items():
        lines.append(_row([priority, _attained(row["responses"]), _attained(row["resolution"])]))
    for mailbox, row in figures["mailboxes"].items():
        lines += ["", *_block(f"Mailbox {mailbox}", row)]
    if figures["agents"]:
        lines += ["", "Agents", _row(["AGENT", "RESPONSES", "FIRST RESP.", "LATE", "CSAT"])]
        for agent, row in figures["agents"].items():
            lines.append(
                _row(
                    [
                        agent,
                        str(row["responses"]),
                        _duration(row["first_response"]["median_seconds"]),
                        _percent(row["late_response_rate"]),
                        _csat(row["csat"]),
                    ]
                )
            )
    return "\n".join(lines)


def time_left(seconds: float | None) -> str:
    """Business time left to respond: ``2 h 10 min``, ``late 1 h``, or ``-``."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "late " + duration_text(-seconds)
    return duration_text(seconds)


def _block(title: str, row: dict[str, Any]) -> list[str]:
    first, resolution = row["first_response"], row["resolution"]
    return [
        title,
        f"  opened {row['opened']}, resolved {row['resolved']}",
        f"  first response: median {_duration(first['median_seconds'])}, "
        f"90th percentile {_duration(first['p90_seconds'])} ({first['count']} tickets)",
        f"  resolution:     median {_duration(resolution['median_seconds'])}, "
        f"90th percentile {_duration(resolution['p90_seconds'])} ({resolution['count']} tickets)",
        f"  late responses: {_percent(row['late_response_rate'])} of {row['responses']}",
        f"  satisfaction:   {_csat(row['csat'])}",
    ]


def _attained(figure: dict[str, Any]) -> str:
    decided = figure["within_target"] + figure["missed"]
    if not decided:
        return "-"
    return f"{_percent(figure['rate'])} ({figure['within_target']}/{decided})"


def _csat(figure: dict[str, Any]) -> str:
    if not figure["rated"]:
        return "-"
    return f"{_percent(figure['rate'])} good ({figure['good']}/{figure['rated']})"


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else duration_text(seconds)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def _row(cells: list[str]) -> str:
    return "  " + "".join(cell.ljust(24) for cell in cells).rstrip()
