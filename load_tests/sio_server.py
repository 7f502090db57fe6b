"""python-socketio + AsyncRedisManager server for the comparison in bench_hub.py.

Same ASGI server settings as ours: uvicorn, uvloop, httptools, websockets-sansio, no
permessage-deflate. A client joins the room named in its connect auth payload.
"""

from __future__ import annotations

import argparse
import resource

import socketio
import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=socketio.AsyncRedisManager(args.redis),
                               transports=["websocket"], ping_interval=20, ping_timeout=60)

    @sio.event
    async def connect(sid: str, environ: dict, auth: dict) -> None:  # type: ignore[type-arg]
        await sio.enter_room(sid, auth["user"])

    app = socketio.ASGIApp(sio)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                ws="websockets-sansio", ws_per_message_deflate=False, log_level="warning",
                ws_max_size=65536)


if __name__ == "__main__":
    main()
