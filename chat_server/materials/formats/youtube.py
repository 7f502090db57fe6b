"""YouTube: a video's transcript (youtube-transcript-api), one segment per line with its times."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlparse

from chat_server.materials.formats.base import Extracted, MaterialFailed, Segment, TransientError
from chat_server.settings import Settings

NO_TRANSCRIPT = ("This video has no transcript (captions), so there is nothing to learn from "
                 "yet. Try a video with subtitles.")
VIDEO_UNAVAILABLE = "This video is unavailable (private, removed or a wrong link)."
AGE_RESTRICTED = "This video is age-restricted, so its transcript can't be read."

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
