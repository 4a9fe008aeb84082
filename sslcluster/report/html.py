"""Building blocks of the offline HTML pages: every piece of outside text goes through :func:`esc` (element text
and attribute values) or :func:`url` (relative links), and the page's Content-Security-Policy forbids scripts,
so a cluster name such as ``<script>...`` or a file name with quotes shows as text and nothing runs.

Written by hand: the standard library's :func:`html.escape` and :func:`urllib.parse.quote` do the escaping; a
template engine would add a dependency for a few fixed pages.
"""

from __future__ import annotations

import html
import math
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence
from urllib.parse import quote

#: no script, no frame, no network: images from the page's own folder tree (file: URLs) and data: URLs only.
CSP = ("default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:0 1.2em 3em;color:#1d2330;background:#fafbfc;line-height:1.4}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{border-bottom:2px solid #d8dee8;padding-bottom:.2em;margin-top:1.8em}
h3{margin:1.2em 0 .4em}nav a{margin-right:1em}.muted{color:#667085;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0;background:#fff}th,td{border:1px solid #d8dee8;padding:.3em .6em}
th{background:#eef2f7;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.better{color:#11753d;font-weight:600}td.worse{color:#b42318}
img.plot{max-width:100%;border:1px solid #d8dee8;background:#fff;margin:.3em 0}
.plots{display:flex;flex-wrap:wrap;gap:.8em;align-items:flex-start}.plots figure{margin:0;max-width:100%}
figcaption{font-size:.85em;color:#667085}
.cluster{background:#fff;border:1px solid #d8dee8;border-radius:6px;padding:.6em .8em;margin:.6em 0}
.cluster h4{margin:0 0 .2em;font-size:1.05em}.cluster p{margin:.2em 0}
.thumbs{display:flex;flex-wrap:wrap;gap:3px;margin-top:.4em}.thumbs img{width:64px;height:64px;
image-rendering:pixelated;border:1px solid #e4e7ec}.more{align-self:center;color:#667085;margin-left:.4em}
pre{background:#fff;border:1px solid #d8dee8;padding:.8em;overflow:auto;font-size:.85em}
dt{font-weight:600;margin-top:.5em}dd{margin-left:1.2em}details{margin:.4em 0}summary{cursor:pointer}
"""


def printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (Python's surrogate escapes) shown as ``\\xe9``: the page is
    UTF-8 and must be writable whatever the disk holds."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def esc(value: Any) -> str:
    """Text for element content or a double-quoted attribute value (``& < > " '`` escaped)."""
    return html.escape(printable("" if value is None else str(value)), quote=True)


def url(relative: str | Path) -> str:
    """A relative link (``a/b c.png`` -> ``a/b%20c.png``), escaped for an attribute; never absolute."""
    text = relative if isinstance(relative, str) else Path(relative).as_posix()
    if PurePosixPath(text).is_absolute() or ":" in text.split("/")[0]:
        raise ValueError(f"a page links relative paths only, got {relative}")
    return esc(quote(printable(text), safe="/"))


def fmt(v: Any, digits: int = 4) -> str:
    """A table cell's text: floats to ``digits`` places, integers as they are, None as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}f}"
    return str(v)


def table(header: Sequence[str], rows: Iterable[Sequence[str]], raw_header: bool = False) -> str:
    """An HTML table; ``rows`` are cells that are already HTML (``<td>...</td>``) or plain text (escaped here)."""
    head = "".join(f"<th>{h if raw_header else esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [c if c.startswith("<td") else f"<td>{esc(c)}</td>" for c in row]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, body: str) -> str:
    """The whole document: UTF-8, the CSP above, inline style, no script."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(CSP)}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")
