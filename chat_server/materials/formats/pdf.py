"""Text extraction: PDF page by page (pypdf), YouTube transcripts with timestamps, plain text.

Everything here is blocking and runs in a worker thread. Failures a learner can act on
raise `MaterialFailed` with a message meant for them; failures that may pass on their own
(network, YouTube throttling) raise `TransientError` so the task retries with backoff.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from chat_server.settings import Settings

Progress = Callable[[int, int], None]  # (done, total)
Sink = Callable[["Segment"], None]  # each segment as soon as it is extracted


class MaterialFailed(Exception):
    """The material can't be ingested; `reason` is shown to the learner as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(Exception):
    """A fault that may pass: the task retries it with backoff."""


@dataclass(frozen=True)
class Segment:
    """A run of text with its place in the source: a PDF page or a transcript time span."""

    text: str
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None


@dataclass
class Extracted:
    segments: list[Segment] = field(default_factory=list)
    pages: int | None = None
    duration_s: float | None = None
    truncated: bool = False


NO_TEXT = "This PDF has no extractable text — is it a scan? Upload a PDF with selectable text."
ENCRYPTED = "This PDF is password-protected. Remove the password and upload it again."
CORRUPT = "This file is damaged or is not a valid PDF, so it could not be read."
NO_TRANSCRIPT = ("This video has no transcript (captions), so there is nothing to learn from "
                 "yet. Try a video with subtitles.")
VIDEO_UNAVAILABLE = "This video is unavailable (private, removed or a wrong link)."
AGE_RESTRICTED = "This video is age-restricted, so its transcript can't be read."


def _clean(page_text: str) -> str:
    # Keep blank lines (paragraph breaks), squeeze runs of spaces, join hyphenated line breaks.
    page_text = page_text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    page_text = re.sub(r"(\w)-\n(\w)", r"\1\2", page_text)
    page_text = re.sub(r"[ \t\f\v\u00a0]+", " ", page_text)
    page_text = re.sub(r" *\n *", "\n", page_text)
    return re.sub(r"\n{3,}", "\n\n", page_text).strip()


