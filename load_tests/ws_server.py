"""A plain `websockets` server for the connect-rate comparison in bench_connect.py: the same
first frame as Tutorhub (`{"type": "auth", "token"}`, an embed token verified with the same
secret), answered with a welcome; nothing else (no database, no bus). uvloop, no compression.
"""

from __future__ import annotations

import argparse
import json
import resource

import uvloop
from jose import jwt
from websockets.asyncio.server import ServerConnection, serve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def handler(ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        claims = jwt.decode(hello["token"], args.secret, algorithms=["HS256"])
        await ws.send(json.dumps({"type": "welcome", "user_id": claims["sub"]}, separators=(",", ":")))
        await ws.wait_closed()

    async def run() -> None:
        async with serve(handler, "127.0.0.1", args.port, compression=None, max_size=65536,
                         ping_interval=None, backlog=1024) as server:
            await server.serve_forever()

    uvloop.run(run())


if __name__ == "__main__":
    main()
