"""Lightbox kiosk: photograph a chest X-ray film on a lightbox, classify it on-device,
calibrate, store and sync the result."""

__version__ = "0.1.0"
