"""The browser widget (`/widget.js` and its modules under `/widget/<version>/`) and the demo page
that hosts it (`/`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from chat_server.errors import error_body

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ENTRY = "widget.js"
MODULES = "widget"  # the entry's sibling modules: STATIC_DIR / MODULES / *.js
# Where the entry's imports name the modules' version (see Widget.read).
VERSION_MARK = b"__VERSION__"

JAVASCRIPT = "text/javascript; charset=utf-8"
# Host pages on other origins load the widget as module scripts, which requires CORS on every
# module. No credentials are involved (the widget sends bearer tokens), so "*" is safe.
CORS = {"Access-Control-Allow-Origin": "*"}
# The entry revalidates after five minutes: an upgraded server reaches embedding pages quickly,
# while the ETag keeps every revalidation a bodiless 304.
WIDGET_CACHE = "public, max-age=300, must-revalidate"
# A module's URL names the version of all modules, so its body never changes under it.
MODULE_CACHE = "public, max-age=31536000, immutable"
# The demo page is tiny and names the widget; always revalidate it.
PAGE_CACHE = "no-cache"
# The demo page runs only our modules; the widget talks to its own origin (REST + WebSocket).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'; object-src 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Asset:
        return cls(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


@dataclass(frozen=True)
class Widget:
    """The entry module and the modules it imports, under one version."""

    version: str
    entry: Asset
    modules: Mapping[str, Asset]

    @classmethod
    def read(cls, static_dir: Path) -> Widget:
        """Read the widget; the entry's version marks become a hash of every module."""
        modules = {path.name: Asset.of(path.read_bytes())
                   for path in sorted((static_dir / MODULES).glob("*.js"))}
        listing = "".join(f"{name} {asset.etag}\n" for name, asset in modules.items())
        version = hashlib.sha256(listing.encode()).hexdigest()[:16]
        entry = (static_dir / ENTRY).read_bytes()
        if VERSION_MARK not in entry:
            raise RuntimeError(f"{ENTRY} imports no versioned module (no {VERSION_MARK.decode()})")
        return cls(version, Asset.of(entry.replace(VERSION_MARK, version.encode())), modules)


@cache
def _widget() -> Widget:
    # Read once per process: the files ship inside the package and never change under it.
    return Widget.read(STATIC_DIR)


@cache
def _asset(name: str) -> Asset:
    return Asset.of((STATIC_DIR / name).read_bytes())


def _serve(request: Request, asset: Asset, media_type: str, headers: dict[str, str]) -> Response:
    headers = {**headers, "ETag": asset.etag, "X-Content-Type-Options": "nosniff"}
    match = request.headers.get("if-none-match", "")
    if asset.etag in {tag.strip() for tag in match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=media_type, headers=headers)


@router.get("/widget.js")
async def widget_js(request: Request) -> Response:
    return _serve(request, _widget().entry, JAVASCRIPT, {"Cache-Control": WIDGET_CACHE, **CORS})


@router.get("/widget/{version}/{name}")
async def widget_module(request: Request, version: str, name: str) -> Response:
    widget = _widget()
    asset = widget.modules.get(name) if version == widget.version else None
    if asset is None:
        # Another version is another deploy's: serving today's module under its URL would mix
        # versions in the browser's cache for a year.
        return JSONResponse(
            error_body("not_found", "No such widget module: reload the page for the current one."),
            status_code=404, headers={"Cache-Control": "no-store", **CORS},
        )
    return _serve(request, asset, JAVASCRIPT, {"Cache-Control": MODULE_CACHE, **CORS})


def _page(request: Request, name: str) -> Response:
    return _serve(
        request, _asset(name), "text/html; charset=utf-8",
        {"Cache-Control": PAGE_CACHE, "Content-Security-Policy": PAGE_CSP,
         "Referrer-Policy": "no-referrer"},
    )


@router.get("/")
async def demo_page(request: Request) -> Response:
    return _page(request, "index.html")


@router.get("/instructor")
async def instructor_page(request: Request) -> Response:
    """Courses for instructors: <tutorhub-instructor> (static/widget/instructor.js)."""
    return _page(request, "instructor.html")
