"""Things on top of the lightbox and the film: clips, tape, magnets, dust, room glare."""

from __future__ import annotations

import math

import numpy as np

from kiosk.lab.photoscene.camera import _lowres_field
from kiosk.lab.photoscene.geometry import _film_to_plane
from kiosk.lab.photoscene.lightbox import _Canvas, _disc, _lightbox_rects, _poly
from kiosk.lab.photoscene.spec import SceneSpec


def _draw_rig_items(
    spec: SceneSpec, cv: _Canvas, tau: np.ndarray, orefl: np.ndarray, lay: np.random.Generator
) -> None:
    """Clips (on the film's top edge or the panel's) and dust: they stay for the rig reference."""
    if spec.kind == "empty":
        bays, _ = _lightbox_rects(spec)
        left, right = bays[0][0], bays[-1][2]
        top_edge = [
            np.array(
                [left + (k + 0.5) * (right - left) / spec.clips + lay.uniform(-3, 3), bays[0][1]]
            )
            for k in range(spec.clips)
        ]
        angle = 0.0
    else:
        f2p = _film_to_plane(spec)
        top_edge = []
        for k in range(spec.clips):
            uu = (k + 0.5) * spec.film_w_cm / spec.clips + lay.uniform(-2.0, 2.0)
            p = f2p @ np.array([uu, 0.0, 1.0])
            top_edge.append(p[:2])
        angle = math.radians(spec.film_rot_deg)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    for p in top_edge:
        w, h = lay.uniform(2.0, 3.0), lay.uniform(1.5, 2.5)
        off = lay.uniform(-0.3, 0.5)  # straddles the edge, mostly above it
        box = np.array([[-w / 2, -h + off], [w / 2, -h + off], [w / 2, off], [-w / 2, off]])
        pts = cv.px(box @ rot.T + p)
        _poly(tau, pts, 0.0)
        _poly(orefl, pts, float(lay.uniform(0.1, 0.4)))
        # Specular ridge of the bent metal.
        ridge = np.array(
            [
                [-w / 2, -0.55 * h + off],
                [w / 2, -0.55 * h + off],
                [w / 2, -0.4 * h + off],
                [-w / 2, -0.4 * h + off],
            ]
        )
        _poly(orefl, cv.px(ridge @ rot.T + p), float(lay.uniform(0.5, 1.0)))
    if spec.kind == "empty":
        _draw_magnets(spec, cv, tau, orefl, lay)
    # Dust sits on the panel/film surface; small, darkish and partly translucent.
    bays, _ = _lightbox_rects(spec)
    for _ in range(spec.dust):
        p = np.array([lay.uniform(bays[0][0], bays[-1][2]), lay.uniform(bays[0][1], bays[0][3])])
        r = lay.uniform(0.03, 0.12) * cv.res
        c = cv.px(p[None])[0]
        _disc(tau, c, max(r, 0.6), float(lay.uniform(0.1, 0.6)))
        _disc(orefl, c, max(r, 0.6), 0.05)


def _draw_magnets(
    spec: SceneSpec, cv: _Canvas, tau: np.ndarray, orefl: np.ndarray, lay: np.random.Generator
) -> None:
    if spec.kind == "empty":
        bays, _ = _lightbox_rects(spec)
        anchors = [
            np.array([lay.uniform(bays[0][0], bays[-1][2]), lay.uniform(bays[0][1], bays[0][3])])
            for _ in range(spec.magnets)
        ]
    else:
        f2p = _film_to_plane(spec)
        anchors = []
        for _ in range(spec.magnets):
            # On the film border, where they hold it: a corner or the middle of a side.
            uu = spec.film_w_cm * float(lay.choice([0.0, 0.5, 1.0])) + lay.uniform(-1.0, 1.0)
            vv = spec.film_h_cm * float(lay.choice([0.0, 0.5, 1.0])) + lay.uniform(-1.0, 1.0)
            anchors.append((f2p @ np.array([uu, vv, 1.0]))[:2])
    for p in anchors:
        r = lay.uniform(1.0, 2.0) * cv.res
        c = cv.px(p[None])[0]
        _disc(tau, c, r, 0.0)
        _disc(orefl, c, r, float(lay.uniform(0.05, 0.6)))


def _draw_film_items(
    spec: SceneSpec, cv: _Canvas, tau: np.ndarray, orefl: np.ndarray, lay: np.random.Generator
) -> None:
    """Tape and magnets holding the film: removed with the film for the rig reference."""
    f2p = _film_to_plane(spec)
    for _ in range(spec.tape):
        uu = spec.film_w_cm * float(lay.choice([0.0, 1.0])) + lay.uniform(-0.5, 0.5)
        vv = spec.film_h_cm * float(lay.choice([0.0, 0.3, 0.7, 1.0])) + lay.uniform(-0.5, 0.5)
        centre = (f2p @ np.array([uu, vv, 1.0]))[:2]
        ln, wd = lay.uniform(5.0, 10.0), lay.uniform(2.0, 2.6)
        a = math.radians(lay.uniform(-60.0, 60.0))
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        box = np.array([[-ln / 2, -wd / 2], [ln / 2, -wd / 2], [ln / 2, wd / 2], [-ln / 2, wd / 2]])
        pts = cv.px(box @ rot.T + centre)
        _poly(tau, pts, float(lay.uniform(0.8, 0.93)))
        _poly(orefl, pts, float(lay.uniform(0.03, 0.12)))  # slightly glossy
    _draw_magnets(spec, cv, tau, orefl, lay)


def _glare_shape(
    spec: SceneSpec, h: int, w: int, target: np.ndarray | None, lay: np.random.Generator
) -> np.ndarray | None:
    """Sum of soft specular spots and elongated bands (peak 1 each, times a random share)."""
    if spec.glare == "none":
        return None
    if target is not None:  # reflections only matter where the glossy film is
        lo, hi = target.min(axis=0), target.max(axis=0)
        span = hi - lo
        lo, hi = lo - 0.2 * span, hi + 0.2 * span
        # Reflected lamps/windows scale with the film (same viewing distance), not the frame.
        size = float(span[1])
    else:
        lo, hi = np.array([0.1 * w, 0.1 * h]), np.array([0.9 * w, 0.9 * h])
        size = 0.6 * h
    blobs = []
    for i in range(spec.glare_spots + spec.glare_bands):
        cx, cy = lay.uniform(lo[0], hi[0]), lay.uniform(lo[1], hi[1])
        peak = lay.uniform(0.5, 1.0)
        if i < spec.glare_spots:
            sa = sb = lay.uniform(0.05, 0.25) * size
            ang = 0.0
        else:
            sa, sb = lay.uniform(0.5, 1.6) * size, lay.uniform(0.03, 0.12) * size
            ang = math.radians(lay.uniform(0.0, 180.0))
        blobs.append((cx, cy, sa, sb, ang, peak))

    def fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros_like(x)
        for cx, cy, sa, sb, ang, peak in blobs:
            dx, dy = x - cx, y - cy
            a = dx * math.cos(ang) + dy * math.sin(ang)
            b = -dx * math.sin(ang) + dy * math.cos(ang)
            out += peak * np.exp(-0.5 * ((a / sa) ** 2 + (b / sb) ** 2))
        return out

    return _lowres_field(h, w, fn)
