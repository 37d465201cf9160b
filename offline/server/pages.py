"""Pages: what the server sends to browsers, `/<repo>/blob/<rev>/<path>`.

A card page (`.../blob/<rev>/README.md`) is Markdown rendered with raw HTML off and only
http(s), mailto and relative links kept, under a Content-Security-Policy that runs no script.
Any other committed file (here and from `/resolve/`) is served inert: `nosniff`,
`Content-Security-Policy: sandbox`, and `Content-Disposition: attachment` for types a browser
would run (HTML, SVG, XML, JS).
"""
from __future__ import annotations

import html
import mimetypes
import re
from pathlib import PurePosixPath
from urllib.parse import quote, unquote

from markdown_it import MarkdownIt
from starlette.responses import Response

from offline.server.calls import Call, Repo
from offline.server.metadata import split_card

SAFE_SCHEMES = ("http", "https", "mailto")
# Types a browser executes or renders as a document: never shown inline.
ACTIVE_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml",
                "text/javascript", "application/javascript", "application/x-shockwave-flash")
# Shown inline (a card's plots); everything else is text or an attachment.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "text/plain", "application/json")
CARD_PAGE_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
USER_FILE_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):", re.I)


def safe_link(url: str) -> bool:
    """http(s), mailto or relative; anything else (javascript:, data:, vbscript:, file:) is dropped."""
    # decoded and without ASCII controls or spaces (browsers skip those inside a scheme), so
    # `java&#9;script:` or `java%09script:` count as what they spell
    compact = re.sub(r"[\x00-\x20]", "", unquote(html.unescape(url)))
    match = _SCHEME.match(compact)
    return match is None or match.group(1).lower() in SAFE_SCHEMES


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    md.validateLink = safe_link  # a refused link stays as plain text
    return md


_MD = _markdown()


def blob(call: Call, repo: Repo, location: list[str]) -> Response:
    """A page for people: Markdown (model cards) rendered as HTML, other files as they are.

    Relative links in a card (its plots) resolve to sibling blob URLs, so images show.
    """
    resolved, path, entry = call.file_at(repo, location)
    if path != "README.md":  # a gated repo's card is public, as on the Hub; its files are not
        call.downloadable(repo.type, repo.id)
    call.check_intact(entry, repo, path)
    data = call.store.blob_path(entry["sha256"]).read_bytes()
    if not path.endswith(".md"):
        return Response(data, 200, {"X-Repo-Commit": resolved.commit_id, **user_file_headers(path)},
                        user_file_type(path))
    page = card_page(f"{repo.id} @ {resolved.commit_id[:10]} : {path}", data)
    return Response(page, 200, {"X-Repo-Commit": resolved.commit_id, **card_page_headers()}, "text/html; charset=utf-8")


def card_page(title: str, card: bytes) -> bytes:
    """A card as an HTML page: its metadata shown as code, its Markdown rendered without raw HTML."""
    block, body = split_card(card.decode("utf-8", errors="replace"))
    head = f"<pre>{html.escape(block)}</pre>" if block else ""
    title = html.escape(title)
    page = f"<!doctype html><meta charset=utf-8><title>{title}</title><h3>{title}</h3>{head}{_MD.render(body)}"
    return page.encode()


def card_page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CARD_PAGE_POLICY, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"}


def user_file_type(path: str) -> str:
    """The Content-Type a committed file is shown with in a browser (active types become text)."""
    kind = mimetypes.guess_type(path)[0]
    if kind in INLINE_TYPES:
        return kind if not kind.startswith("text/") else f"{kind}; charset=utf-8"
    return "text/plain; charset=utf-8" if kind is None or kind.startswith("text/") or kind in ACTIVE_TYPES \
        else "application/octet-stream"


def user_file_headers(path: str) -> dict[str, str]:
    """Headers that keep a committed file from running as a page on this origin."""
    kind = mimetypes.guess_type(path)[0]
    disposition = "inline" if kind in INLINE_TYPES or (kind is None and not _looks_active(path)) else "attachment"
    return {"Content-Disposition": content_disposition(disposition, PurePosixPath(path).name),
            "X-Content-Type-Options": "nosniff", "Content-Security-Policy": USER_FILE_POLICY}


def _looks_active(path: str) -> bool:
    return path.lower().endswith((".html", ".htm", ".xhtml", ".svg", ".svgz", ".xml", ".js", ".mjs", ".swf"))


def content_disposition(kind: str, filename: str) -> str:
    """`kind; filename=...` safe for any name: an ASCII fallback and the RFC 5987 UTF-8 form."""
    fallback = re.sub(r'[^A-Za-z0-9._ -]', "_", filename) or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
