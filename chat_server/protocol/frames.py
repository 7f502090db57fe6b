"""The frames of /ws/v1: what a client may send (validated once, here) and what the server sends.

Client frames are pydantic models in one discriminated union on "type". `parse` turns a text
frame into one of them or raises `FrameError` with one code per kind of fault:

- `bad_json`: not JSON;
- `bad_frame`: not a frame — not an object with a string "type", nested too deep, a NUL or a
  lone surrogate in a string, a field its type requires absent;
- `unknown_type`: a "type" the server does not know;
- `invalid_request`: a field present but refused — a wrong type, empty, too long, not a UUID,
  too many ids (the message names the field).

The hub validates every frame once and hands the tutor a `ChatSend` / `ChatCancel`: the tutor
checks no field again. Server frames are TypedDicts (no cost at run time) encoded by the codec.
docs/protocol.md documents every frame type named here (tests/test_protocol.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    TypedDict,
    TypeVar,
    get_args,
    get_type_hints,
)

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from chat_server.protocol.codec import FrameError, loads_client
from chat_server.protocol.codes import ErrorCode, ReplyErrorCode, ResumeReason

MAX_TEXT_CHARS = 16_000
MAX_CLIENT_ID_CHARS = 100
MAX_MATERIAL_IDS = 100



def _frame_id(value: Any) -> str | int | None:
    if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
        return value  # type: ignore[no-any-return]
    raise ValueError("must be a string or an integer")


# An id a client gives a frame to find its answer, echoed in the answer (and in an error about
# the frame). One validator, so that a refusal names the field alone (a union would add its
# members' names to the error's location).
FrameId = Annotated[str | int | None, PlainValidator(_frame_id)]


class _Frame(BaseModel):
    # Unknown fields are ignored (a newer client may send more); a frame is read, never kept.
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- client → server -------------------------------------------------------------------------

class Resume(_Frame):
    since: StrictInt
    epoch: StrictStr


class Auth(_Frame):
    type: Literal["auth"]
    token: StrictStr = Field(min_length=1)
    resume: Resume | None = None


class Ping(_Frame):
    type: Literal["ping"]
    id: FrameId = None
    t: Any = None  # anything, echoed in the pong (only when given)


class Pong(_Frame):
    type: Literal["pong"]


class AuthRefresh(_Frame):
    type: Literal["auth.refresh"]
    token: StrictStr = Field(min_length=1)
    id: FrameId = None


class ChatSend(_Frame):
    type: Literal["chat.send"] = "chat.send"
    id: StrictStr = Field(min_length=1, max_length=MAX_CLIENT_ID_CHARS)
    text: StrictStr
    conversation_id: uuid.UUID | None = None
    material_ids: list[uuid.UUID] | None = Field(None, max_length=MAX_MATERIAL_IDS)
    socratic: StrictBool | None = None
    study: StrictBool | None = None  # a quiz/study request (chat_server/study/coach.py)
    course_id: uuid.UUID | None = None  # a new conversation in this course (membership checked)

    @field_validator("text")
    @classmethod
    def _text(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must not be empty")
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"longer than {MAX_TEXT_CHARS} characters")
        return text.strip()


class ChatCancel(_Frame):
    type: Literal["chat.cancel"]
    reply_id: uuid.UUID
    id: FrameId = None


ClientFrame = Annotated[Auth | Ping | Pong | AuthRefresh | ChatSend | ChatCancel,
                        Field(discriminator="type")]
CLIENT_FRAMES: tuple[type[_Frame], ...] = get_args(get_args(ClientFrame)[0])
_client = TypeAdapter[Any](ClientFrame)

M = TypeVar("M", bound=_Frame)


def parse(text: str) -> ClientFrame:
    """A client's text frame, decoded and validated (raises FrameError)."""
    return validate(loads_client(text))


def validate(value: Any) -> ClientFrame:
    """A decoded client frame validated against the union (raises FrameError)."""
    try:
        return _client.validate_python(value)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise _fault(value.get("type") if isinstance(value, dict) else None, exc) from None


def validate_as(model: type[M], value: Mapping[str, Any]) -> M:
    """A frame of one known type, e.g. a dict handed to the tutor's Python API (raises
    FrameError, with the same codes as `parse`)."""
    kind = type_of(model)
    try:
        return model.model_validate({**value, "type": kind})
    except ValidationError as exc:
        raise _fault(kind, exc) from None


def _fault(kind: Any, exc: ValidationError) -> FrameError:
    error = exc.errors()[0]
    if not isinstance(kind, str) or error["type"] in (
            "model_type", "model_attributes_type", "union_tag_not_found"):
        return FrameError(ErrorCode.BAD_FRAME, 'Every frame is a JSON object with a string "type".')
    if error["type"] == "union_tag_invalid":
        return FrameError(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {kind[:50]!r}.")
    # loc: (the union's tag, field, [list index | union member…]); the tag is the frame's type.
    loc = error["loc"][1:] if error["loc"] and error["loc"][0] == kind else error["loc"]
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc
                    ).lstrip(".") or "frame"
    if error["type"] == "missing":
        return FrameError(ErrorCode.BAD_FRAME, f'{kind} needs "{field}".')
    problem = str(error["msg"]).removeprefix("Value error, ")
    return FrameError(ErrorCode.INVALID_REQUEST, f"{kind}: {field}: {problem}.")


