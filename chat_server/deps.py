"""FastAPI dependencies shared by the routes: settings, database session, current user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.auth import AuthError, authenticate
from chat_server.db import Database
from chat_server.errors import ApiError
from chat_server.models import User
from chat_server.settings import Settings

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_database(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def get_session(
    db: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    async with db.session() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_current_user(
    session: SessionDep, settings: SettingsDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    if not token:
        raise ApiError(401, "Not authenticated: send `Authorization: Bearer <access token>`.")
    try:
        identity = await authenticate(session, settings, token)
    except AuthError as exc:
        raise ApiError(401, exc.message) from exc
    return identity.user


CurrentUser = Annotated[User, Depends(get_current_user)]
