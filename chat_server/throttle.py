"""Login throttling with the `limits` package: failed logins per account and per client address.

Moving windows (`TUTORHUB_LOGIN_RATE_LIMIT_ACCOUNT` / `_ADDRESS`). A login is refused with 429
and `Retry-After` while either of its windows is full, before its password is even checked —
so past the limit the right password is refused too, and a flood of guesses costs no hashing.
A failure counts in both windows; a success clears the account's. Kept in Redis when
`TUTORHUB_REDIS_URL` is set (every instance sees the same counts), else in this process.
Concurrent guesses may pass the check together: a window overshoots by at most the
logins in flight. The storage failing (Redis down) lets logins through, with a warning: the
throttle must not lock everyone out.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from chat_server.errors import ApiError
from chat_server.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "tutorhub:limits"


class LoginThrottle:
    def __init__(self, storage: Storage, account: list[RateLimitItem],
                 address: list[RateLimitItem]) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
        self._windows = [(item, "account") for item in account] + [
            (item, "address") for item in address]

    def _keys(self, account: str, address: str) -> list[tuple[RateLimitItem, str, str]]:
        # Emails are not kept in Redis keys: a digest of the lowercased address stands in.
        digest = hashlib.sha256(account.strip().lower().encode("utf-8", "replace")).hexdigest()
        return [(item, kind, digest[:32] if kind == "account" else address)
                for item, kind in self._windows]

    async def check(self, account: str, address: str) -> None:
        """Raise 429 (with Retry-After) if a window of this account or address is full."""
        try:
            for item, kind, key in self._keys(account, address):
                if not await self._limiter.test(item, "login", kind, key):
                    stats = await self._limiter.get_window_stats(item, "login", kind, key)
                    wait = max(1, math.ceil(stats.reset_time - time.time()))
                    who = "this account" if kind == "account" else "your address"
                    raise ApiError(429, f"Too many failed logins for {who}; try again in "
                                   f"{wait} s.", "rate_limited", headers={"Retry-After": str(wait)})
        except ApiError:
            raise
        except Exception as exc:
            log.warning("login throttle unavailable, not limiting: %s", type(exc).__name__)

    async def failed(self, account: str, address: str) -> None:
        try:
            for item, kind, key in self._keys(account, address):
                await self._limiter.hit(item, "login", kind, key)
        except Exception as exc:
            log.warning("login throttle unavailable, not counting: %s", type(exc).__name__)

    async def succeeded(self, account: str) -> None:
        try:
            for item, kind, key in self._keys(account, ""):
                if kind == "account":
                    await self._limiter.clear(item, "login", kind, key)
        except Exception as exc:
            log.warning("login throttle unavailable: %s", type(exc).__name__)


@asynccontextmanager
async def open_throttle(settings: Settings) -> AsyncIterator[LoginThrottle]:
    account = parse_many(settings.login_rate_limit_account)
    address = parse_many(settings.login_rate_limit_address)
    if not settings.redis_url:
        yield LoginThrottle(MemoryStorage(), account, address)
        return
    from redis.asyncio import ConnectionPool

    pool = ConnectionPool.from_url(settings.redis_url, socket_timeout=2.0,
                                   socket_connect_timeout=2.0)
    scheme = settings.redis_url.split("://", 1)[0]
    uri = "async+" + ("redis+unix" if scheme == "unix" else scheme) + "://"
    storage = RedisStorage(uri, implementation="redispy", key_prefix=KEY_PREFIX,
                           connection_pool=pool)  # type: ignore[arg-type]  # typed too narrowly
    try:
        yield LoginThrottle(storage, account, address)
    finally:
        await pool.disconnect()
