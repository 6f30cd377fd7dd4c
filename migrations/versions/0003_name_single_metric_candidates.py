"""candidates of a job with one named scorer go by that scorer's name

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Until now a job with one scorer stored its candidates under "score", as
scikit-learn's cv_results_ names it, whatever the scorer; the leaderboard
then ranked accuracy against log loss. New jobs store the scorer's name
where scoring named one; this renames what older jobs stored.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _named_scorers() -> list[tuple[str, str]]:
    """(job id, scorer name) of every job whose scoring named one scorer."""
    conn = op.get_bind()
    out = []
    for job_id, request in conn.execute(sa.text("SELECT id, request FROM jobs")):
        if isinstance(request, str):  # SQLite hands JSON back as text
            request = json.loads(request)
        scoring = (request or {}).get("scoring")
        if isinstance(scoring, str) and scoring != "score":
            out.append((job_id, scoring))
    return out


def _rename(old: str | None, new: str | None) -> None:
    conn = op.get_bind()
    for job_id, name in _named_scorers():
        conn.execute(
            sa.text("UPDATE candidates SET metric = :new WHERE job_id = :job AND metric = :old"),
            {"new": new or name, "old": old or name, "job": job_id},
        )


def upgrade() -> None:
    _rename("score", None)


def downgrade() -> None:
    _rename(None, "score")
