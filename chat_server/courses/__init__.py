"""Courses: roles, courses and their tutor set-up, enrollment, the audit log, account life."""
