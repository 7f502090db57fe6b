"""The wire contract in one place: chat_server/protocol agrees with docs/protocol.md, a client
frame is validated once with one code per kind of fault, and JSON is the codec's alone."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from chat_server.app import create_app
from chat_server.protocol import codec, frames
from chat_server.protocol.codec import FrameError
from chat_server.protocol.codes import Close, ErrorCode, ReplyErrorCode, ResumeReason
from chat_server.settings import Settings
from tests.support import protocol_doc as doc
from tests.support.services import serve_app
from tests.support.ws import new_user, recv, socket

ROOT = Path(__file__).resolve().parent.parent


def test_the_codes_module_and_the_protocol_document_list_the_same_codes() -> None:
    assert {int(code) for code in Close} == doc.close_codes()
    assert set(ErrorCode) == (doc.table_keys(doc.HUB_ERRORS) - {"tutor codes"}) | doc.table_keys(doc.TUTOR_ERRORS)
    assert set(ReplyErrorCode) == doc.table_keys(doc.REPLY_ERRORS)
    assert set(ErrorCode) | set(ReplyErrorCode) == doc.error_codes()
    assert set(ResumeReason) == doc.resume_reasons()


def test_every_frame_type_is_in_the_protocol_document() -> None:
    assert {frames.type_of(f) for f in frames.CLIENT_FRAMES} == doc.client_frames()
    assert {frames.type_of(f) for f in (*frames.HUB_FRAMES, *frames.EVENTS)} == doc.server_frames()


# One bad frame of every kind, and the one code it gets.
BAD: list[tuple[str, ErrorCode]] = [
    ("{not json", ErrorCode.BAD_JSON),
    ("[1, 2]", ErrorCode.BAD_FRAME),
    ('{"no": "type"}', ErrorCode.BAD_FRAME),
    ('{"type": 5}', ErrorCode.BAD_FRAME),
    ('{"type": "ping", "t": ' + "[" * 40 + "]" * 40 + "}", ErrorCode.BAD_FRAME),
    ('{"type": "chat.send", "id": "a", "text": "nul\\u0000"}', ErrorCode.BAD_FRAME),
    ('{"type": "chat.send", "id": "a"}', ErrorCode.BAD_FRAME),
    ('{"type": "chat.cancel"}', ErrorCode.BAD_FRAME),
    ('{"type": "auth.refresh"}', ErrorCode.BAD_FRAME),
    ('{"type": "chat.nonsense"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": "chat.send", "id": "", "text": "x"}', ErrorCode.INVALID_REQUEST),
    ('{"type": "chat.send", "id": 7, "text": "x"}', ErrorCode.INVALID_REQUEST),
    ('{"type": "chat.send", "id": "a", "text": "   "}', ErrorCode.INVALID_REQUEST),
    ('{"type": "chat.send", "id": "a", "text": "' + "x" * 16_001 + '"}', ErrorCode.INVALID_REQUEST),
    ('{"type": "chat.send", "id": "a", "text": "x", "conversation_id": "nope"}', ErrorCode.INVALID_REQUEST),
    ('{"type": "chat.send", "id": "a", "text": "x", "material_ids": ["' + "0" * 32 + '", 3]}', ErrorCode.INVALID_REQUEST),
    ('{"type": "chat.send", "id": "a", "text": "x", "material_ids": ' + json.dumps(["1" * 32] * 101) + "}", ErrorCode.INVALID_REQUEST),
    ('{"type": "chat.send", "id": "a", "text": "x", "socratic": "yes"}', ErrorCode.INVALID_REQUEST),
    ('{"type": "chat.cancel", "reply_id": "not-a-uuid"}', ErrorCode.INVALID_REQUEST),
    ('{"type": "auth.refresh", "token": ""}', ErrorCode.INVALID_REQUEST),
    ('{"type": "ping", "id": [1]}', ErrorCode.INVALID_REQUEST),
]


@pytest.mark.parametrize(("text", "code"), BAD, ids=[f"{c.value}-{i}" for i, (_, c) in enumerate(BAD)])
def test_each_kind_of_bad_frame_has_one_code(text: str, code: ErrorCode) -> None:
    with pytest.raises(FrameError) as info:
        frames.parse(text)
    assert info.value.code == code and info.value.message
    value = json.loads(text) if code is not ErrorCode.BAD_JSON else None
    if isinstance(value, dict) and value.get("type") in ("chat.send", "chat.cancel") and "\\u0000" not in text:
        # The tutor's Python API (a dict, not a validated frame) goes through the same model.
        model = frames.ChatSend if value["type"] == "chat.send" else frames.ChatCancel
        with pytest.raises(FrameError) as again:
            frames.validate_as(model, value)
        assert again.value.code == code


def test_valid_frames_come_out_typed() -> None:
    send = frames.parse('{"type": "chat.send", "id": "m1", "text": "  Привет ", "socratic": true, "extra": 1}')
    assert isinstance(send, frames.ChatSend) and send.text == "Привет" and send.socratic is True
    ping = frames.parse('{"type": "ping", "id": 3, "t": null}')
    assert isinstance(ping, frames.Ping) and ping.id == 3 and "t" in ping.model_fields_set
    auth = frames.parse('{"type": "auth", "token": "x", "resume": {"since": 4, "epoch": "e"}}')
    assert isinstance(auth, frames.Auth) and auth.resume == frames.Resume(since=4, epoch="e")


async def test_a_bad_frame_gets_exactly_one_answer_on_the_wire(settings: Settings) -> None:
    """Validated once, by the hub: each bad frame is answered by one error frame (the tutor
    never sees it to answer again), with the id echoed, and the socket stays usable."""
    async with serve_app(create_app(settings.model_copy(update={"ws_rate_limit_burst": 100}))) as base:
        _, token = await new_user(base)
        async with socket(base, token) as (ws, _):
            for i, (text, code) in enumerate(BAD):
                value = json.loads(text) if code is not ErrorCode.BAD_JSON else None
                if isinstance(value, dict) and "id" not in value:
                    text = json.dumps({**value, "id": f"f{i}"})
                await ws.send(text)
                await ws.send(json.dumps({"type": "ping", "id": f"p{i}"}))
                err, pong = await recv(ws), await recv(ws)
                assert err["type"] == "error" and err["code"] == code, (text[:80], err)
                try:  # the id is echoed when the frame could be decoded at all
                    expected = frames.frame_id(codec.loads_client(text))
                except FrameError:
                    expected = {}
                assert err.get("id") == expected.get("id"), (text[:80], err)
                assert pong == {"type": "pong", "id": f"p{i}"}, (text[:80], pong)


def test_json_on_the_wire_is_the_codec_s_alone() -> None:
    """The hub and the bus encode and decode frames only through chat_server.protocol.codec:
    no json/orjson import there (so no frame is built or read as text by hand)."""
    for package in ("hub", "bus"):
        for path in (ROOT / "chat_server" / package).glob("*.py"):
            tree = ast.parse(path.read_text())
            imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                        if isinstance(node, ast.Import) for alias in node.names}
            imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                         if isinstance(node, ast.ImportFrom)}
            assert not imported & {"json", "orjson"}, path
    assert json.loads(codec.dumps({"type": "pong", "t": "Ё\u2028"})) == {"type": "pong", "t": "Ё\u2028"}
