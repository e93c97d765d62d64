"""The film: characteristic (H&D) curve, margins, flash card, lead marker, CT/MR tiles."""

from __future__ import annotations

import math

import cv2
import numpy as np

from kiosk.lab.photoscene.geometry import _image_area_cm
from kiosk.lab.photoscene.spec import SceneSpec

_LN10 = math.log(10.0)


def _to_grey(digital: np.ndarray) -> np.ndarray:
    """Digital radiograph -> float32 grey in [0, 1], bone bright."""
    a = np.asarray(digital)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=2) if a.shape[2] >= 3 else a[..., 0]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"digital image must be (H, W) or (H, W, C), got {np.shape(digital)}")
    if a.dtype == np.uint8:
        g = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        g = a.astype(np.float32) / 65535.0
    else:
        g = a.astype(np.float32)
        # Floats are taken as [0, 1] unless they are obviously 0..255.
        if float(g.max()) > 1.5:
            g = g / 255.0
    return np.clip(g, 0.0, 1.0)


def _hd_density(v: np.ndarray, spec: SceneSpec) -> np.ndarray:
    """Characteristic curve: digital grey -> log exposure -> optical density (logistic H&D)."""
    log_e = (1.0 - v) * spec.log_e_range  # bright (bone) = little exposure
    mid = spec.log_e_range * (1.0 - spec.mid_grey)
    span = spec.d_max - spec.base_fog
    k = 4.0 * spec.film_gamma / span  # slope at the midpoint equals the film gamma
    d = span / (1.0 + np.exp(-k * (log_e - mid)))
    return (d + spec.base_fog).astype(np.float32)


def _sheet_grey(ih: int, iw: int, rows: int, cols: int, lay: np.random.Generator) -> np.ndarray:
    """Procedural CT/MR print: square tiles of cross-sections (bright = dense) on black."""
    v = np.zeros((ih, iw), np.float32)
    gap = 0.03 * min(iw / cols, ih / rows)
    s = min((iw - (cols + 1) * gap) / cols, (ih - (rows + 1) * gap) / rows)
    ox = (iw - cols * s - (cols - 1) * gap) / 2.0
    oy = (ih - rows * s - (rows - 1) * gap) / 2.0
    ct = bool(lay.random() < 0.6)
    for i in range(rows):
        for j in range(cols):
            cx = ox + j * (s + gap) + s / 2 + lay.uniform(-0.03, 0.03) * s
            cy = oy + i * (s + gap) + s / 2 + lay.uniform(-0.03, 0.03) * s
            c = (round(cx), round(cy))
            scale = lay.uniform(0.8, 1.0)
            if ct:  # chest/abdomen slice: wide body, dark lungs, bright spine and rim
                ax = (max(2, round(0.42 * s * scale)), max(2, round(0.3 * s * scale)))
                cv2.ellipse(v, c, ax, 0, 0, 360, float(lay.uniform(0.35, 0.55)), -1)
                cv2.ellipse(v, c, ax, 0, 0, 360, 0.8, max(1, round(0.02 * s)))
                lung = (max(1, round(0.14 * s * scale)), max(1, round(0.2 * s * scale)))
                for side in (-1, 1):
                    lc = (round(cx + side * 0.19 * s * scale), round(cy - 0.02 * s))
                    cv2.ellipse(v, lc, lung, 0, 0, 360, float(lay.uniform(0.04, 0.15)), -1)
                sc = (round(cx), round(cy + 0.17 * s * scale))
                cv2.circle(v, sc, max(1, round(0.05 * s)), 0.92, -1)
            else:  # head slice: bright skull ring around grey brain with darker ventricles
                ax = (max(2, round(0.36 * s * scale)), max(2, round(0.43 * s * scale)))
                cv2.ellipse(v, c, ax, 0, 0, 360, float(lay.uniform(0.4, 0.55)), -1)
                cv2.ellipse(v, c, ax, 0, 0, 360, 0.9, max(1, round(0.035 * s)))
                for _ in range(int(lay.integers(1, 4))):
                    bc = (
                        round(cx + lay.uniform(-0.12, 0.12) * s),
                        round(cy + lay.uniform(-0.15, 0.15) * s),
                    )
                    bax = (
                        max(1, round(lay.uniform(0.03, 0.08) * s)),
                        max(1, round(lay.uniform(0.03, 0.1) * s)),
                    )
                    cv2.ellipse(v, bc, bax, float(lay.uniform(0, 180)), 0, 360, 0.22, -1)
            # White annotation text in the tile corner (a few short strokes).
            tx, ty = ox + j * (s + gap) + 0.04 * s, oy + i * (s + gap) + 0.06 * s
            for line in range(int(lay.integers(1, 4))):
                x0 = round(tx)
                y0 = round(ty + line * 0.05 * s)
                x1 = round(tx + lay.uniform(0.08, 0.25) * s)
                cv2.rectangle(v, (x0, y0), (x1, y0 + max(1, round(0.02 * s))), 0.95, -1)
    v = np.asarray(cv2.GaussianBlur(v, (0, 0), 0.7), np.float32)
    v += lay.normal(0.0, 0.015, v.shape).astype(np.float32)
    return np.clip(v, 0.0, 1.0)


