"""Pixels: decoding and encoding files, sRGB <-> linear light, quadrilateral geometry."""
