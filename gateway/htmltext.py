"""HTML mail bodies: sanitized for display, and rendered as readable text.

Used by parse (after intake, before classify and thread). Every HTML body is
sanitized with nh3 before anything can show it (DESIGN: Trust). When a
message has no text/plain body, the HTML is also rendered as text, because
the ticket, reply detection and notification excerpts all work on text; that
renderer is built on the standard library's html.parser so that it stays
small and licence-clean.

The output keeps the structure a reader needs: paragraphs and headings are
separated by a blank line, <br>, <div> and table rows end a line, list items
start with "- " (or "1. "), quoted blocks get "> " prefixes, links read
"text (url)" when the text does not already show the URL. Scripts, styles,
the document head and elements hidden with display:none are dropped, and
entities are decoded.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import nh3

_CLEAN_CONTENT_TAGS = {"script", "style", "iframe", "object", "embed", "applet", "head", "title"}
_HTML_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_HTML_ATTRIBUTES["*"] = {"dir", "lang", "title"}  # keep the direction of RTL (Persian) text
_URL_SCHEMES = set(nh3.ALLOWED_URL_SCHEMES) | {"cid"}
# html5ever (inside nh3) spends time quadratic in the nesting depth: 100,000
# nested <div>s (500 KB) take about 40 s. Deeper bodies are shown as text.
_MAX_NESTING = 2000

# What may stand inside <head>; anything else (or text) starts the body.
_HEAD_CONTENT = frozenset(
    {"base", "link", "meta", "noscript", "script", "style", "template", "title"}
)
# Elements whose content is never shown to a reader.
_SKIP = frozenset(
    {"script", "style", "head", "title", "template", "noscript", "object", "iframe", "svg"}
)
_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)
# Block elements separated by a blank line, and those that only end a line.
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "dl", "hr", "address", "figure"}
)
_LINE = frozenset(
    {
        "div",
        "tr",
        "li",
        "dt",
        "dd",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "center",
        "form",
        "fieldset",
        "caption",
        "details",
        "summary",
        "ul",
        "ol",
        "blockquote",
    }
)
_LINK_SCHEMES = ("http://", "https://", "ftp://", "mailto:")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_SPACES = re.compile(r"[ \t\n\r\f\xa0]+")
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)[^>]*?(/?)>")
# Start tags that close an open element of the same name (HTML's implied
# end tags), so that "<p>a<p>b" is not counted as nesting.
_SELF_CLOSING_SIBLINGS = frozenset({"p", "li", "td", "th", "tr", "dt", "dd", "option"})


class _TextRenderer(HTMLParser):
    """Collects the text of an HTML document, one event at a time."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._newlines = 2  # trailing newlines in out; 2 at the start: nothing to separate
        self._skip_tag = ""
        self._skip_depth = 0
        self._pre = 0
        self._quote = 0
        self._lists: list[list[int]] = []  # per open list: [next number] or [] for bullets
        self._link: tuple[str, int] | None = None
        self._head_child = ""  # a <title>, <style>... being skipped inside <head>

    # --- output primitives -------------------------------------------------

    def _emit(self, text: str) -> None:
        """Append visible text, prefixing quote markers at a line start."""
        if not text:
            return
        if self._newlines and self._quote and text.strip("\n"):
            self.out.append("> " * self._quote)
        self.out.append(text)
        stripped = text.rstrip("\n")
        trailing = len(text) - len(stripped)
        self._newlines = trailing if stripped else self._newlines + trailing

    def _break(self, count: int) -> None:
        """Make sure the output ends with at least ``count`` newlines."""
        if self._newlines < count:
            self.out.append("\n" * (count - self._newlines))
            self._newlines = count

    # --- parser events -----------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open an element: skip hidden ones, break lines for blocks."""
        if self._skip_depth and not self._ends_skip(tag):
            return
        style = dict(attrs).get("style") or ""
        if tag in _SKIP or (tag not in _VOID and _HIDDEN_STYLE.search(style)):
            self._skip_tag, self._skip_depth = tag, 1
            return
        self._open_block(tag, attrs)

    def _ends_skip(self, tag: str) -> bool:
        """Track a start tag met while skipping; True when it ends the skip.

        Mirrors HTML's implied end tags: "<body>" closes an unclosed <head>,
        and "<p>" closes a hidden <p> instead of nesting in it.
        """
        if self._skip_tag == "head" and not self._head_child:
            if tag not in _HEAD_CONTENT:
                self._skip_depth = 0  # HTML's implied </head>
            elif tag not in _VOID:
                self._head_child = tag
        elif tag == self._skip_tag:
            implied_end = tag in _SELF_CLOSING_SIBLINGS and self._skip_depth == 1
            self._skip_depth += -1 if implied_end else 1
        return self._skip_depth == 0

    def _open_block(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Render the start of a visible element."""
        if tag == "br":
            self._emit("\n")
        elif tag in _PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre += 1
        elif tag in _LINE:
            self._break(1)
        if tag == "blockquote":
            self._quote += 1
        elif tag in ("ul", "ol"):
            self._lists.append([1] if tag == "ol" else [])
        elif tag == "li":
            self._list_item()
        elif tag in ("td", "th") and not self._newlines:
            self._emit(" ")
        elif tag == "a" and self._link is None:
            href = (dict(attrs).get("href") or "").strip()
            self._link = (href, len(self.out))

    def _list_item(self) -> None:
        """Start a list item with its bullet or number, indented by depth."""
        indent = "  " * max(len(self._lists) - 1, 0)
        if self._lists and self._lists[-1]:
            number = self._lists[-1][0]
            self._lists[-1][0] += 1
            self._emit(f"{indent}{number}. ")
        else:
            self._emit(f"{indent}- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Treat <br/> like <br>; other self-closed tags open and close."""
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        """Close an element: end skipping, close blocks, finish links."""
        if self._skip_depth:
            if tag == self._head_child:
                self._head_child = ""
            elif tag == self._skip_tag:
                self._skip_depth -= 1
            return
        if tag == "a":
            self._close_link()
        elif tag == "blockquote":
            self._quote = max(self._quote - 1, 0)
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
        if tag in _PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre = max(self._pre - 1, 0)
        elif tag in _LINE:
            self._break(1)

    def _close_link(self) -> None:
        """Append " (url)" after a link whose text does not show the URL."""
        if self._link is None:
            return
        href, start = self._link
        self._link = None
        if not href.lower().startswith(_LINK_SCHEMES):
            return  # anchors, javascript:, relative links mean nothing in a ticket
        label = "".join(self.out[start:])
        if _comparable_url(label) != _comparable_url(href):
            self._emit(f" ({href})" if label.strip() else href)

    def handle_data(self, data: str) -> None:
        """Emit text; outside <pre> white space collapses as a browser would."""
        in_head = self._skip_tag == "head" and self._skip_depth and not self._head_child
        if in_head and data.strip():
            self._skip_depth = 0  # text in <head> starts the body, as in browsers
        if self._skip_depth or not data:
            return
        if self._pre:
            self._emit(data.replace("\r\n", "\n"))
            return
        text = _SPACES.sub(" ", data)
        if self._newlines:
            text = text.lstrip(" ")
        self._emit(text)


def _comparable_url(text: str) -> str:
    """Normalise a URL or link text so "www.x.org" and "http://www.x.org/" match."""
    text = text.strip().lower()
    for prefix in _LINK_SCHEMES:
        text = text.removeprefix(prefix)
    return text.rstrip("/")


def html_to_text(markup: str) -> str:
    """Convert an HTML body to readable plain text (see the module docstring)."""
    renderer = _TextRenderer()
    try:
        renderer.feed(markup)
        renderer.close()
    except (AssertionError, ValueError, IndexError) as exc:
        # html.parser raises AssertionError on a few malformed declarations
        # (for example "<![foo"); fall back to stripping tags.
        del exc
        return _tidy(html.unescape(re.sub(r"<[^>]*>", " ", markup)))
    return _tidy("".join(renderer.out))


def _tidy(text: str) -> str:
    """Trim line ends and collapse runs of blank lines to one."""
    lines = [line.rstrip() for line in text.replace("\xa0", " ").split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def max_nesting(markup: str) -> int:
    """Estimate how deeply the elements of ``markup`` nest.

    HTML tree builders (nh3's html5ever among them) spend time quadratic in
    the nesting depth, so a hostile body of 100,000 nested <div>s takes
    minutes to sanitize. This cheap, linear estimate lets the caller refuse
    such bodies first.
    """
    stack: list[str] = []
    deepest = 0
    for match in _TAG.finditer(markup):
        closing, name, self_closed = match.group(1), match.group(2).lower(), match.group(3)
        if closing:
            # Look only near the top: unmatched end tags are ignored, and a
            # bounded search keeps this linear on hostile input.
            for back in range(1, min(len(stack), 8) + 1):
                if stack[-back] == name:
                    del stack[-back:]
                    break
            continue
        if name in _VOID or self_closed:
            continue
        if name in _SELF_CLOSING_SIBLINGS and stack and stack[-1] == name:
            stack.pop()
        stack.append(name)
        deepest = max(deepest, len(stack))
    return deepest


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: an <img> may only point at a part of this message.

    A remote image is a tracking beacon (it tells the sender that, and when,
    an agent opened the ticket) and data: URIs have carried exploits, so
    only cid: references to attached parts survive.
    """
    if tag == "img" and attribute == "src":
        return value if value.strip().lower().startswith("cid:") else None
    return value


def sanitize_html(markup: str) -> str:
    """Sanitize an HTML body for display.

    nh3's defaults drop scripts, event handlers, forms, frames and styles;
    on top of that the contents of <head>, <title>, <iframe> and <object>
    go, images keep only cid: sources, and links get rel="noopener
    noreferrer".
    """
    if max_nesting(markup) > _MAX_NESTING:
        text = html_to_text(markup)
        return "<div>" + html.escape(text).replace("\n", "<br>\n") + "</div>"
    return str(
        nh3.clean(
            markup,
            clean_content_tags=_CLEAN_CONTENT_TAGS,
            attributes=_HTML_ATTRIBUTES,
            attribute_filter=_keep_attribute,
            url_schemes=_URL_SCHEMES,
            link_rel="noopener noreferrer",
        )
    )
