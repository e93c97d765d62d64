"""The supervisor's hub: receives pushes from many kiosks, imports exports, shows the fleet.

One code path on SQLite (the embedded default, ``hub.db`` in ``KIOSK_DATA_DIR``) and on
PostgreSQL (past one machine), through SQLAlchemy Core and Alembic migrations:

- ``database``: the URL, the pooled engine, durability settings of both engines.
- ``schema``: the tables; ``migrate`` + ``migrations/``: versioned migrations, run from Python.
- ``store``: ``HubStore``, devices and tokens, batches, summary numbers.
- ``ingest``: the idempotent upsert of one batch (``INSERT ... ON CONFLICT``).
- ``auth``: kiosk bearer tokens, supervisor basic auth, security headers.
- ``app``: the Flask app (``kiosk hub serve``); ``fleet``: which kiosk needs a visit.
- ``exports``: the CSV download; ``importer``: ``kiosk hub import`` of USB-stick exports.
- ``copy``: ``kiosk hub copy`` from one database to another.

Nothing on the kiosk imports this package: the kiosk's side of sync is ``kiosk.sync``.
"""
