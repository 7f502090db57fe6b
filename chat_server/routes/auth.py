"""Registration, login (OAuth2 password form), token refresh, current user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from chat_server.auth import AuthError, create_token, decode_token, hash_password, verify_password
from chat_server.deps import CurrentUser, SessionDep, SettingsDep
from chat_server.errors import ApiError
from chat_server.models import User
from chat_server.schemas import RefreshIn, RegisterIn, TokenPair, UserPublic
from chat_server.settings import Settings

router = APIRouter(tags=["auth"])

BAD_LOGIN = "Incorrect email or password."


def _pair(settings: Settings, user: User) -> TokenPair:
    return TokenPair(
        access_token=create_token(settings, user.id, "access"),
        refresh_token=create_token(settings, user.id, "refresh"),
        expires_in=settings.access_token_ttl_s,
    )


@router.post("/auth/register", status_code=201, response_model=UserPublic,
             summary="Create an account with email and password")
async def register(body: RegisterIn, session: SessionDep) -> User:
    user = User(email=body.email.lower(), password_hash=hash_password(body.password),
                display_name=body.display_name)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise ApiError(409, "An account with this email already exists.", "email_taken") from exc
    return user


@router.post("/auth/token", response_model=TokenPair,
             summary="Log in (OAuth2 password form: username = email) and get tokens")
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep,
    settings: SettingsDep,
) -> TokenPair:
    user = await session.scalar(select(User).where(func.lower(User.email) == form.username.lower()))
    if not verify_password(form.password, user.password_hash if user else None) or user is None:
        raise ApiError(401, BAD_LOGIN, "bad_credentials")
    return _pair(settings, user)


@router.post("/auth/refresh", response_model=TokenPair,
             summary="Exchange a refresh token for a new token pair")
async def refresh(body: RefreshIn, session: SessionDep, settings: SettingsDep) -> TokenPair:
    try:
        user_id, _ = decode_token(settings, body.refresh_token, "refresh")
    except AuthError as exc:
        raise ApiError(401, "Invalid or expired refresh token.") from exc
    user = await session.get(User, user_id)
    if user is None:
        raise ApiError(401, "Invalid or expired refresh token.")
    return _pair(settings, user)


@router.get("/me", response_model=UserPublic, summary="The authenticated user")
async def me(user: CurrentUser) -> User:
    return user