def extract_pdf(path: Path, settings: Settings, progress: Progress | None = None,
                sink: Sink | None = None) -> Extracted:
    """The PDF's pages; `sink` gets each page's text as soon as it is read (so chunking and
    embedding can start before the last page)."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            try:
                # Many "protected" PDFs only restrict printing: they open with an empty password.
                if not reader.decrypt(""):
                    raise MaterialFailed(ENCRYPTED)
            except MaterialFailed:
                raise
            except Exception as exc:
                raise MaterialFailed(ENCRYPTED) from exc
        total_pages = len(reader.pages)
    except MaterialFailed:
        raise
    except FileNotDecryptedError as exc:
        raise MaterialFailed(ENCRYPTED) from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, OSError, AssertionError) as exc:
        raise MaterialFailed(CORRUPT) from exc
    if total_pages == 0:
        raise MaterialFailed(CORRUPT)

    pages = min(total_pages, settings.max_pdf_pages)
    result = Extracted(pages=pages)
    result.truncated = total_pages > settings.max_pdf_pages
    chars = 0
    readable = 0
    for number in range(1, pages + 1):
        try:
            page_text = reader.pages[number - 1].extract_text() or ""
            readable += 1
        except FileNotDecryptedError as exc:
            raise MaterialFailed(ENCRYPTED) from exc
        except Exception:
            page_text = ""  # one broken page should not sink the rest of the document
        page_text = _clean(page_text)
        if page_text:
            room = settings.max_extracted_chars - chars
            if len(page_text) > room:
                page_text = page_text[:room]
                result.truncated = True
            chars += len(page_text)
            result.segments.append(Segment(page_text, page=number))
            if sink:
                sink(result.segments[-1])
        if progress:
            progress(number, pages)
        if chars >= settings.max_extracted_chars:
            result.truncated = True
            break
    if readable == 0:
        raise MaterialFailed(CORRUPT)
    if not any(s.text.strip() for s in result.segments):
        raise MaterialFailed(NO_TEXT)
    return result


def extract_text_file(path: Path, settings: Settings) -> Extracted:
    body = path.read_text(encoding="utf-8")
    body = body.replace("\r\n", "\n").replace("\r", "\n").strip()
    truncated = len(body) > settings.max_extracted_chars
    body = body[: settings.max_extracted_chars]
    if not body:
        raise MaterialFailed("This text is empty.")
    return Extracted(segments=[Segment(body)], truncated=truncated)


# --- YouTube ------------------------------------------------------------------------

_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


def parse_video_id(value: str) -> str:
    """A video id from a bare id or any common YouTube URL; ValueError otherwise."""
    value = value.strip()
    if _ID.match(value):
        return value
    candidate = value if "://" in value else "https://" + value
    url = urlparse(candidate)
    host = (url.hostname or "").lower().removeprefix("www.").removeprefix("m.")
    found: str | None = None
    if host == "youtu.be":
        found = url.path.strip("/").split("/")[0]
    elif host in ("youtube.com", "music.youtube.com", "youtube-nocookie.com"):
        if url.path == "/watch":
            found = (parse_qs(url.query).get("v") or [""])[0]
        else:
            parts = [p for p in url.path.split("/") if p]
            if len(parts) >= 2 and parts[0] in ("embed", "shorts", "live", "v", "e"):
                found = parts[1]
    if found and _ID.match(found):
        return found
    raise ValueError("Not a YouTube video link or id.")


def _http_client(settings: Settings) -> Any:
    """A requests session; with youtube_base_url, every youtube.com URL goes there instead."""
    import requests

    base = (settings.youtube_base_url or "").rstrip("/")

    class Session(requests.Session):
        def request(self, method: str | bytes, url: str | bytes, *args: Any,  # type: ignore[override]
                    **kwargs: Any) -> requests.Response:
            url = url.decode() if isinstance(url, bytes) else url
            method = method.decode() if isinstance(method, bytes) else method
            if base:
                for origin in ("https://www.youtube.com", "https://youtube.com",
                               "https://m.youtube.com", "http://www.youtube.com"):
                    if url.startswith(origin):
                        url = base + url[len(origin):]
                        break
            kwargs.setdefault("timeout", 30)
            return super().request(method, url, *args, **kwargs)

    return Session()


def extract_youtube(video_id: str, settings: Settings) -> Extracted:
    import requests
    import youtube_transcript_api as yta

    session = _http_client(settings)
    try:
        api = yta.YouTubeTranscriptApi(http_client=session)
        listing = api.list(video_id)
        try:
            transcript = listing.find_transcript(settings.youtube_languages)
        except yta.NoTranscriptFound:
            # No transcript in a preferred language: any transcript beats none.
            fallback = next(iter(listing), None)
            if fallback is None:
                raise MaterialFailed(NO_TRANSCRIPT) from None
            transcript = fallback
        fetched = transcript.fetch()
    except MaterialFailed:
        raise
    except (yta.TranscriptsDisabled, yta.NoTranscriptFound) as exc:
        raise MaterialFailed(NO_TRANSCRIPT) from exc
    except yta.AgeRestricted as exc:
        raise MaterialFailed(AGE_RESTRICTED) from exc
    except (yta.VideoUnavailable, yta.InvalidVideoId, yta.VideoUnplayable) as exc:
        raise MaterialFailed(VIDEO_UNAVAILABLE) from exc
    except (yta.IpBlocked, yta.RequestBlocked) as exc:
        raise TransientError("YouTube is refusing requests for now") from exc
    except yta.YouTubeRequestFailed as exc:
        raise TransientError(f"YouTube request failed: {exc.reason}") from exc
    except requests.RequestException as exc:
        raise TransientError(f"YouTube unreachable: {exc}") from exc
    except yta.CouldNotRetrieveTranscript as exc:
        raise MaterialFailed(NO_TRANSCRIPT) from exc
    finally:
        session.close()

    result = Extracted()
    chars = 0
    end = 0.0
    for snippet in fetched:
        line = re.sub(r"\s+", " ", snippet.text).strip()
        if not line:
            continue
        if chars + len(line) > settings.max_extracted_chars:
            result.truncated = True
            break
        chars += len(line) + 1
        stop = snippet.start + max(snippet.duration, 0.0)
        end = max(end, stop)
        result.segments.append(Segment(line, start_s=snippet.start, end_s=stop))
    if not result.segments:
        raise MaterialFailed(NO_TRANSCRIPT)
    result.duration_s = round(end, 3)
    return result
