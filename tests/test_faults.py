"""Faults under traffic, with counted losses. Real processes: three `tutorhub serve` instances on
one redis-server and one PostgreSQL of their own, learners streaming replies from a loopback
provider. In order: Redis killed and restarted, Postgres stopped and started, SIGTERM of an
instance, kill -9 of another. Each test prints what was lost and asserts zero for everything
that had an offset or an acknowledgement.

(A worker killed mid-ingestion: tests/test_ingest_worker.py. Embedded kill -9 and restart:
tests/test_cli.py.)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_providers import openai_stream
from tests.support.learner import Learner, converse, losses, stop_all
from tests.support.processes import (
    Postgres,
    Serve,
    postgres,
    provider_in_thread,
    serve,
    tutorhub_env,
)
from tests.support.services import RedisServer, redis_server
from tests.support.ws import until

PIECES = [f"w{i} " for i in range(40)]  # a reply: 40 tokens over 2 s


@dataclass
class Cluster:
    servers: dict[str, Serve]
    redis: RedisServer
    pg: Postgres
    workdir: Path
    env: dict[str, str]

    def url(self, name: str) -> str:
        return self.servers[name].url

    def urls(self, *names: str) -> list[str]:
        return [self.servers[n].url for n in names]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("faults")
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(workdir / "redis"))
        pg = stack.enter_context(postgres(workdir))
        url = pg.database("tutorhub")
        provider = stack.enter_context(provider_in_thread(openai_stream(PIECES, delay_s=0.05)))
        env = tutorhub_env(
            workdir / "data", TUTORHUB_DATABASE_URL=url, TUTORHUB_REDIS_URL=redis.url,
            TUTORHUB_AUTO_MIGRATE="false", TUTORHUB_SECRET_KEY="fault-secret-" + "k" * 40,
            TUTORHUB_LLM_PROVIDER="openai", TUTORHUB_OPENAI_BASE_URL=provider.base_url + "/v1",
            TUTORHUB_OPENAI_API_KEY="sk-test", TUTORHUB_OPENAI_MODEL="gpt-test",
            TUTORHUB_LLM_RETRIES="0", TUTORHUB_REPLY_CHECKPOINT_S="0.3",
            TUTORHUB_SHUTDOWN_TIMEOUT_S="1", TUTORHUB_LOG_LEVEL="warning")
        servers = {name: stack.enter_context(serve(workdir, env, name)) for name in "abc"}
        for server in servers.values():
            server.wait_ready()
        yield Cluster(servers, redis, pg, workdir, env)


def report(name: str, lost: dict[str, int], **seen: Any) -> None:
    print(f"\n[{name}] lost: {json.dumps(lost)}; seen: {json.dumps(seen, default=str)}")


def _acked_more(learners: list[Learner], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum(len(x.book.acked) for x in learners) >= n
    return check


def _streamed(learner: Learner) -> str:
    """The text received so far of the learner's (only) reply."""
    ack = next(iter(learner.book.acked.values()), None)
    return learner.book.text.get(ack["reply_id"], "") if ack else ""


async def _settled(learners: list[Learner], base: str, wait_s: float = 60) -> None:
    """Until no acknowledged reply is `streaming` any more."""
    async with asyncio.timeout(wait_s):
        while True:
            streaming = 0
            for learner in learners:
                stored = await learner.stored(base)
                streaming += sum(stored.get(a["reply_id"], {}).get("status") == "streaming"
                                 for a in learner.book.acked.values())
            if not streaming:
                return
            await asyncio.sleep(0.5)


