"""The study task: generate a material's study tools through chat_server.study.jobs."""

from __future__ import annotations

import uuid
from functools import partial

from taskiq import Context, TaskiqDepends, async_shared_broker

from chat_server.jobs import STUDY_MATERIAL, Runtime
from chat_server.materials.ingest import publish
from chat_server.study.jobs import Deps, generate


def deps(runtime: Runtime) -> Deps:
    return Deps(runtime.settings, runtime.db, partial(publish, runtime))


# A shared task, like the ingestion task: registered by name for whichever broker runs it.
@async_shared_broker.task(task_name=STUDY_MATERIAL)
async def study_material(material_id: str, context: Context = TaskiqDepends()) -> None:
    await generate(deps(context.state.runtime), uuid.UUID(material_id))
