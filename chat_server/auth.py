"""Passwords, our own JWTs (access + refresh) and embed tokens signed by host websites.

Both HTTP and WebSocket authentication go through `authenticate`, so a token
means the same thing on every entry point.

Every token of ours carries the user's token generation (`gen`): a password change raises
it, and from then on every access and refresh token issued before is refused, on REST and on
sockets alike. Refresh tokens are also single use (routes/auth.py): each has a row in
`refresh_tokens`, in a family started by a login.

Password hashing (argon2: ~50 ms of a core and 64 MiB per hash) runs in `Passwords`' own few
threads, never on the event loop and never in the default pool the rest of the app shares.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jose import JWTError, jwk, jwt
from jose.backends.base import Key
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.db import Database
from chat_server.models import User
from chat_server.settings import Settings
from chat_server.text import clean_text

ALGORITHM = "HS256"
TokenType = Literal["access", "refresh"]

_hasher = PasswordHasher()
# Verifying against this keeps the timing of "unknown email" equal to "wrong password".
_DUMMY_HASH = _hasher.hash("tutorhub-dummy-password")


class AuthError(Exception):
    """A token or credential was refused. The message is safe to show to the client."""

    def __init__(self, message: str = "Invalid or expired token.") -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Identity:
    user: User
    expires_at: float  # unix seconds
    generation: int = 0  # the token generation the token was issued at (embed tokens: 0)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class Passwords:
    """hash/verify on `threads` threads of their own; callers beyond wait (without a thread)."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads),
                                        thread_name_prefix="password-hash")
        self._slots = asyncio.Semaphore(max(1, threads))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, hash_password, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, verify_password, password, password_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def create_token(settings: Settings, user_id: uuid.UUID, typ: TokenType, *,
                 generation: int = 0, jti: uuid.UUID | None = None) -> str:
    now = int(time.time())
    ttl = settings.access_token_ttl_s if typ == "access" else settings.refresh_token_ttl_s
    claims = {
        "sub": str(user_id), "typ": typ, "iat": now, "exp": now + ttl,
        "jti": (jti or uuid.uuid4()).hex, "gen": generation,
    }
    return jwt.encode(claims, settings.resolved_secret_key(), algorithm=ALGORITHM)


@lru_cache(maxsize=8)
def _key(secret: str) -> Key:
    # A Key object, built once: given the secret as a string, jose tries to parse it as a JSON
    # key set on every decode first (a failed json.loads per token).
    return jwk.construct(secret, ALGORITHM)


def _decode(token: str, key: str) -> dict[str, object]:
    # Pinning algorithms rejects `alg: none` and algorithm-confusion tokens.
    return jwt.decode(
        token, _key(key), algorithms=[ALGORITHM],
        options={"require_exp": True, "require_sub": True},
    )


# What decoding a token may raise when its claims are of odd types or sizes: jose validates
# them with int() (a list `exp` is a TypeError), and a float can't hold every integer (an
# `exp` of 10**400 is an OverflowError). Any of these is a bad token, not a crash.
_BAD_TOKEN = (JWTError, ValueError, KeyError, TypeError, UnicodeError, OverflowError)


@dataclass(frozen=True)
class Claims:
    user_id: uuid.UUID
    expires_at: float
    generation: int
    jti: uuid.UUID | None
    legacy: bool  # issued before tokens carried `gen` (migration 0003)


def decode_claims(settings: Settings, token: str, typ: TokenType) -> Claims:
    """Validate one of our own tokens (signature, expiry, type) and return its claims."""
    try:
        claims = _decode(token, settings.resolved_secret_key())
        if claims.get("typ") != typ:
            raise AuthError()
        generation = claims.get("gen", 0)
        if not isinstance(generation, int):
            raise AuthError()
        jti = claims.get("jti")
        return Claims(uuid.UUID(str(claims["sub"])), float(claims["exp"]),  # type: ignore[arg-type]
                      generation, uuid.UUID(str(jti)) if jti is not None else None,
                      "gen" not in claims)
    except _BAD_TOKEN as exc:
        raise AuthError() from exc


def decode_token(settings: Settings, token: str, typ: TokenType) -> tuple[uuid.UUID, float]:
    """Validate one of our own tokens and return (user id, expiry)."""
    claims = decode_claims(settings, token, typ)
    return claims.user_id, claims.expires_at


