"""Getting results from kiosks to the supervisor: push client, hub, exports, FHIR.

- ``payload``: the wire format of one result (no source path, no patient reference).
- ``client``: ``push(store, config)`` sends the outbox to the hub in acknowledged batches.
- ``hub``: the hub's database and Flask app (``kiosk hub serve``).
- ``export``: JSONL / CSV / SQLite / FHIR files with a manifest, and ``kiosk hub import``.
- ``fhir``: results as FHIR R4 DiagnosticReport + Observation + Device in a Bundle.
- ``hub_bench``: how many results per second one hub ingests, and its database size.
"""
