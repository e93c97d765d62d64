"""The hub's first schema, as the SQLite-only hub created it (a hub.db from then is stamped
at this revision and upgraded from here).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("token_hash", sa.Text),
        sa.Column("created_at", sa.Text),
        sa.Column("last_contact_at", sa.Text),
        sa.Column("reported_pending", sa.Integer),
        sa.Column("reported_failed", sa.Integer),
        sa.Column("reported_sent", sa.Integer),
        sa.Column("last_kiosk_time", sa.Text),
        sa.Column("calibration_id", sa.Text),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.name"), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("received_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text),
        sa.Column("via", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("input_kind", sa.Text),
        sa.Column("model_id", sa.Text),
        sa.Column("model_version", sa.Text),
        sa.Column("model_sha256", sa.Text),
        sa.Column("calibration_id", sa.Text),
        sa.Column("quality", sa.Text),
        sa.Column("timings_ms", sa.Text),
        sa.Column("corners", sa.Text),
        sa.Column("content_sha256", sa.Text),
        sa.Column("thumbnail_jpeg", sa.LargeBinary),
    )
    op.create_index("idx_results_device_id_created_at", "results", ["device_id", "created_at"])
    op.create_index("idx_results_received_at", "results", ["received_at"])
    op.create_table(
        "findings",
        sa.Column("result_id", sa.Text, sa.ForeignKey("results.id")),
        sa.Column("code", sa.Text),
        sa.Column("label", sa.Text),
        sa.Column("raw", sa.Double),
        sa.Column("probability", sa.Double),
        sa.Column("threshold", sa.Double),
        sa.Column("positive", sa.Integer),
        sa.PrimaryKeyConstraint("result_id", "code"),
    )
    op.create_index("idx_findings_code_positive", "findings", ["code", "positive"])
    op.create_table(
        "diagnoses",
        sa.Column("result_id", sa.Text, sa.ForeignKey("results.id")),
        sa.Column("code", sa.Text),
        sa.Column("label", sa.Integer),
        sa.Column("confirmed_by", sa.Text),
        sa.Column("confirmed_at", sa.Text),
        sa.PrimaryKeyConstraint("result_id", "code"),
    )
    op.create_table(
        "ingests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.name")),
        sa.Column("received_at", sa.Text),
        sa.Column("via", sa.Text),
        sa.Column("results", sa.Integer),
        sa.Column("inserted", sa.Integer),
        sa.Column("updated", sa.Integer),
        sa.Column("unchanged", sa.Integer),
        sa.Column("rejected", sa.Integer),
        sa.Column("kiosk_sent_at", sa.Text),
    )
    op.create_index("idx_ingests_device_id_received_at", "ingests", ["device_id", "received_at"])
    op.create_table(
        "imports",
        sa.Column("data_sha256", sa.Text, primary_key=True),
        sa.Column("imported_at", sa.Text),
        sa.Column("device_id", sa.Text),
        sa.Column("format", sa.Text),
        sa.Column("results", sa.Integer),
        sa.Column("manifest", sa.Text),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text),
    )


def downgrade() -> None:
    for table in ("settings", "imports", "ingests", "diagnoses", "findings", "results", "devices"):
        op.drop_table(table)
