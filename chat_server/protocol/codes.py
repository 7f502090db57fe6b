"""Every code /ws/v1 puts on the wire: close codes, `error` frame codes, `reply.error` codes
and `resume.failed` reasons.

docs/protocol.md lists exactly these (tests/test_protocol.py checks both ways). A code is added
here first; `TutorError` and `ProviderError` refuse a code that is not here.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Close(IntEnum):
    NORMAL = 1000
    UNSUPPORTED_DATA = 1003  # a binary frame
    INVALID_DATA = 1007  # a text frame that is not UTF-8 (sent by the WebSocket layer)
    TOO_BIG = 1009  # a frame over ws_max_frame_bytes (sent by the WebSocket layer)
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # graceful shutdown: reconnect (to another instance) and resume
    TRY_AGAIN_LATER = 1013  # the bus or the database is unavailable right now
    AUTH_FAILED = 4401  # no/invalid auth frame, bad token, auth timeout, credentials changed
    TOKEN_EXPIRED = 4403  # the socket's token expired without an auth.refresh
    SLOW_CONSUMER = 4408  # the send queue overflowed: reconnect and resume
    IDLE_TIMEOUT = 4409  # nothing received (not even a pong) for ws_idle_timeout_s
    FLOODING = 4429  # kept sending while rate limited


class ErrorCode(StrEnum):
    """`code` of an `error` frame (to the socket that sent the frame)."""

    # The hub: what a client frame is.
    BAD_JSON = "bad_json"  # not JSON
    BAD_FRAME = "bad_frame"  # not a frame: no object/type, too deep, NUL, a required field absent
    INVALID_REQUEST = "invalid_request"  # a field present but refused (type, length, format)
    UNKNOWN_TYPE = "unknown_type"
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"  # auth.refresh refused
    UNAVAILABLE = "unavailable"  # retryable: tutor absent/stopping, bus or database down
    INTERNAL = "internal"
    # The tutor's refusals of chat.send / chat.cancel.
    CONVERSATION_NOT_FOUND = "conversation_not_found"
    COURSE_NOT_FOUND = "course_not_found"  # not a course the user is enrolled in or owns
    REPLY_IN_PROGRESS = "reply_in_progress"
    QUOTA_EXCEEDED = "quota_exceeded"
    REPLY_NOT_FOUND = "reply_not_found"


class ReplyErrorCode(StrEnum):
    """`code` of a `reply.error` event: why a reply failed."""

    PROVIDER_OVERLOADED = "provider_overloaded"
    PROVIDER_UNREACHABLE = "provider_unreachable"
    PROVIDER_TIMEOUT = "provider_timeout"
    PROVIDER_REJECTED = "provider_rejected"
    PROVIDER_STREAM_CUT = "provider_stream_cut"
    COURSE_ACCESS_REVOKED = "course_access_revoked"  # unenrolled while the reply streamed
    INTERNAL = "internal"


class ResumeReason(StrEnum):
    """`reason` of a `resume.failed` frame."""

    HISTORY_TRIMMED = "history_trimmed"
    EPOCH_CHANGED = "epoch_changed"
    OFFSET_AHEAD = "offset_ahead"
