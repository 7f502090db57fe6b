"""The browser widget (`/widget.js`) and the demo page that hosts it (`/`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Revalidate after five minutes: an upgraded server reaches embedding pages quickly,
# while the ETag keeps every revalidation a bodiless 304.
WIDGET_CACHE = "public, max-age=300, must-revalidate"
# The demo page is tiny and names the widget; always revalidate it.
PAGE_CACHE = "no-cache"
# The demo page runs only our module; the widget talks to its own origin (REST + WebSocket).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'; object-src 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    etag: str


@cache
def _asset(name: str) -> Asset:
    # Read once per process: the files ship inside the package and never change under it.
    body = (STATIC_DIR / name).read_bytes()
    return Asset(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _serve(request: Request, name: str, media_type: str, headers: dict[str, str]) -> Response:
    asset = _asset(name)
    headers = {**headers, "ETag": asset.etag, "X-Content-Type-Options": "nosniff"}
    match = request.headers.get("if-none-match", "")
    if asset.etag in {tag.strip() for tag in match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=media_type, headers=headers)


@router.get("/widget.js")
async def widget_js(request: Request) -> Response:
    return _serve(
        request, "widget.js", "text/javascript; charset=utf-8",
        # Host pages on other origins load it as a module script, which requires CORS.
        {"Cache-Control": WIDGET_CACHE, "Access-Control-Allow-Origin": "*"},
    )


@router.get("/")
async def demo_page(request: Request) -> Response:
    return _serve(
        request, "index.html", "text/html; charset=utf-8",
        {"Cache-Control": PAGE_CACHE, "Content-Security-Policy": PAGE_CSP,
         "Referrer-Policy": "no-referrer"},
    )
