"""Calibration of each result as its kiosk sent it: whether the probabilities were calibrated
(NULL: sent by a kiosk older than the field, or received before this migration) and which
calibration (kind "site" or "factory", date; its id was already in ``calibration_id``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("calibrated", sa.Boolean))
    op.add_column("results", sa.Column("calibration_kind", sa.Text))
    op.add_column("results", sa.Column("calibration_date", sa.Text))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN on both engines (SQLite 3.35 or newer), not a batch copy:
    # copying ``results`` on SQLite would drop the table that findings and diagnoses refer to.
    op.drop_column("results", "calibration_date")
    op.drop_column("results", "calibration_kind")
    op.drop_column("results", "calibrated")
