"""Alembic environment of the hub: always run programmatically by ``kiosk.hub.migrate``.

The caller hands over an open connection inside its transaction
(``config.attributes["connection"]``), so the migrations and Alembic's own bookkeeping
commit or roll back together. There is no ``alembic.ini`` and no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context

from kiosk.hub.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run hub migrations with `kiosk hub migrate`, not the alembic command")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