def frame_id(value: Any) -> dict[str, str | int]:
    """`{"id": …}` to echo in an answer about this (decoded, maybe invalid) frame, or {}."""
    if isinstance(value, dict):
        ref = value.get("id")
        if isinstance(ref, str | int) and not isinstance(ref, bool):
            return {"id": ref}
    return {}


# --- server → client: the hub's own frames (never published, no "o") -------------------------

class Welcome(TypedDict):
    type: Literal["welcome"]
    user_id: str
    session_id: str
    epoch: str
    offset: int
    expires_at: int
    ping_interval_s: float
    idle_timeout_s: float
    max_frame_bytes: int


class ResumeFailedFrame(TypedDict):
    type: Literal["resume.failed"]
    reason: ResumeReason
    message: str
    epoch: str
    offset: int


class PingFrame(TypedDict):
    type: Literal["ping"]


class PongFrame(TypedDict):
    type: Literal["pong"]
    id: NotRequired[str | int]
    t: NotRequired[Any]


class AuthExpiring(TypedDict):
    type: Literal["auth.expiring"]
    expires_at: int
    in_s: float


class AuthRefreshed(TypedDict):
    type: Literal["auth.refreshed"]
    expires_at: int
    id: NotRequired[str | int]


class ErrorFrame(TypedDict):
    """Extra fields per code ride along (retry_after, reply_id, used/quota…)."""

    type: Literal["error"]
    code: ErrorCode
    message: str
    id: NotRequired[str | int]


def error(code: ErrorCode, message: str, **extra: Any) -> ErrorFrame:
    return {"type": "error", "code": code, "message": message, **extra}  # type: ignore[typeddict-item]


# --- server → client: events published on the bus to a user (each gets "o") -----------------

class Citation(TypedDict):
    n: int
    material_id: str
    title: str
    kind: str
    page: NotRequired[int]
    start_s: NotRequired[float]
    text: str
    passage: str


class ChatAck(TypedDict):
    type: Literal["chat.ack"]
    id: str
    message_id: str
    conversation_id: str
    reply_id: str | None
    duplicate: NotRequired[bool]
    o: NotRequired[int]


class ReplyStart(TypedDict):
    type: Literal["reply.start"]
    reply_id: str
    conversation_id: str
    message_id: str
    o: NotRequired[int]


class ReplyQueued(TypedDict):
    type: Literal["reply.queued"]
    reply_id: str
    position: int
    o: NotRequired[int]


class ReplyDelta(TypedDict):
    type: Literal["reply.delta"]
    reply_id: str
    seq: int
    text: str
    parts: NotRequired[int]  # set by the hub when it merged queued deltas
    o: NotRequired[int]


class ReplyCitations(TypedDict):
    type: Literal["reply.citations"]
    reply_id: str
    citations: list[Citation]
    o: NotRequired[int]


class ReplyError(TypedDict):
    type: Literal["reply.error"]
    reply_id: str
    code: ReplyErrorCode
    message: str
    o: NotRequired[int]


class ReplyEnd(TypedDict):
    type: Literal["reply.end"]
    reply_id: str
    finish_reason: Literal["stop", "length", "cancelled", "failed", "interrupted"]
    usage: dict[str, int]
    o: NotRequired[int]


class MaterialProgress(TypedDict):
    type: Literal["material.progress"]
    material_id: str
    stage: str
    done: int
    total: int
    o: NotRequired[int]


class MaterialReady(TypedDict):
    type: Literal["material.ready"]
    material_id: str
    chunks: int
    pages: NotRequired[int]
    duration_s: NotRequired[float]
    o: NotRequired[int]


class MaterialFailed(TypedDict):
    type: Literal["material.failed"]
    material_id: str
    reason: str
    o: NotRequired[int]


class StudyProgress(TypedDict):
    type: Literal["study.progress"]
    material_id: str
    stage: str
    done: int
    total: int
    o: NotRequired[int]


class StudyReady(TypedDict):
    type: Literal["study.ready"]
    material_id: str
    kinds: list[str]
    generator: str
    flashcards: NotRequired[int]
    quiz_id: NotRequired[str]
    questions: NotRequired[int]
    o: NotRequired[int]


class StudyFailed(TypedDict):
    type: Literal["study.failed"]
    material_id: str
    reason: str
    o: NotRequired[int]


class CourseLeft(TypedDict):
    type: Literal["course.left"]
    course_id: str
    o: NotRequired[int]


HUB_FRAMES: tuple[type, ...] = (Welcome, ResumeFailedFrame, PingFrame, PongFrame, AuthExpiring,
                                AuthRefreshed, ErrorFrame)
EVENTS: tuple[type, ...] = (ChatAck, ReplyStart, ReplyQueued, ReplyDelta, ReplyCitations,
                            ReplyError, ReplyEnd, MaterialProgress, MaterialReady, MaterialFailed,
                            StudyProgress, StudyReady, StudyFailed, CourseLeft)


def type_of(frame: type) -> str:
    """The "type" a frame class (model or TypedDict) stands for."""
    annotation = (frame.model_fields["type"].annotation if issubclass(frame, BaseModel)
                  else get_type_hints(frame)["type"])
    return str(get_args(annotation)[0])
