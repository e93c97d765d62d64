"""The camera after the lens: vignetting field, white balance, blur, noise, tone, JPEG."""

from __future__ import annotations

import math

import cv2
import numpy as np

from kiosk.lab.photoscene.spec import SceneSpec

_TONE_LUT_SIZE = 16384


def _lowres_field(h: int, w: int, fn: object, step: int = 8) -> np.ndarray:
    """Evaluate a smooth field fn(x, y) (full-res pixel coords) on a coarse grid and upsample."""
    lh, lw = max(2, -(-h // step)), max(2, -(-w // step))
    xs = (np.arange(lw, dtype=np.float32) + 0.5) * (w / lw) - 0.5
    ys = (np.arange(lh, dtype=np.float32) + 0.5) * (h / lh) - 0.5
    gx, gy = np.meshgrid(xs, ys)
    low = np.asarray(fn(gx, gy), np.float32)  # type: ignore[operator]
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)


def _tone_lut(spec: SceneSpec) -> np.ndarray:
    x = np.linspace(0.0, 1.0, _TONE_LUT_SIZE)
    if spec.tone == "srgb":
        y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    else:
        y = np.power(x, 1 / 2.2)
        y = y - spec.s_curve * np.sin(2 * np.pi * y) / (2 * np.pi)  # mild contrast S
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


def _white_balance(spec: SceneSpec, tint: np.ndarray) -> np.ndarray:
    """Camera white-balance gains: partly undo the panel tint, with a small error.

    Normalised so the smallest gain is 1, as cameras do: a clipped raw channel then stays
    clipped (255) after white balance instead of turning into a grey below full scale.
    """
    wb = (1.0 / tint) ** spec.wb_correction * np.array([spec.wb_error_r, 1.0, spec.wb_error_b])
    return wb / wb.min()


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, |rel err| < 1.2e-9)."""
    a = (
        -39.69683028665376,
        220.9460984245205,
        -275.9285104469687,
        138.3577518672690,
        -30.66479806614716,
        2.506628277459239,
    )
    b = (
        -54.47609879822406,
        161.5858368580409,
        -155.6989798598866,
        66.80131188771972,
        -13.28068155288572,
    )
    c = (
        -0.007784894002430293,
        -0.3223964580411365,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    )
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    p = np.asarray(p, np.float64)
    out = np.empty_like(p)
    lo = p < 0.02425
    hi = p > 1 - 0.02425
    mid = ~(lo | hi)
    q = p[mid] - 0.5
    r = q * q
    num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
    den = ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1
    out[mid] = num / den
    for sel, sign in ((lo, 1.0), (hi, -1.0)):
        pp = p[sel] if sign > 0 else 1 - p[sel]
        q = np.sqrt(-2 * np.log(pp))
        num = ((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]
        den = (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        out[sel] = sign * num / den
    return out


# Quantised Gaussian: drawing uint16 indices and looking them up is ~2.5x faster than
# standard_normal, and 65536 quantiles are plenty for sensor noise (tails to +-4.3 sigma).
_NORMAL_TABLE = _norm_ppf((np.arange(65536) + 0.5) / 65536).astype(np.float32)
_NOISE_STRIDE = 7919  # prime offset between the noise windows of successive planes


def _noise_pool(rng: np.random.Generator, n_pixels: int, planes: int) -> np.ndarray:
    """One fresh N(0, 1) pool; plane k uses the window starting at k * _NOISE_STRIDE.

    Windows are shifted by several rows plus a fraction of a row, so channels and the
    reference photo get uncorrelated noise at every pixel while the render draws only one
    pool (sensor noise generation otherwise dominates the render time).
    """
    idx = rng.integers(0, 65536, n_pixels + planes * _NOISE_STRIDE, dtype=np.uint16)
    return np.take(_NORMAL_TABLE, idx)


def _develop(
    planes: list[np.ndarray],
    spec: SceneSpec,
    wb: np.ndarray,
    noise: np.ndarray,
    first_window: int,
) -> np.ndarray:
    """Sensor planes (R, G, B) -> camera JPEG round trip, RGB uint8. Consumes ``planes``.

    Each plane arrives exposed and scaled by ``wb[c] * (N - 1)`` (N = tone LUT size): sensor
    full scale is then ``wb[c] * (N - 1)`` and the post-white-balance full scale ``N - 1``, so
    both clips and the LUT index collapse into one clip. Blur is linear, so it may come after
    the exposure scaling; noise is added after the blur, as on a real sensor.
    """
    h, w = planes[0].shape
    s = h / 1080.0
    sigma = spec.blur_sigma * s
    motion = None
    if spec.motion_px * s >= 1.5:
        ln = spec.motion_px * s
        k = math.ceil(ln) | 1
        kern = np.zeros((k, k), np.float32)
        a = math.radians(spec.motion_angle_deg)
        c0 = (k - 1) / 2.0
        dx, dy = math.cos(a) * (ln - 1) / 2, math.sin(a) * (ln - 1) / 2
        p0 = (round((c0 - dx) * 16), round((c0 - dy) * 16))
        p1 = (round((c0 + dx) * 16), round((c0 + dy) * 16))
        cv2.line(kern, p0, p1, 1.0, 1, cv2.LINE_AA, 4)
        motion = kern / max(float(kern.sum()), 1e-6)
    lut = _tone_lut(spec)
    top = _TONE_LUT_SIZE - 1
    out: list[np.ndarray] = []
    for c in range(3):
        plane = planes[c]
        planes[c] = np.empty(0, np.float32)  # release as we go (12 MP)
        if sigma >= 0.3:
            plane = np.asarray(cv2.GaussianBlur(plane, (0, 0), sigma), np.float32)
        if motion is not None:
            plane = np.asarray(
                cv2.filter2D(plane, -1, motion, borderType=cv2.BORDER_REFLECT), np.float32
            )
        scale = float(wb[c]) * top
        # Shot noise (Poisson, Gaussian approx.) + read noise, in these scaled sensor units.
        std = plane * np.float32(scale / spec.full_well)
        std += np.float32((scale * spec.read_noise) ** 2)
        np.sqrt(std, out=std)
        start = (first_window + c) * _NOISE_STRIDE
        std *= noise[start : start + h * w].reshape(h, w)
        plane += std
        del std
        np.clip(plane, 0.0, min(scale, top), out=plane)
        out.append(np.take(lut, plane.astype(np.uint16)))
        del plane
    bgr = cv2.merge([out[2], out[1], out[0]])
    del out
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(spec.jpeg_quality)])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    del bgr
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if dec is None:  # pragma: no cover
        raise RuntimeError("JPEG decoding failed")
    return np.asarray(cv2.cvtColor(dec, cv2.COLOR_BGR2RGB))
