"""Research, benchmarks and training: never imported by the appliance."""
