"""Courses: user roles, courses with a tutor set-up, invites, enrollments, course materials and
conversations, and the append-only audit log.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _uuid(name: str, target: str | None = None, ondelete: str = "CASCADE",
          nullable: bool = False, primary_key: bool = False) -> sa.Column:
    fk = [sa.ForeignKey(target, ondelete=ondelete)] if target else []
    return sa.Column(name, pg.UUID(as_uuid=True), *fk, nullable=nullable,
                     primary_key=primary_key)


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(),
                     nullable=False)


def upgrade() -> None:
    op.add_column("users", sa.Column("role", sa.String(20), nullable=False,
                                     server_default="learner"))
    op.create_check_constraint("ck_users_role", "users",
                               "role in ('learner', 'instructor', 'admin')")
    op.create_table(
        "courses",
        _uuid("id", primary_key=True),
        # RESTRICT: an owner's account can't be deleted while it owns courses (DELETE /me).
        _uuid("owner_id", "users.id", ondelete="RESTRICT"),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("language", sa.String(8), nullable=False, server_default="en"),
        sa.Column("instructions", sa.Text(), nullable=False, server_default=""),
        sa.Column("socratic", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("provider", sa.String(50)),
        sa.Column("model", sa.String(100)),
        sa.Column("allow_own_materials", sa.Boolean(), nullable=False,
                  server_default=sa.false()),
        sa.Column("share_conversations", sa.Boolean(), nullable=False,
                  server_default=sa.false()),
        _now("created_at"),
        _now("updated_at"),
    )
    op.create_index("ix_courses_owner_id", "courses", ["owner_id"])
    op.create_table(
        "course_invites",
        _uuid("id", primary_key=True),
        _uuid("course_id", "courses.id"),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        _uuid("created_by", "users.id", ondelete="SET NULL", nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("max_seats", sa.Integer()),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        _now("created_at"),
    )
    op.create_index("ix_course_invites_course_id", "course_invites", ["course_id"])
    op.create_table(
        "enrollments",
        _uuid("course_id", "courses.id", primary_key=True),
        _uuid("user_id", "users.id", primary_key=True),
        sa.Column("via", sa.String(10), nullable=False),
        _uuid("invite_id", "course_invites.id", ondelete="SET NULL", nullable=True),
        sa.Column("shared_conversations", sa.Boolean(), nullable=False,
                  server_default=sa.false()),
        _now("created_at"),
    )
    op.create_index("ix_enrollments_user_id", "enrollments", ["user_id"])
    op.create_index("ix_enrollments_invite_id", "enrollments", ["invite_id"])

    op.add_column("materials", _uuid("course_id", "courses.id", nullable=True))
    op.create_index("ix_materials_course_id", "materials", ["course_id"],
                    postgresql_where=sa.text("course_id is not null"))
    # The same content may be in a learner's own library and in a course of theirs.
    op.drop_constraint("uq_materials_user_content_hash", "materials", type_="unique")
    op.create_unique_constraint("uq_materials_owner_content_hash", "materials",
                                ["user_id", "course_id", "content_hash"],
                                postgresql_nulls_not_distinct=True)
    op.add_column("chunks", sa.Column("course_id", pg.UUID(as_uuid=True)))
    op.create_index("ix_chunks_course_id", "chunks", ["course_id"],
                    postgresql_where=sa.text("course_id is not null"))
    # A course's conversations outlive the course as the learner's own (SET NULL).
    op.add_column("conversations", _uuid("course_id", "courses.id", ondelete="SET NULL",
                                         nullable=True))
    op.create_index("ix_conversations_course_id", "conversations", ["course_id"],
                    postgresql_where=sa.text("course_id is not null"))

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        _now("at"),
        # No foreign key: the record outlives the account (an account deletion is recorded).
        sa.Column("actor_id", pg.UUID(as_uuid=True)),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target_type", sa.String(20)),
        sa.Column("target_id", sa.String(64)),
        sa.Column("address", sa.String(64)),
        sa.Column("detail", pg.JSONB()),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor_at", "audit_log", ["actor_id", "at"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])
    # Append-only: the database itself refuses to change or remove an entry.
    op.execute("""
        create function audit_log_append_only() returns trigger language plpgsql as $$
        begin
            raise exception 'audit_log is append-only';
        end $$""")
    op.execute("create trigger audit_log_append_only before update or delete on audit_log "
               "for each row execute function audit_log_append_only()")


def downgrade() -> None:
    op.drop_table("audit_log")
    op.execute("drop function if exists audit_log_append_only()")
    op.drop_index("ix_conversations_course_id", "conversations")
    op.drop_column("conversations", "course_id")
    op.drop_index("ix_chunks_course_id", "chunks")
    op.drop_column("chunks", "course_id")
    op.drop_constraint("uq_materials_owner_content_hash", "materials", type_="unique")
    op.execute("delete from materials where course_id is not null")
    op.create_unique_constraint("uq_materials_user_content_hash", "materials",
                                ["user_id", "content_hash"])
    op.drop_index("ix_materials_course_id", "materials")
    op.drop_column("materials", "course_id")
    op.drop_table("enrollments")
    op.drop_table("course_invites")
    op.drop_table("courses")
    op.drop_constraint("ck_users_role", "users", type_="check")
    op.drop_column("users", "role")