@dataclass(frozen=True)
class EmbedGrants:
    """What a host site's embed token may grant besides the identity: a course to enroll in
    (`course_id`) and the user's role (`role`: learner | instructor; never admin)."""

    course_id: uuid.UUID | None = None
    role: str | None = None


def decode_embed_token(settings: Settings, token: str) -> tuple[str, str | None, float]:
    """Validate a host-signed embed token and return (external id, display name, expiry)."""
    external_id, name, exp, _ = decode_embed(settings, token)
    return external_id, name, exp


def decode_embed(settings: Settings, token: str
                 ) -> tuple[str, str | None, float, EmbedGrants]:
    """Validate a host-signed embed token: (external id, display name, expiry, grants)."""
    if not settings.embed_secret:
        raise AuthError()
    try:
        claims = _decode(token, settings.embed_secret)
        expires_at = float(claims["exp"])  # type: ignore[arg-type]
    except _BAD_TOKEN as exc:
        raise AuthError() from exc
    sub = str(claims.get("sub", "")).strip()
    if not sub or len(sub) > 200 or not clean_text(sub):
        raise AuthError()
    name = claims.get("name")
    # A host's display name is shown, not trusted: what Postgres can't store is dropped.
    shown = "".join(c for c in str(name)[:200] if clean_text(c)) if name else None
    role = claims.get("role")
    if role is not None and role not in ("learner", "instructor"):
        raise AuthError("An embed token may grant the learner or instructor role only.")
    course = claims.get("course_id")
    try:
        course_id = uuid.UUID(str(course)) if course is not None else None
    except ValueError:
        raise AuthError("The embed token's course_id is not a UUID.") from None
    return f"embed:{sub}", shown or None, expires_at, EmbedGrants(course_id, role)


async def user_for_external_id(
    session: AsyncSession, external_id: str, display_name: str | None
) -> User:
    user = await session.scalar(select(User).where(User.external_id == external_id))
    if user is not None:
        return user
    user = User(external_id=external_id, display_name=display_name)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        # Two first connections of the same embed user raced; the other one created it.
        await session.rollback()
        user = await session.scalar(select(User).where(User.external_id == external_id))
        if user is None:
            raise
    return user


async def authenticate(session: AsyncSession, settings: Settings, token: str) -> Identity:
    """Resolve an access token or an embed token to its user; embed users appear on first sight."""
    try:
        claims = decode_claims(settings, token, "access")
    except AuthError:
        external_id, name, exp, grants = decode_embed(settings, token)
        embedded = await user_for_external_id(session, external_id, name)
        if grants.course_id is not None or grants.role is not None:
            from chat_server.courses.enrollment import apply_grants

            await apply_grants(session, embedded, grants)
        return Identity(embedded, exp)
    user = await session.get(User, claims.user_id)
    _check_generation(claims, None if user is None else user.token_generation)
    assert user is not None
    return Identity(user, claims.expires_at, claims.generation)


def _check_generation(claims: Claims, generation: int | None) -> None:
    """The user must exist and still be at the token's generation."""
    if generation is None:
        raise AuthError()
    if claims.generation != generation:
        raise AuthError("This token was revoked (the password changed); log in again.")


@dataclass(frozen=True, slots=True)
class SocketIdentity:
    user_id: uuid.UUID
    expires_at: float  # unix seconds
    generation: int = 0  # as in Identity


# A socket's connect is the hot path of a reconnect storm (every socket of an instance comes
# back at once after a deploy): one statement on the asyncpg pool, not an ORM session (whose
# pre-ping and BEGIN/ROLLBACK pairs cost several times more: load_tests/reports/hub.md).
_GENERATION = "SELECT token_generation FROM users WHERE id = $1"
_EXTERNAL = "SELECT id FROM users WHERE external_id = $1"


async def authenticate_socket(db: Database, settings: Settings, token: str) -> SocketIdentity:
    """`authenticate` for a socket (`auth` and `auth.refresh` frames): the same rules, the user
    read with one statement. An embed user seen for the first time is created as `authenticate`
    does."""
    try:
        claims = decode_claims(settings, token, "access")
    except AuthError:
        external_id, name, exp = decode_embed_token(settings, token)
        user_id = await db.pool.fetchval(_EXTERNAL, external_id)
        if user_id is None:
            async with db.session() as session:
                user_id = (await user_for_external_id(session, external_id, name)).id
        return SocketIdentity(user_id, exp)
    _check_generation(claims, await db.pool.fetchval(_GENERATION, claims.user_id))
    return SocketIdentity(claims.user_id, claims.expires_at, claims.generation)
