"""Fakes of hardware libraries, mimicking their real APIs; only tests import them."""
