"""Widget load benchmark: on a page of another origin that embeds the widget with one script tag,
the time from the page's first script to `<tutorhub-chat>` defined, in Chromium with every
request delayed by an emulated round trip (DevTools network emulation), with an empty cache
(cold: every host site's first visit, as browsers partition their cache by site) and again
(warm). Interleaved, the same modules served two ways, and optionally the widget of another
revision:

- flat entry: widget.js as served, naming every module itself;
- nested entry: the same, the entry's side-effect imports removed (a module is fetched once the
  module importing it has arrived);
- one file (`--one-file REV`): chat_server/static/widget.js of REV, e.g. before the split.

    .venv/bin/python load_tests/bench_widget.py [--rtt-ms 100] [--rounds 8] [--one-file REV]

Prints a report; a run with the default --rtt-ms and --rounds writes load_tests/reports/widget.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse
from playwright.async_api import Browser, Page, async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_server.routes.static import (  # noqa: E402
    CORS,
    JAVASCRIPT,
    MODULE_CACHE,
    STATIC_DIR,
    WIDGET_CACHE,
    Widget,
)
from load_tests.report import Report  # noqa: E402
from tests.support.services import serve_app  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "widget.md"
CHROMIUM = "/usr/bin/chromium"
RTT_MS = 100
ROUNDS = 8
# A side-effect import of a sibling module: what the nested variant leaves out of the entry.
SIDE_EFFECT_IMPORT = re.compile(rb"^import '\./widget/[^']+';\n", re.M)


def widget_app(entry: bytes, modules: Mapping[str, bytes]) -> FastAPI:
    """An entry and its modules with the static route's types and caching (no revalidation:
    warm loads here fall within max-age)."""
    app = FastAPI()

    @app.get("/widget.js")
    async def entry_js() -> Response:
        return Response(entry, media_type=JAVASCRIPT, headers={"Cache-Control": WIDGET_CACHE, **CORS})

    @app.get("/widget/{version}/{name}")
    async def module_js(version: str, name: str) -> Response:
        return Response(modules[name], media_type=JAVASCRIPT,
                        headers={"Cache-Control": MODULE_CACHE, **CORS})

    return app


def host_page(widget_url: str) -> str:
    # No token and no stored login: the widget shows its form and opens no connection.
    return ('<!doctype html><meta charset="utf-8"><script>window.t0 = performance.now();</script>'
            f'<script type="module" src="{widget_url}/widget.js"></script>'
            '<script>customElements.whenDefined("tutorhub-chat")'
            '.then(() => { window.defined = performance.now(); });</script>'
            '<tutorhub-chat></tutorhub-chat>')


async def load(page: Page, url: str) -> float:
    await page.goto(url)
    await page.wait_for_function("window.defined !== undefined", timeout=30_000)
    return float(await page.evaluate("window.defined - window.t0"))


async def load_twice(browser: Browser, url: str, rtt_ms: int) -> tuple[float, float, int]:
    """(cold ms, warm ms, script requests of the cold load) in a fresh browser context."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": rtt_ms, "downloadThroughput": -1, "uploadThroughput": -1})
        scripts: list[str] = []
        page.on("request", lambda r: scripts.append(r.url) if r.resource_type == "script" else None)
        cold = await load(page, url)
        cold_requests = len(scripts)
        return cold, await load(page, url), cold_requests
    finally:
        await context.close()


async def run(args: argparse.Namespace, one_file: bytes | None) -> Report:
    widget = Widget.read(STATIC_DIR)
    modules = {name: asset.body for name, asset in widget.modules.items()}
    variants = {
        "flat entry": widget_app(widget.entry.body, modules),
        "nested entry": widget_app(SIDE_EFFECT_IMPORT.sub(b"", widget.entry.body), modules),
    }
    if one_file is not None:
        variants[f"one file ({args.one_file})"] = widget_app(one_file, {})
    results: dict[str, dict[str, list[float]]] = {name: {"cold": [], "warm": []} for name in variants}
    requests: dict[str, int] = {}
    async with AsyncExitStack() as stack:
        urls = {name: await stack.enter_async_context(serve_app(app))
                for name, app in variants.items()}
        host = FastAPI()
        pages = {name: f"/{i}" for i, name in enumerate(variants)}
        for name, path in pages.items():
            html = host_page(urls[name])
            host.add_api_route(path, lambda html=html: HTMLResponse(html))
        host_url = await stack.enter_async_context(serve_app(host))
        pw = await stack.enter_async_context(async_playwright())
        browser = await pw.chromium.launch(executable_path=CHROMIUM,
                                           args=["--no-sandbox", "--disable-gpu"])
        stack.push_async_callback(browser.close)
        for _ in range(args.rounds):
            for name in variants:  # interleaved: each round loads every variant once
                cold, warm, count = await load_twice(browser, host_url + pages[name], args.rtt_ms)
                results[name]["cold"].append(cold)
                results[name]["warm"].append(warm)
                requests[name] = count

    report = Report()
    report.say("# Widget load: one script tag on another origin → `<tutorhub-chat>` defined")
    report.say()
    report.say(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · Chromium "
               f"(`{CHROMIUM}`, HTTP/1.1 to uvicorn) · emulated latency {args.rtt_ms} ms per "
               f"request · {args.rounds} interleaved rounds · version {widget.version}")
    report.say()
    report.say("| variant | script requests | cold median ms | cold min–max | "
               "warm median ms | warm min–max |")
    report.say("|---|---|---|---|---|---|")
    for name, phases in results.items():
        cells = [f"{statistics.median(ms):.0f} | {min(ms):.0f}–{max(ms):.0f}"
                 for ms in (phases["cold"], phases["warm"])]
        report.say(f"| {name} | {requests[name]} | {cells[0]} | {cells[1]} |")
    report.say()
    report.say("Cold: a new browser context (empty cache). Warm: the same page again (the entry "
               "within its max-age, modules immutable). Time runs from the host page's first "
               "script to `customElements.whenDefined('tutorhub-chat')`; the element is upgraded "
               "(login form built) by then.")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=int, default=RTT_MS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--one-file", metavar="REV", help="also the one-file widget.js of REV")
    args = parser.parse_args()
    one_file = None
    if args.one_file:
        one_file = subprocess.run(
            ["git", "show", f"{args.one_file}:chat_server/static/widget.js"],
            cwd=ROOT, check=True, capture_output=True).stdout
    report = asyncio.run(run(args, one_file))
    if args.rtt_ms == RTT_MS and args.rounds == ROUNDS:
        REPORT.write_text(report.text())
        print(f"written to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
