"""The kiosk's side of getting results to the supervisor: push client, exports, FHIR.

- ``payload``: the wire format of one result (no source path, no patient reference).
- ``client``: ``push(store, config)`` sends the outbox to the hub in acknowledged batches.
- ``export``: JSONL / CSV / SQLite / FHIR files with a manifest, for a USB stick.
- ``fhir``: results as FHIR R4 DiagnosticReport + Observation + Device in a Bundle.

What this package does not hold: the hub itself (``kiosk.hub``, the supervisor's server).
"""
