"""Registration, login (OAuth2 password form), token refresh and logout, the current user and
a password change.

Refresh tokens are single use: `/auth/refresh` marks the one it is given used and returns the
next of its family (a login starts a family). A used or revoked refresh token presented again
means it was copied: its whole family is revoked (every session that descends from that login
must log in again). `/auth/logout` revokes the family of the token it is given. A password
change raises the user's token generation: every token issued before stops working.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.auth import AuthError, Claims, Passwords, create_token, decode_claims
from chat_server.courses import audit
from chat_server.deps import CurrentUser, SessionDep, SettingsDep
from chat_server.errors import ApiError
from chat_server.models import RefreshToken, User
from chat_server.schemas import PasswordChangeIn, RefreshIn, RegisterIn, TokenPair, UserPublic
from chat_server.settings import Settings
from chat_server.text import PROBLEM, clean_text
from chat_server.throttle import LoginThrottle

log = logging.getLogger(__name__)

router = APIRouter(tags=["auth"])

BAD_LOGIN = "Incorrect email or password."
BAD_REFRESH = "Invalid or expired refresh token."
REUSED = ("This refresh token was already used: every session it belongs to is logged out. "
          "Log in again.")
MAX_FORM_PASSWORD = 1024  # login form; registration and changes allow 256


def _passwords(request: Request) -> Passwords:
    return request.app.state.passwords  # type: ignore[no-any-return]


def _throttle(request: Request) -> LoginThrottle:
    return request.app.state.login_throttle  # type: ignore[no-any-return]


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _issue(session: AsyncSession, settings: Settings, user_id: uuid.UUID,
                 generation: int, family_id: uuid.UUID | None = None) -> TokenPair:
    """A new token pair; its refresh token is stored in `family_id` (None: a new family).
    The caller commits."""
    jti = uuid.uuid4()
    session.add(RefreshToken(
        id=jti, user_id=user_id, family_id=family_id or uuid.uuid4(),
        expires_at=datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_s)))
    return TokenPair(
        access_token=create_token(settings, user_id, "access", generation=generation),
        refresh_token=create_token(settings, user_id, "refresh", generation=generation, jti=jti),
        expires_in=settings.access_token_ttl_s,
    )


def _refresh_claims(settings: Settings, token: str) -> Claims:
    try:
        return decode_claims(settings, token, "refresh")
    except AuthError as exc:
        raise ApiError(401, BAD_REFRESH) from exc


async def _revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken).where(RefreshToken.family_id == family_id,
                                   RefreshToken.revoked_at.is_(None))
        .values(revoked_at=func.now()))


@router.post("/auth/register", status_code=201, response_model=UserPublic,
             summary="Create an account with email and password")
async def register(body: RegisterIn, session: SessionDep, request: Request) -> User:
    user = User(email=body.email.lower(),
                password_hash=await _passwords(request).hash(body.password),
                display_name=body.display_name)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise ApiError(409, "An account with this email already exists.", "email_taken") from exc
    return user


@router.post("/auth/token", response_model=TokenPair,
             summary="Log in (OAuth2 password form: username = email) and get tokens",
             responses={429: {"description": "Too many failed logins (see Retry-After)."}})
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep,
    settings: SettingsDep, request: Request,
) -> TokenPair:
    for field, value in (("username", form.username), ("password", form.password)):
        if not clean_text(value):
            raise ApiError(422, f"Invalid request: {field}: {PROBLEM}", "invalid_request")
    if len(form.password) > MAX_FORM_PASSWORD:
        raise ApiError(401, BAD_LOGIN, "bad_credentials")
    email, address = form.username.strip().lower(), _address(request)
    throttle = _throttle(request)
    await throttle.check(email, address)
    user = await session.scalar(select(User).where(func.lower(User.email) == email))
    ok = await _passwords(request).verify(form.password, user.password_hash if user else None)
    if not ok or user is None:
        await throttle.failed(email, address)
        # Who was tried is the account's id when it exists; an unknown email is not stored.
        audit.record(session, audit.Action.login_failed, actor=None, request=request,
                     target_type="user", target_id=user.id if user else None)
        await session.commit()
        raise ApiError(401, BAD_LOGIN, "bad_credentials")
    await throttle.succeeded(email)
    audit.record(session, audit.Action.login_succeeded, actor=user.id, request=request,
                 target_type="user", target_id=user.id)
    await session.execute(delete(RefreshToken).where(
        RefreshToken.user_id == user.id, RefreshToken.expires_at < func.now()))
    pair = await _issue(session, settings, user.id, user.token_generation)
    await session.commit()
    return pair


@router.post("/auth/refresh", response_model=TokenPair,
             summary="Exchange a refresh token for a new token pair (the old one stops working)")
async def refresh(body: RefreshIn, session: SessionDep, settings: SettingsDep,
                  request: Request) -> TokenPair:
    claims = _refresh_claims(settings, body.refresh_token)
    if claims.jti is None:
        raise ApiError(401, BAD_REFRESH)
    user = await session.get(User, claims.user_id)
    if user is None or claims.generation != user.token_generation:
        raise ApiError(401, BAD_REFRESH)
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.id == claims.jti,
                                   RefreshToken.user_id == claims.user_id).with_for_update())
    if row is None:
        if not claims.legacy:
            raise ApiError(401, BAD_REFRESH)
        # Issued before refresh tokens were stored (migration 0003): it starts its family now,
        # used, so that it too works once.
        row = RefreshToken(id=claims.jti, user_id=user.id, family_id=uuid.uuid4(),
                           expires_at=datetime.fromtimestamp(claims.expires_at, UTC))
        session.add(row)
        try:
            await session.flush()
        except IntegrityError as exc:  # the same legacy token, refreshed twice at once
            await session.rollback()
            raise ApiError(401, REUSED, "refresh_reused") from exc
    elif row.used_at is not None or row.revoked_at is not None:
        await _revoke_family(session, row.family_id)
        audit.record(session, audit.Action.tokens_revoked, actor=user.id, request=request,
                     target_type="user", target_id=user.id, reason="refresh_reused",
                     family=str(row.family_id))
        await session.commit()
        log.warning("refresh token reuse for user %s: family %s revoked", user.id, row.family_id)
        raise ApiError(401, REUSED, "refresh_reused")
    row.used_at = datetime.now(UTC)
    pair = await _issue(session, settings, user.id, user.token_generation, row.family_id)
    await session.commit()
    return pair


@router.post("/auth/logout", status_code=204,
             summary="Log out: revoke the given refresh token and every one of its family")
async def logout(body: RefreshIn, session: SessionDep, settings: SettingsDep,
                 request: Request) -> Response:
    claims = _refresh_claims(settings, body.refresh_token)
    family = await session.scalar(
        select(RefreshToken.family_id).where(RefreshToken.id == claims.jti,
                                             RefreshToken.user_id == claims.user_id))
    if family is not None:
        await _revoke_family(session, family)
        audit.record(session, audit.Action.tokens_revoked, actor=claims.user_id,
                     request=request, target_type="user", target_id=claims.user_id,
                     reason="logout", family=str(family))
    elif claims.legacy and claims.jti is not None:
        # Issued before refresh tokens were stored: stored now, revoked, so it can't refresh.
        session.add(RefreshToken(id=claims.jti, user_id=claims.user_id, family_id=uuid.uuid4(),
                                 expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
                                 revoked_at=datetime.now(UTC)))
    try:
        await session.commit()
    except IntegrityError:  # its user is gone, or it was stored meanwhile: nothing to revoke
        await session.rollback()
    return Response(status_code=204)


@router.get("/me", response_model=UserPublic, summary="The authenticated user")
async def me(user: CurrentUser) -> User:
    return user


@router.post("/me/password", response_model=TokenPair,
             summary="Change my password: every earlier token stops working; new tokens",
             responses={429: {"description": "Too many wrong current passwords."}})
async def change_password(body: PasswordChangeIn, user: CurrentUser, session: SessionDep,
                          settings: SettingsDep, request: Request) -> TokenPair:
    if user.password_hash is None:
        raise ApiError(409, "This account signs in through its host website: it has no "
                       "password here.", "no_password")
    account, address = (user.email or str(user.id)), _address(request)
    throttle = _throttle(request)
    await throttle.check(account, address)
    passwords = _passwords(request)
    if not await passwords.verify(body.current_password, user.password_hash):
        await throttle.failed(account, address)
        raise ApiError(403, "The current password is wrong.", "bad_credentials")
    await throttle.succeeded(account)
    new_hash = await passwords.hash(body.new_password)
    generation = await session.scalar(
        update(User).where(User.id == user.id)
        .values(password_hash=new_hash, token_generation=User.token_generation + 1)
        .returning(User.token_generation))
    assert generation is not None
    await session.execute(
        update(RefreshToken).where(RefreshToken.user_id == user.id,
                                   RefreshToken.revoked_at.is_(None))
        .values(revoked_at=func.now()))
    pair = await _issue(session, settings, user.id, generation)
    audit.record(session, audit.Action.tokens_revoked, actor=user.id, request=request,
                 target_type="user", target_id=user.id, reason="password_changed")
    await session.commit()
    bus = getattr(request.app.state, "bus", None)
    if bus is not None:
        try:  # the user's open sockets, on every instance, close with 4401
            await bus.signal({"type": "tokens.revoked", "user_id": str(user.id),
                              "generation": generation})
        except Exception as exc:  # their tokens are refused anyway at the next auth
            log.warning("could not signal revoked tokens of %s: %s", user.id, exc)
    return pair
