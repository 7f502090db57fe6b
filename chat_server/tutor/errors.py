"""The tutor's refusals and provider faults, each with a stable code for the wire.

`TutorError` is what `Tutor.send`/`Tutor.cancel` raise; the hub turns it into an
`error` frame for the socket that asked. `ProviderError` never leaves the tutor: a
reply that cannot be produced ends with `reply.error {code, message}` on the bus.
"""

from __future__ import annotations

from typing import Any

from chat_server.protocol.codes import ErrorCode, ReplyErrorCode


class TutorError(Exception):
    """A refused client frame: stable `code` (one of codes.ErrorCode: another is a ValueError
    at once), human `message`, `extra` fields for the frame."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.extra = extra

    def frame(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message, **self.extra}


class ProviderError(Exception):
    """A provider failed (`code`: one of codes.ReplyErrorCode). `retryable` faults are retried
    before the first token only."""

    def __init__(self, code: str, message: str, *, retryable: bool = False,
                 retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = ReplyErrorCode(code)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
