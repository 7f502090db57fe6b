"""The peer that bench_tutor.py's streaming phase is compared with: a plain FastAPI relay built
on the OpenAI SDK's typed stream, as its documentation shows it.

One WebSocket per user at /ws/v1; it speaks just enough of Tutorhub's protocol for the
benchmark's clients: `auth` → `welcome`; `chat.send` → `chat.ack`, one `reply.delta` per
token (the SDK's `ChatCompletionChunk` objects, `async for chunk in stream`), `reply.end`.
No database, no bus, no coalescing: the cost left is the SDK's stream and the socket.

    RELAY_PROVIDER_URL=http://127.0.0.1:PORT/v1 uvicorn load_tests.relay_typed:app
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
from fastapi import FastAPI, WebSocket, WebSocketDisconnect


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The SDK's defaults (its httpx2 transport), as a plain relay would have them.
    app.state.client = openai.AsyncOpenAI(api_key="relay", base_url=os.environ[
        "RELAY_PROVIDER_URL"], max_retries=0)
    try:
        yield
    finally:
        await app.state.client.close()


app = FastAPI(lifespan=lifespan)


def _frame(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


async def _reply(ws: WebSocket, client: openai.AsyncOpenAI, frame: dict[str, Any]) -> None:
    rid = str(uuid.uuid4())
    await ws.send_text(_frame(type="chat.ack", id=frame["id"], reply_id=rid,
                              conversation_id=rid))
    stream = await client.chat.completions.create(
        model="relay", messages=[{"role": "user", "content": frame["text"]}], stream=True)
    seq = 0
    finish = "stop"
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                seq += 1
                await ws.send_text(_frame(type="reply.delta", reply_id=rid, seq=seq,
                                          text=choice.delta.content))
            finish = choice.finish_reason or finish
    await ws.send_text(_frame(type="reply.end", reply_id=rid, finish_reason=finish))


@app.websocket("/ws/v1")
async def relay(ws: WebSocket) -> None:
    await ws.accept()
    client: openai.AsyncOpenAI = ws.app.state.client
    replies: set[asyncio.Task[None]] = set()
    try:
        while True:
            frame = json.loads(await ws.receive_text())
            if frame.get("type") == "auth":
                await ws.send_text(_frame(type="welcome"))
            elif frame.get("type") == "chat.send":
                task = asyncio.create_task(_reply(ws, client, frame))
                replies.add(task)
                task.add_done_callback(replies.discard)
    except WebSocketDisconnect:
        pass
    finally:
        for task in replies:
            task.cancel()
        if replies:
            await asyncio.wait(replies)


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ready"}
