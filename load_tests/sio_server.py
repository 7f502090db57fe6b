"""python-socketio + AsyncRedisManager server for the comparison in bench_hub.py.

Same ASGI server settings as ours: uvicorn, uvloop, httptools, websockets-sansio, no
permessage-deflate. A client joins the room named in its connect auth payload: `{"user"}`, or
`{"token"}` (an embed token verified with `--secret`, as Tutorhub verifies it: bench_connect.py).
"""

from __future__ import annotations

import argparse
import resource

import socketio
import uvicorn
from jose import jwt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--secret", help="verify a token in the connect auth payload")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=socketio.AsyncRedisManager(args.redis),
                               transports=["websocket"], ping_interval=20, ping_timeout=60)

    @sio.event
    async def connect(sid: str, environ: dict, auth: dict) -> None:  # type: ignore[type-arg]
        if "token" in auth:
            claims = jwt.decode(auth["token"], args.secret, algorithms=["HS256"])
            await sio.enter_room(sid, claims["sub"])
        else:
            await sio.enter_room(sid, auth["user"])

    app = socketio.ASGIApp(sio)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                ws="websockets-sansio", ws_per_message_deflate=False, log_level="warning",
                ws_max_size=65536)


if __name__ == "__main__":
    main()
