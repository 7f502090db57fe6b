"""A loopback HTTP server answering the providers' NON-streaming calls with JSON: Anthropic
`POST /v1/messages` (a tool_use message, a refusal) and OpenAI `POST /chat/completions` (a
JSON content, a refusal). Each request takes the next scripted answer; requests are recorded.
The real anthropic and openai SDKs are pointed at `base_url`."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    body: Any
    status: int = 200


@dataclass
class StructuredServer:
    script: deque[Answer] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> StructuredServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip()
                           for k, v in (ln.split(":", 1) for ln in head[1:] if ":" in ln)}
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append({"path": head[0].split(" ")[1],
                                      "body": json.loads(raw) if raw else None})
                answer = self.script.popleft() if self.script else Answer(
                    {"error": {"type": "api_error", "message": "script ran out"}}, 500)
                data = json.dumps(answer.body).encode()
                writer.write(f"HTTP/1.1 {answer.status} X\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def anthropic_tool_use(payload: Any, tool: str = "record_study") -> Answer:
    return Answer({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                   "content": [{"type": "tool_use", "id": "toolu_1", "name": tool,
                                "input": payload}],
                   "stop_reason": "tool_use", "stop_sequence": None,
                   "usage": {"input_tokens": 100, "output_tokens": 50}})


def anthropic_refusal(text: str) -> Answer:
    return Answer({"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-test",
                   "content": [{"type": "text", "text": text}], "stop_reason": "refusal",
                   "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 5}})


def openai_content(content: str, refusal: str | None = None) -> Answer:
    return Answer({"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                   "model": "gpt-test",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content,
                                            "refusal": refusal}}],
                   "usage": {"prompt_tokens": 100, "completion_tokens": 50,
                             "total_tokens": 150}})
