"""End to end over /ws/v1: real ingestion + retrieval, the offline tutor, and two learners who
never see each other's replies or materials."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

DATA = Path(__file__).parent / "data" / "tutor"


async def _add_text(client: httpx.AsyncClient, token: str, title: str, name: str) -> str:
    r = await client.post("/materials/text", headers={"Authorization": f"Bearer {token}"},
                          json={"title": title, "text": (DATA / name).read_text("utf-8")})
    assert r.status_code == 202, r.text
    mid = str(r.json()["id"])
    async with asyncio.timeout(120):
        while True:
            m = (await client.get(f"/materials/{mid}",
                                  headers={"Authorization": f"Bearer {token}"})).json()
            assert m["status"] != "failed", m
            if m["status"] == "ready":
                return mid
            await asyncio.sleep(0.2)


async def _socket(server: str, token: str) -> ClientConnection:
    ws = await connect(server.replace("http://", "ws://") + "/ws/v1", compression=None)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws


async def _ask(ws: ClientConnection, text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a question; return the ack and every frame up to this reply's reply.end."""
    cid = uuid.uuid4().hex
    await ws.send(json.dumps({"type": "chat.send", "id": cid, "text": text}))
    frames: list[dict[str, Any]] = []
    ack: dict[str, Any] | None = None
    async with asyncio.timeout(60):
        while True:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            if frame["type"] == "chat.ack" and frame["id"] == cid:
                ack = frame
            if (frame["type"] == "reply.end" and ack is not None
                    and frame["reply_id"] == ack["reply_id"]):
                return ack, frames


def _reply(frames: list[dict[str, Any]], reply_id: str) -> tuple[str, list[dict[str, Any]]]:
    deltas = sorted((f for f in frames if f["type"] == "reply.delta"
                     and f["reply_id"] == reply_id), key=lambda f: f["seq"])
    (cites,) = [f for f in frames if f["type"] == "reply.citations" and f["reply_id"] == reply_id]
    return "".join(d["text"] for d in deltas), cites["citations"]


async def test_offline_tutor_over_the_socket_answers_from_ingested_documents(
    server: str, client: httpx.AsyncClient, register_user  # type: ignore[no-untyped-def]
) -> None:
    alice = await register_user(client, "alice-tutor@example.com")
    bob = await register_user(client, "bob-tutor@example.com")
    en = await _add_text(client, alice, "Photosynthesis", "photosynthesis_en.txt")
    ru = await _add_text(client, alice, "Река Волга", "volga_ru.txt")
    ws_a, ws_b = await _socket(server, alice), await _socket(server, bob)
    try:
        (ack_en, frames_en), (ack_b, frames_b) = await asyncio.gather(
            _ask(ws_a, "Where does the oxygen released in photosynthesis come from?"),
            _ask(ws_b, "Where does the oxygen released in photosynthesis come from?"))
        text, cites = _reply(frames_en, ack_en["reply_id"])
        assert text.startswith("Here is what your materials say:")
        assert "splitting of water" in text
        assert cites and all(f"[{c['n']}]" in text for c in cites)
        water = [c for c in cites if "splitting of water" in c["text"]]
        assert water and water[0]["material_id"] == en and water[0]["title"] == "Photosynthesis"

        # Bob has no materials: Alice's are not his, and her reply never reaches his socket.
        text_b, cites_b = _reply(frames_b, ack_b["reply_id"])
        assert text_b.startswith("I don't have any of your materials") and cites_b == []
        assert {f.get("reply_id") for f in frames_b} <= {ack_b["reply_id"], None}
        assert ack_en["reply_id"] not in {f.get("reply_id") for f in frames_b}

        ack_ru, frames_ru = await _ask(ws_a, "Куда впадает Волга?")
        text, cites = _reply(frames_ru, ack_ru["reply_id"])
        assert text.startswith("Вот что сказано в ваших материалах:")
        assert "Каспийское море" in text
        caspian = [c for c in cites if "Каспийское море" in c["text"]]
        assert caspian and caspian[0]["material_id"] == ru
        assert text.index(f"[{caspian[0]['n']}]") > text.index("Каспийское море")
    finally:
        await ws_a.close()
        await ws_b.close()
