"""Materials: list, inspect, delete. Uploads are added by the ingestion routes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Response
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.deps import CurrentUser, SessionDep
from chat_server.errors import ApiError
from chat_server.models import Material
from chat_server.schemas import MaterialPublic

router = APIRouter(prefix="/materials", tags=["materials"])


async def get_owned_material(
    session: AsyncSession, user_id: uuid.UUID, material_id: uuid.UUID
) -> Material:
    material = await session.scalar(
        select(Material).where(Material.id == material_id, Material.user_id == user_id)
    )
    if material is None:
        raise ApiError(404, "Material not found.")
    return material


@router.get("", response_model=list[MaterialPublic], summary="List my materials")
async def list_materials(
    user: CurrentUser, session: SessionDep,
    limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0),
) -> list[Material]:
    rows = await session.scalars(
        select(Material).where(Material.user_id == user.id)
        .order_by(Material.created_at.desc()).limit(limit).offset(offset)
    )
    return list(rows)


@router.get("/{material_id}", response_model=MaterialPublic,
            summary="A material with its ingestion status and progress")
async def get_material(material_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Material:
    return await get_owned_material(session, user.id, material_id)


@router.delete("/{material_id}", status_code=204, summary="Delete a material and its chunks")
async def delete_material(
    material_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    material = await get_owned_material(session, user.id, material_id)
    await session.execute(
        delete(Material).where(Material.id == material.id, Material.user_id == user.id)
    )
    await session.commit()
    return Response(status_code=204)
