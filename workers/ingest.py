"""The ingestion task: one material through chat_server.materials.ingest."""

from __future__ import annotations

import uuid

from taskiq import Context, TaskiqDepends, async_shared_broker

from chat_server.jobs import INGEST_MATERIAL, Runtime, request_study
from chat_server.materials.ingest import ingest


# A shared task: registered by name for whichever broker the process runs (the in-process one
# of `tutorhub serve`, or the Redis one of `tutorhub worker`), not bound to one instance.
@async_shared_broker.task(task_name=INGEST_MATERIAL)
async def ingest_material(material_id: str, context: Context = TaskiqDepends()) -> None:
    runtime: Runtime = context.state.runtime
    mid = uuid.UUID(material_id)
    if await ingest(runtime, mid) and runtime.settings.study_on_ready:
        await request_study(runtime, context.broker, mid)
