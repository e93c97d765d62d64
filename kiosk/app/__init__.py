"""The appliance: composition of the stages, the service threads, the server, systemd glue."""
