"""Passwords, our own JWTs (access + refresh) and embed tokens signed by host websites.

Both HTTP and WebSocket authentication go through `authenticate`, so a token
means the same thing on every entry point.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jose import JWTError, jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.models import User
from chat_server.settings import Settings

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


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def create_token(settings: Settings, user_id: uuid.UUID, typ: TokenType) -> str:
    now = int(time.time())
    ttl = settings.access_token_ttl_s if typ == "access" else settings.refresh_token_ttl_s
    claims = {
        "sub": str(user_id), "typ": typ, "iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex
    }
    return jwt.encode(claims, settings.resolved_secret_key(), algorithm=ALGORITHM)


def _decode(token: str, key: str) -> dict[str, object]:
    # Pinning algorithms rejects `alg: none` and algorithm-confusion tokens.
    return jwt.decode(
        token, key, algorithms=[ALGORITHM], options={"require_exp": True, "require_sub": True}
    )


def decode_token(settings: Settings, token: str, typ: TokenType) -> tuple[uuid.UUID, float]:
    """Validate one of our own tokens and return (user id, expiry)."""
    try:
        claims = _decode(token, settings.resolved_secret_key())
        if claims.get("typ") != typ:
            raise AuthError()
        return uuid.UUID(str(claims["sub"])), float(claims["exp"])  # type: ignore[arg-type]
    except (JWTError, ValueError, KeyError, TypeError) as exc:
        raise AuthError() from exc


def decode_embed_token(settings: Settings, token: str) -> tuple[str, str | None, float]:
    """Validate a host-signed embed token and return (external id, display name, expiry)."""
    if not settings.embed_secret:
        raise AuthError()
    try:
        claims = _decode(token, settings.embed_secret)
    except JWTError as exc:
        raise AuthError() from exc
    sub = str(claims.get("sub", "")).strip()
    if not sub or len(sub) > 200:
        raise AuthError()
    name = claims.get("name")
    return f"embed:{sub}", str(name)[:200] if name else None, float(claims["exp"])  # type: ignore[arg-type]


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
        user_id, exp = decode_token(settings, token, "access")
    except AuthError:
        external_id, name, exp = decode_embed_token(settings, token)
        return Identity(await user_for_external_id(session, external_id, name), exp)
    user = await session.get(User, user_id)
    if user is None:
        raise AuthError()
    return Identity(user, exp)
