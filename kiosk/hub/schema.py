"""The hub's tables as SQLAlchemy Core objects: what queries are written against.

This is the schema at the newest migration; the migrations in ``kiosk/hub/migrations/versions``
create it, step by step, on SQLite and PostgreSQL (a test compares the two on both engines).
Text columns hold what kiosks sent, exactly (times stay ISO text in the kiosk's clock, next to
the hub's own ``received_at``); nothing is converted to engine-specific types.

What this module does not do: create tables (``migrate``), or read and write rows (``store``).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)

metadata = MetaData()

devices = Table(
    "devices",
    metadata,
    Column("name", Text, primary_key=True),
    Column("token_hash", Text),
    Column("created_at", Text),
    Column("last_contact_at", Text),
    Column("reported_pending", Integer),
    Column("reported_failed", Integer),
    Column("reported_sent", Integer),
    Column("last_kiosk_time", Text),
    Column("calibration_id", Text),
    # Added in 0002: what the kiosk runs, as of its last push.
    Column("kiosk_version", Text),
    Column("model_id", Text),
    Column("model_version", Text),
    Index("idx_devices_token_hash", "token_hash"),
)

results = Table(
    "results",
    metadata,
    Column("id", Text, primary_key=True),
    Column("device_id", Text, ForeignKey("devices.name"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("received_at", Text, nullable=False),
    Column("updated_at", Text),
    Column("via", Text),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("input_kind", Text),
    Column("model_id", Text),
    Column("model_version", Text),
    Column("model_sha256", Text),
    Column("calibration_id", Text),
    Column("quality", Text),
    Column("timings_ms", Text),
    Column("corners", Text),
    Column("content_sha256", Text),
    Column("thumbnail_jpeg", LargeBinary),
    # Added in 0003: whether the probabilities were calibrated (NULL: the kiosk did not say,
    # being older than the field) and the calibration's kind ("site", "factory") and date.
    Column("calibrated", Boolean),
    Column("calibration_kind", Text),
    Column("calibration_date", Text),
    Index("idx_results_device_id_created_at", "device_id", "created_at"),
    Index("idx_results_received_at", "received_at"),
)

findings = Table(
    "findings",
    metadata,
    Column("result_id", Text, ForeignKey("results.id")),
    Column("code", Text),
    Column("label", Text),
    Column("raw", Double),
    Column("probability", Double),
    Column("threshold", Double),
    Column("positive", Integer),
    PrimaryKeyConstraint("result_id", "code"),
    Index("idx_findings_code_positive", "code", "positive"),
)

diagnoses = Table(
    "diagnoses",
    metadata,
    Column("result_id", Text, ForeignKey("results.id")),
    Column("code", Text),
    Column("label", Integer),
    Column("confirmed_by", Text),
    Column("confirmed_at", Text),
    PrimaryKeyConstraint("result_id", "code"),
)

ingests = Table(
    "ingests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Text, ForeignKey("devices.name")),
    Column("received_at", Text),
    Column("via", Text),
    Column("results", Integer),
    Column("inserted", Integer),
    Column("updated", Integer),
    Column("unchanged", Integer),
    Column("rejected", Integer),
    Column("kiosk_sent_at", Text),
    Index("idx_ingests_device_id_received_at", "device_id", "received_at"),
)

imports = Table(
    "imports",
    metadata,
    Column("data_sha256", Text, primary_key=True),
    Column("imported_at", Text),
    Column("device_id", Text),
    Column("format", Text),
    Column("results", Integer),
    Column("manifest", Text),
)

settings = Table(
    "settings",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text),
)

# In foreign-key order: a table only refers to tables before it (copy and delete rely on it).
TABLES_IN_ORDER = (settings, devices, results, findings, diagnoses, ingests, imports)