def _film_canvas(
    grey: np.ndarray | None, spec: SceneSpec, res: float, lay: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """Film in its own coordinates: transmittance 10^-D (silver image + base + fog), coverage.

    Returns the planes (neutral transmittance, coverage) and the 3x3 matrix canvas px ->
    film-local cm.
    """
    fw, fh = spec.film_w_cm, spec.film_h_cm
    nw, nh = max(8, round(fw * res)), max(8, round(fh * res))
    sx, sy = nw / fw, nh / fh
    d = np.full((nh, nw), spec.margin_density, np.float32)
    u0, v0, u1, v1 = _image_area_cm(spec)
    x0, x1 = round(u0 * sx), max(round(u0 * sx) + 2, round(u1 * sx))
    y0, y1 = round(v0 * sy), max(round(v0 * sy) + 2, round(v1 * sy))
    x1, y1 = min(x1, nw), min(y1, nh)
    if spec.kind == "sheet":
        img = _sheet_grey(y1 - y0, x1 - x0, spec.sheet_rows, spec.sheet_cols, lay)
    else:
        assert grey is not None
        shrink = grey.shape[0] > (y1 - y0) and grey.shape[1] > (x1 - x0)
        img = cv2.resize(
            grey, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    d[y0:y1, x0:x1] = _hd_density(img, spec)

    if spec.flash_card:
        # ~10x6 cm card (smaller on small films): unexposed paper label area with printed text.
        k = min(1.0, fw / 30.0, fh / 30.0)
        cw, ch = 10.0 * k, 6.0 * k
        inset = float(lay.uniform(0.3, 1.5))
        cu = inset if spec.flash_corner in ("tl", "bl") else fw - inset - cw
        cv_ = inset if spec.flash_corner in ("tl", "tr") else fh - inset - ch
        a0, a1 = round(cu * sx), round((cu + cw) * sx)
        b0, b1 = round(cv_ * sy), round((cv_ + ch) * sy)
        d[b0:b1, a0:a1] = spec.flash_density
        n_lines = int(lay.integers(3, 6))
        stroke = max(1, round(0.35 * k * sy))
        for line in range(n_lines):
            yy = round((cv_ + (line + 0.7) * ch / (n_lines + 0.5)) * sy)
            xx = cu + 0.5 * k
            while xx < cu + cw - 1.0 * k:
                wl = float(lay.uniform(0.8, 3.0)) * k
                xe = min(xx + wl, cu + cw - 0.5 * k)
                d[yy : yy + stroke, round(xx * sx) : round(xe * sx)] = spec.flash_density + float(
                    lay.uniform(0.6, 1.2)
                )
                xx = xe + 0.5 * k
    if spec.marker != "none":
        # Lead letter: blocks the X-rays, so the film stays at base+fog under it.
        hcm = float(lay.uniform(1.5, 2.5))
        inset = float(lay.uniform(0.8, 2.5))
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), _ = cv2.getTextSize(spec.marker, font, 1.0, 2)
        scale = hcm * sy / th
        thick = max(1, round(hcm * sy / 7))
        left = u0 + inset if spec.marker_side == "left" else u1 - inset - tw * scale / sx
        org = (round(left * sx), round((v0 + inset) * sy + th * scale))
        mask = np.zeros((nh, nw), np.uint8)
        cv2.putText(mask, spec.marker, org, font, scale, 255, thick, cv2.LINE_AA)
        m = mask.astype(np.float32) / 255.0
        d += (spec.base_fog - d) * m
    sig = spec.edge_blur_cm * sx
    if sig > 0.3:
        d = np.asarray(cv2.GaussianBlur(d, (0, 0), sig), np.float32)
    d *= np.float32(-_LN10)
    ts = np.exp(d)
    pad = 2
    # Neutral transmittance (1 outside the film) and film coverage (0 in the padding, so the
    # warped edge is anti-aliased); the base's colour is applied where coverage is 1.
    planes = [
        cv2.copyMakeBorder(ts, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=1.0),
        cv2.copyMakeBorder(np.ones_like(ts), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0.0),
    ]
    # Canvas pixel centre (j, i) -> film cm: u = (j - pad + 0.5) / sx.
    to_cm = np.array([[1 / sx, 0.0, (0.5 - pad) / sx], [0.0, 1 / sy, (0.5 - pad) / sy], [0, 0, 1]])
    return planes, to_cm
