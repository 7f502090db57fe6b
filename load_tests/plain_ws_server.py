"""The peer for fan-out and connects/s: a plain `websockets` server with one Redis listener.

    python load_tests/plain_ws_server.py --port P --redis URL --secret EMBED_SECRET

What a tutorial-grade service does: the first frame `{"type": "auth", "token"}` is an HS256
token (checked with python-jose, no database), `welcome {user_id}` answers it, and one
pattern subscription receives every event Tutorhub's bus publishes (channel `th:{<user>}`,
payload `<o> <epoch> <event JSON>`); each event goes to that user's sockets with its `o`, encoded
by `json.dumps`, one `send` per socket. No history, no resume, no per-socket queue limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
import uvloop
from jose import jwt
from websockets.asyncio.server import ServerConnection, serve

SOCKETS: dict[str, set[ServerConnection]] = defaultdict(set)


async def handler(ws: ServerConnection, secret: str) -> None:
    try:
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        user = str(jwt.decode(first["token"], secret, algorithms=["HS256"])["sub"])
    except Exception:
        await ws.close(4401, "auth failed")
        return
    await ws.send(json.dumps({"type": "welcome", "user_id": user}, separators=(",", ":")))
    SOCKETS[user].add(ws)
    try:
        async for message in ws:
            if isinstance(message, str) and '"ping"' in message:
                await ws.send('{"type":"pong"}')
    finally:
        SOCKETS[user].discard(ws)


async def listen(url: str) -> None:
    client: Any = aioredis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.psubscribe("th:{*}")
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        user = message["channel"][4:-1].decode()
        sockets = SOCKETS.get(user)
        if not sockets:
            continue
        o, _, rest = message["data"].partition(b" ")
        _, _, event = rest.partition(b" ")
        frame = json.dumps({**json.loads(event), "o": int(o)}, separators=(",", ":"))
        for ws in list(sockets):
            try:
                await ws.send(frame)
            except Exception:
                sockets.discard(ws)


async def main(port: int, url: str, secret: str) -> None:
    listener = asyncio.create_task(listen(url))
    async with serve(lambda ws: handler(ws, secret), "127.0.0.1", port, compression=None,
                     ping_interval=None, max_queue=64):
        print("ready", flush=True)
        await listener


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    # A load generator drops sockets without a close frame: don't log a traceback for each.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    uvloop.run(main(args.port, args.redis, args.secret))
