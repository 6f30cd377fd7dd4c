"""a candidate's dict-valued parameter is keyed with its pairs in one order

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

A parameter value holding a Python dict (``class_weight={0: 1, 1: 5}``,
written ``{"dict": [[0, 1], [1, 5]]}``) was stored, and matched by
``/v1/results``, with its pairs in the order the job's grid wrote them: the
same dict written in another order was not found. New rows sort the pairs
by their key's JSON; this re-keys the rows stored before. The function is
this revision's own: a later change to the service's must not change what
this revision did.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _sorted_pairs(value: Any) -> Any:
    if isinstance(value, list):
        return [_sorted_pairs(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _sorted_pairs(v) for k, v in value.items()}
    pairs = out.get("dict")
    if set(out) == {"dict"} and isinstance(pairs, list):
        if all(isinstance(p, list) and len(p) == 2 for p in pairs):
            out["dict"] = sorted(pairs, key=lambda p: json.dumps(p[0], sort_keys=True))
    return out


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT job_id, idx, name, value FROM candidate_params WHERE value LIKE '%\"dict\"%'"
        )
    ).all()
    for job_id, idx, name, value in rows:
        text = _text(_sorted_pairs(json.loads(value)))
        if text != value:
            conn.execute(
                sa.text(
                    "UPDATE candidate_params SET value = :value, value_key = :key "
                    "WHERE job_id = :job AND idx = :idx AND name = :name"
                ),
                {
                    "value": text,
                    "key": hashlib.sha256(text.encode()).hexdigest(),
                    "job": job_id,
                    "idx": idx,
                    "name": name,
                },
            )


def downgrade() -> None:
    """Nothing to undo: sorted pairs are a form the older service stored too
    (a grid writing them in that order), and it matches them as it did."""
