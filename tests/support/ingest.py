"""Test material for ingestion: real PDFs (fpdf2 + DejaVu for Cyrillic), encrypted and corrupt
ones, and a loopback server that speaks what youtube-transcript-api requests."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def make_pdf(pages: list[str]) -> bytes:
    """A text PDF with one page per string (Cyrillic works: DejaVu Sans is embedded)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
    pdf.set_font("DejaVu", size=10)
    for body in pages:
        pdf.add_page()
        pdf.multi_cell(0, 5, body)
    return bytes(pdf.output())


def make_image_only_pdf(pages: int = 2) -> bytes:
    """Pages with drawings but no text at all: what a scan looks like to pypdf."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    for i in range(pages):
        pdf.add_page()
        pdf.set_fill_color(30 * i, 100, 200)
        pdf.rect(20, 20, 150, 200, style="F")
    return bytes(pdf.output())


def encrypt_pdf(data: bytes, password: str = "s3cret-pass") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def corrupt_pdf() -> bytes:
    """Starts like a PDF (passes the magic check) but is garbage after the header."""
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 40 + b"\nnot really a pdf\n"


@dataclass
class Video:
    snippets: list[tuple[float, float, str]]  # (start, duration, text)
    language: str = "en"
    captions: bool = True


@dataclass
class YouTubeServer:
    """Loopback stand-in for youtube.com: the watch page, the innertube player API, timedtext."""

    videos: dict[str, Video] = field(default_factory=dict)
    fail_first: int = 0  # answer this many requests with 503 first (a transient fault)
    requests: list[str] = field(default_factory=list)
    base_url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _fault(self) -> bool:
                server.requests.append(f"{self.command} {self.path}")
                if server.fail_first > 0:
                    server.fail_first -= 1
                    self._send(503, b"unavailable", "text/plain")
                    return True
                return False

            def do_GET(self) -> None:
                if self._fault():
                    return
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/watch":
                    html = ('<html><script>ytcfg.set({"INNERTUBE_API_KEY": "loopback-key"});'
                            '</script></html>')
                    self._send(200, html.encode(), "text/html; charset=utf-8")
                elif url.path == "/api/timedtext":
                    video = server.videos.get(query.get("v", [""])[0])
                    if video is None:
                        self._send(404, b"", "text/plain")
                        return
                    lines = "".join(
                        f'<text start="{s}" dur="{d}">{escape(t)}</text>'
                        for s, d, t in video.snippets
                    )
                    xml = f'<?xml version="1.0" encoding="utf-8" ?><transcript>{lines}</transcript>'
                    self._send(200, xml.encode(), "text/xml; charset=utf-8")
                else:
                    self._send(404, b"", "text/plain")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self._fault():
                    return
                video_id = body.get("videoId", "")
                video = server.videos.get(video_id)
                if video is None:
                    data: dict[str, object] = {"playabilityStatus": {
                        "status": "ERROR", "reason": "This video is unavailable"}}
                elif not video.captions:
                    data = {"playabilityStatus": {"status": "OK"}}
                else:
                    track = {
                        # The real API hands out youtube.com URLs; the client rewrites them.
                        "baseUrl": f"https://www.youtube.com/api/timedtext?v={video_id}"
                                   f"&lang={video.language}",
                        "name": {"runs": [{"text": video.language}]},
                        "languageCode": video.language,
                        "isTranslatable": False,
                    }
                    data = {"playabilityStatus": {"status": "OK"}, "captions": {
                        "playerCaptionsTracklistRenderer": {
                            "captionTracks": [track], "translationLanguages": []}}}
                self._send(200, json.dumps(data).encode(), "application/json")

        return Handler


@contextmanager
def youtube_server(videos: dict[str, Video], fail_first: int = 0) -> Iterator[YouTubeServer]:
    state = YouTubeServer(videos=videos, fail_first=fail_first)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
