"""Fleet view: what each kiosk runs (software, model) as of its last push; token lookup by
index instead of comparing every device's hash.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("kiosk_version", sa.Text))
    op.add_column("devices", sa.Column("model_id", sa.Text))
    op.add_column("devices", sa.Column("model_version", sa.Text))
    op.create_index("idx_devices_token_hash", "devices", ["token_hash"])


def downgrade() -> None:
    op.drop_index("idx_devices_token_hash", "devices")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("model_version")
        batch.drop_column("model_id")
        batch.drop_column("kiosk_version")
