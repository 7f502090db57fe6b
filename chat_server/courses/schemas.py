"""Course REST schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chat_server.text import SafeStr

CourseLanguage = Literal["en", "ru"]


class CourseCreate(BaseModel):
    title: SafeStr = Field(min_length=1, max_length=200)
    description: SafeStr = Field("", max_length=10_000)
    language: CourseLanguage = "en"


class TutorSetup(BaseModel):
    """The course's tutor: extra instructions, Socratic or not, provider/model, and whether
    answers may use the learner's own materials too."""

    instructions: SafeStr = Field("", max_length=10_000)
    socratic: bool = True
    provider: SafeStr | None = Field(None, max_length=50)
    model: SafeStr | None = Field(None, max_length=100)
    allow_own_materials: bool = False


class CourseUpdate(BaseModel):
    title: SafeStr | None = Field(None, min_length=1, max_length=200)
    description: SafeStr | None = Field(None, max_length=10_000)
    language: CourseLanguage | None = None
    instructions: SafeStr | None = Field(None, max_length=10_000)
    socratic: bool | None = None
    provider: SafeStr | None = Field(None, max_length=50)
    model: SafeStr | None = Field(None, max_length=100)
    allow_own_materials: bool | None = None
    share_conversations: bool | None = Field(
        None, description="Instructors may read the course conversations of learners who "
        "enroll from now on (they are told so before they enroll).")
    owner_id: uuid.UUID | None = Field(
        None, description="Hand the course over to another instructor (admins only).")


class CoursePublic(BaseModel):
    """A course as its viewer may see it: `tutor` (the set-up) only for who teaches it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str
    language: str
    my_role: Literal["owner", "admin", "learner"]
    allow_own_materials: bool
    share_conversations: bool
    socratic: bool
    material_count: int = 0
    tutor: TutorSetup | None = None
    created_at: datetime


class InviteCreate(BaseModel):
    expires_in_s: int | None = Field(7 * 86_400, ge=60, le=366 * 86_400,
                                     description="Seconds until it expires (null: never).")
    max_seats: int | None = Field(None, ge=1, le=100_000,
                                  description="Learners it may enroll at most (null: any).")


class InvitePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    course_id: uuid.UUID
    expires_at: datetime | None
    max_seats: int | None
    seats_used: int = 0
    revoked_at: datetime | None
    created_at: datetime


class InviteCreated(InvitePublic):
    code: str = Field(description="Shown once: only its hash is stored.")
    url: str = Field(description="The widget page that enrolls with this code.")


class CodeIn(BaseModel):
    code: SafeStr = Field(min_length=8, max_length=100)


class InvitePreview(BaseModel):
    """What a learner is shown before enrolling."""

    course_id: uuid.UUID
    title: str
    description: str
    language: str
    share_conversations: bool
    allow_own_materials: bool


class EnrollmentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    course_id: uuid.UUID
    user_id: uuid.UUID
    via: str
    shared_conversations: bool
    created_at: datetime


class LearnerPublic(EnrollmentPublic):
    display_name: str | None
    email: str | None


class DayCount(BaseModel):
    day: str
    questions: int
    uncovered: int


class MaterialCount(BaseModel):
    material_id: uuid.UUID
    title: str
    citations: int


class CourseStats(BaseModel):
    """Aggregates only: never a learner's text."""

    learners: int
    questions: int
    uncovered: int = Field(description="Questions whose answer cited no course material.")
    per_day: list[DayCount]
    most_cited: list[MaterialCount]