async def _statuses(learners: list[Learner], base: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for learner in learners:
        stored = await learner.stored(base)
        for ack in learner.book.acked.values():
            status = stored.get(ack["reply_id"], {}).get("status", "missing")
            counts[status] = counts.get(status, 0) + 1
    return counts


async def test_redis_killed_and_restarted_under_traffic(cluster: Cluster) -> None:
    t0 = time.monotonic()
    bases = cluster.urls("a", "b")
    learners = [await Learner.create(bases[0]) for _ in range(4)]
    stop = asyncio.Event()
    talks = [asyncio.create_task(converse(x, bases[i % 2:] + bases[:i % 2], stop))
             for i, x in enumerate(learners)]
    try:
        await asyncio.sleep(1.5)
        cluster.redis.stop()  # SIGKILL
        await asyncio.sleep(1.0)
        acked_before_restart = sum(len(x.book.acked) for x in learners)
        await asyncio.to_thread(cluster.redis.start)
        # Recovery without a restart of any instance: answers come again.
        await until(_acked_more(learners, acked_before_restart + 4), 40)
    finally:
        stop_all(stop, learners)
        await asyncio.gather(*talks)
    t1 = time.monotonic()
    await _settled(learners, bases[0])
    lost = await losses(learners, bases[0])
    statuses = await _statuses(learners, bases[0])
    report("redis", lost, timing=[round(t1 - t0, 1), round(time.monotonic() - t1, 1)], statuses=statuses, refused=[x.book.refused for x in learners],
           epochs=[x.book.epochs for x in learners], closes=[x.book.closes for x in learners])
    assert not any(lost.values()), lost
    # Replies cut by the outage end interrupted, never failed; refusals are `unavailable`.
    assert set(statuses) <= {"complete", "interrupted"}, statuses
    assert all(set(x.book.refused) <= {"unavailable"} for x in learners)
    for learner in learners:
        await learner.disconnect()


async def test_postgres_stopped_and_started_under_traffic(cluster: Cluster) -> None:
    bases = cluster.urls("a", "b")
    learners = [await Learner.create(bases[0]) for _ in range(4)]
    stop = asyncio.Event()
    talks = [asyncio.create_task(converse(x, bases, stop)) for x in learners]
    probes: dict[int, int] = {}
    try:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.pg.stop)
        async with httpx.AsyncClient(base_url=bases[1], timeout=10) as c:
            for _ in range(10):  # meanwhile: clear 503s
                r = await c.get("/me", headers=learners[0].auth)
                probes[r.status_code] = probes.get(r.status_code, 0) + 1
                if r.status_code == 503:
                    assert r.json()["error"] == "unavailable" and r.headers["retry-after"]
                await asyncio.sleep(0.1)
            ready = await c.get("/readyz")
        await asyncio.to_thread(cluster.pg.start)
        acked = sum(len(x.book.acked) for x in learners)
        await until(_acked_more(learners, acked + 4), 40)  # recovery, nothing restarted
    finally:
        stop_all(stop, learners)
        await asyncio.gather(*talks)
    assert probes.get(503, 0) >= 9 and set(probes) <= {503}, probes
    assert ready.status_code == 503
    await _settled(learners, bases[0])
    lost = await losses(learners, bases[0])
    statuses = await _statuses(learners, bases[0])
    report("postgres", lost, statuses=statuses, refused=[x.book.refused for x in learners],
           probes=probes, closes=[x.book.closes for x in learners])
    assert not any(lost.values()), lost
    assert set(statuses) <= {"complete", "interrupted"}, statuses
    assert all(set(x.book.refused) <= {"unavailable"} for x in learners), \
        [x.book.refused for x in learners]
    for learner in learners:
        await learner.disconnect()


async def test_sigterm_under_load_closes_1012_and_loses_nothing(cluster: Cluster) -> None:
    a, b = cluster.urls("a", "b")
    learners = [await Learner.create(a) for _ in range(6)]
    for learner in learners:
        assert await learner.connect([a]) == a
        await learner.send("Explain entropy.")
    await asyncio.gather(*(x.wait(lambda x=x: bool(_streamed(x))) for x in learners))
    code = await asyncio.to_thread(cluster.servers["a"].stop)  # SIGTERM mid-reply
    assert code == 0, cluster.servers["a"].output()[-2000:]
    for learner in learners:  # closed 1012: resume on the other instance
        await learner.wait(lambda x=learner: not x.connected, 10)
        assert learner.book.closes == {1012: 1}, learner.book.closes
        assert await learner.connect([b]) == b
        await learner.wait(lambda x=learner: len(x.book.ended) == 1, 15)
    lost = await losses(learners, b)
    ends = [e["finish_reason"] for x in learners for e in x.book.ended.values()]
    report("sigterm", lost, finish=ends)
    assert not any(lost.values()), lost
    for learner in learners:  # what streamed is what is stored, all of it
        stored = await learner.stored(b)
        (ack,) = learner.book.acked.values()
        reply = stored[ack["reply_id"]]
        end = learner.book.ended[ack["reply_id"]]
        assert reply["status"] == {"stop": "complete", "interrupted": "interrupted"}[
            end["finish_reason"]]
        assert reply["content"] == learner.book.text[ack["reply_id"]]
    assert "interrupted" in ends  # the 1 s shutdown timeout cut replies of 2 s
    for learner in learners:
        await learner.disconnect()


async def test_kill_9_mid_stream_resumes_elsewhere_and_ends_replies_interrupted(
        cluster: Cluster) -> None:
    b, c = cluster.urls("b", "c")
    learners = [await Learner.create(b) for _ in range(6)]
    for learner in learners:
        assert await learner.connect([b]) == b
        await learner.send("Explain entropy.")
    await asyncio.gather(*(x.wait(lambda x=x: len(_streamed(x)) > 12) for x in learners))
    await asyncio.sleep(0.4)  # a checkpoint (0.3 s) stores what streamed so far
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.servers["b"].kill)
    for learner in learners:
        await learner.wait(lambda x=learner: not x.connected, 10)
        assert await learner.connect([c]) == c  # resumes: nothing after its offset is lost
    lost = await losses(learners, c)
    # The replies B streamed are left `streaming`; C marks them interrupted once their
    # heartbeat is stale (30 s at least), text kept.
    await _settled(learners, c, 90)
    statuses = await _statuses(learners, c)
    report("kill -9", lost, statuses=statuses, seconds_to_interrupted=round(
        time.monotonic() - killed_at, 1), closes=[x.book.closes for x in learners])
    assert not any(lost.values()), lost
    assert statuses == {"interrupted": len(learners)}, statuses
    for learner in learners:
        stored = await learner.stored(c)
        (ack,) = learner.book.acked.values()
        content, seen = stored[ack["reply_id"]]["content"], learner.book.text[ack["reply_id"]]
        # The last checkpoint holds at least what streamed 0.4 s before the kill.
        assert content and (seen.startswith(content) or content.startswith(seen)), (content, seen)
        await learner.disconnect()
