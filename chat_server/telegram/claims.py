"""Claims: "this process handles X", decided once across every bridge process.

Several bridge processes (or `serve` instances in webhook mode) may see the same update: two
long polls overlap until one confirms it, a webhook delivery is retried. Each update, and each
reply echoed from the browser, is handled by whoever claims it first: `SET key NX EX ttl` in
Redis; without Redis there is one bridge process and an in-process table does it.

If Redis cannot be reached a claim is granted (logged): with the bus down the server refuses
sockets anyway, and an update answered twice is better than one never answered.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

MEMORY_MAX_KEYS = 100_000  # oldest claims are forgotten first beyond this


class Claims:
    async def claim(self, key: str, ttl_s: int) -> bool:
        """True for the first caller of `key` within `ttl_s`, False for every later one."""
        raise NotImplementedError


class MemoryClaims(Claims):
    def __init__(self) -> None:
        self._keys: OrderedDict[str, float] = OrderedDict()

    async def claim(self, key: str, ttl_s: int) -> bool:
        now = time.monotonic()
        while self._keys and next(iter(self._keys.values())) <= now:
            self._keys.popitem(last=False)  # expired (ttl_s is the same for a kind of key)
        expires = self._keys.get(key)
        if expires is not None and expires > now:
            return False
        self._keys[key] = now + ttl_s
        self._keys.move_to_end(key)
        if len(self._keys) > MEMORY_MAX_KEYS:
            self._keys.popitem(last=False)
        return True


class RedisClaims(Claims):
    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    async def claim(self, key: str, ttl_s: int) -> bool:
        try:
            return bool(await self._redis.set(f"th:tg:{key}", b"1", nx=True, ex=ttl_s))
        except Exception as exc:
            log.warning("claim %s granted without Redis (%s)", key, type(exc).__name__)
            return True

    async def aclose(self) -> None:
        await self._redis.aclose()


@asynccontextmanager
async def open_claims(redis_url: str | None) -> AsyncIterator[Claims]:
    if not redis_url:
        yield MemoryClaims()
        return
    claims = RedisClaims(redis_url)
    try:
        yield claims
    finally:
        await claims.aclose()
