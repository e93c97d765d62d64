"""Physically based renderer of "a chest X-ray film on a lightbox, seen by this camera".

Used by the demo camera, the tests and the rectifier benchmark. The model of the scene, in the
order light travels:

1. **Film.** The digital image (bone bright) becomes optical density through an H&D-like
   characteristic curve: a logistic in "log exposure" ``1 - v`` (``v`` = digital grey in 0..1)
   rescaled so digital white (v = 1) gets the base+fog density and digital black (v = 0) the
   maximum density. The film base is larger than the image: a clear margin of base+fog density
   (nearly as bright as the lightbox, the hard case for a detector) surrounds the image.
2. **Lightbox.** A diffuse panel with its own luminance field: fluorescent tube banding (a
   cosine across the panel), fall-off towards the edges and a colour tint. Outside the lit
   panel the room is dark.
3. **Transmission.** ``light = lightbox * 10 ** -density`` per colour channel (a faint blue
   tint of the film base is modelled as a per-channel density factor).
4. **Reflections and occluders.** Room glare: a soft specular band added in linear light.
   Optional clip at the top of the film, fingers at an edge, a second film.
5. **Camera.** A pinhole camera rotated about its centre (tilt, roll) looks at the plane of the
   lightbox; lens vignetting (cos^4-like), defocus (Gaussian blur), sensor noise in linear
   light (shot noise from a full-well count + read noise), an exposure scale on linear light,
   clipping, the sRGB tone curve and JPEG compression.

Every rendering returns the true outer film corners (TL, TR, BR, BL) in image pixels, which may
lie outside the frame when the film is cut off. Parameters whose unit is pixels are given for a
1080-pixel-high frame and scale with the rendered size, so ``size=(240, 320)`` is a cheap
preview of the same scene.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

logger = logging.getLogger(__name__)

REFERENCE_HEIGHT_PX = 1080
_FIELD_DOWNSCALE = 8  # smooth fields (lightbox, vignetting, glare) are computed at 1/8 res


@dataclass(frozen=True)
class SceneParams:
    """Everything that decides what the camera sees. Defaults: a tidy, well-exposed scene."""

    # --- film (characteristic curve, sizes as fractions) ---
    base_fog_density: float = 0.20  # optical density (log10) of clear film: base + fog
    max_density: float = 3.0  # optical density where the film is fully exposed (air)
    film_contrast: float = 4.0  # slope of the logistic H&D curve in log-exposure units
    film_speed: float = 0.45  # log-exposure (0..1) at the curve's mid point
    margin_frac: tuple[float, float, float, float] = (0.05, 0.03, 0.03, 0.03)
    # clear film margin around the image: top, right, bottom, left, as a fraction of image size
    film_tint: tuple[float, float, float] = (1.04, 1.0, 0.94)
    # per-channel (R, G, B) factor on density: a faint blue-tinted polyester base
    # --- lightbox ---
    lightbox_luminance: float = 0.85  # linear luminance of the panel centre (1 = sensor full)
    lightbox_tint: tuple[float, float, float] = (0.96, 1.0, 1.04)  # R, G, B multipliers
    lightbox_size: tuple[float, float] = (1.05, 1.25)  # panel (height, width) / frame size
    lightbox_offset: tuple[float, float] = (0.0, 0.0)  # panel centre offset (x, y) / frame
    tube_count: int = 4  # fluorescent tubes behind the diffuser (banding along x)
    tube_banding: float = 0.04  # relative amplitude of the banding (0 = LED panel)
    edge_falloff: float = 0.25  # relative loss of luminance at the panel edge
    room_luminance: float = 0.03  # linear luminance of the dark room around the panel
    # --- film placement on the panel (plane coordinates = untilted frame) ---
    film_height_frac: float = 0.82  # film height / frame height
    film_offset: tuple[float, float] = (0.0, 0.0)  # film centre offset (x, y) / frame size
    film_rotation_deg: float = 0.0  # film rotation on the panel, degrees, clockwise
    # --- glare (specular reflection of a room light on the glossy film) ---
    glare_strength: float = 0.0  # peak added linear luminance
    glare_width: float = 0.05  # Gaussian sigma of the band / frame height
    glare_angle_deg: float = 30.0  # band direction, degrees from the x axis
    glare_center: tuple[float, float] = (0.5, 0.4)  # a point on the band (x, y) / frame
    # --- camera geometry ---
    tilt_x_deg: float = 0.0  # camera pitch about the image x axis, degrees (keystone)
    tilt_y_deg: float = 0.0  # camera yaw about the image y axis, degrees
    roll_deg: float = 0.0  # camera roll about the optical axis, degrees
    focal_frac: float = 1.1  # focal length / frame width (1.1 ~ 50 degree horizontal FOV)
    # --- lens and sensor ---
    vignetting: float = 0.3  # 0 = none, 1 = full cos^4 fall-off
    blur_sigma_px: float = 0.8  # defocus blur, Gaussian sigma in px at 1080 px height
    full_well_e: float = 8000.0  # electrons at sensor saturation (shot noise)
    read_noise_e: float = 4.0  # read noise, electrons RMS
    exposure_scale: float = 1.0  # multiplies linear light before clipping (shutter x gain)
    gamma: float = 2.2  # display gamma of the tone curve (2.2 ~ sRGB; 0 = exact sRGB)
    jpeg_quality: int = 90  # 0 = no JPEG round trip
    # --- optional scene content ---
    clip: bool = False  # a metal clip holding the top edge of the film
    fingers: bool = False  # fingers (dark silhouettes) over the left or right film edge
    fingers_side: int = 1  # +1 right edge, -1 left edge
    second_film: bool = False  # a second film partly visible beside the first
    second_film_side: int = -1  # +1 right, -1 left


@dataclass(frozen=True)
class Rendering:
    """What the camera delivered, and the ground truth behind it."""

    image: np.ndarray  # RGB uint8 (H, W, 3)
    corners: np.ndarray | None  # (4, 2) float32 film corners TL, TR, BR, BL; None if no film
    params: SceneParams


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def random_params(rng: np.random.Generator, *, difficulty: float = 0.5) -> SceneParams:
    """Draw a plausible scene; ``difficulty`` 0..1 widens every range towards the hard cases.

    The film (of a typical 0.85 width/height aspect) lies inside the frame with a margin of at
    least 2% of the frame; cut-off films and empty lightboxes are explicit choices
    (``film_offset`` / ``render(None, ...)``) so callers know the ground truth.
    """
    d = float(np.clip(difficulty, 0.0, 1.0))
    p = _draw_params(rng, d)
    for _ in range(30):
        if _film_fits(p, 0.02):
            return p
        p = replace(
            p,
            film_height_frac=p.film_height_frac * 0.97,
            film_offset=(p.film_offset[0] * 0.8, p.film_offset[1] * 0.8),
        )
    return p


def _film_fits(p: SceneParams, margin: float, aspect: float = 0.85) -> bool:
    h, w = REFERENCE_HEIGHT_PX, REFERENCE_HEIGHT_PX * 16 // 9
    hom = _camera_homography(p, (h, w))
    fh = p.film_height_frac * h
    centre = (w / 2 + p.film_offset[0] * w, h / 2 + p.film_offset[1] * h)
    pts = _project(hom, _rect_in_plane(centre, fh * aspect, fh, p.film_rotation_deg))
    lo, hi = np.array([margin * w, margin * h]), np.array([w * (1 - margin), h * (1 - margin)])
    return bool((pts >= lo).all() and (pts <= hi).all())


def _draw_params(rng: np.random.Generator, d: float) -> SceneParams:
    tilt = 2.0 + 10.0 * d
    fh = _u(rng, 0.78 - 0.2 * d, 0.88)
    # keep the film inside the frame: offset bounded by the free space left by its size
    max_off_y = max(0.0, (1.0 - fh) / 2 - 0.04 - 0.03 * d)
    max_off_x = max(0.0, (1.0 - fh * 0.82 * 1080 / 1920) / 2 - 0.06) * 0.6
    return SceneParams(
        base_fog_density=_u(rng, 0.25 - 0.08 * d, 0.25),
        max_density=_u(rng, 2.5, 3.5),
        film_contrast=_u(rng, 3.0, 5.5),
        film_speed=_u(rng, 0.35, 0.55),
        margin_frac=(
            _u(rng, 0.02, 0.08),
            _u(rng, 0.01, 0.05),
            _u(rng, 0.01, 0.05),
            _u(rng, 0.01, 0.05),
        ),
        film_tint=(1.0 + _u(rng, 0, 0.08), 1.0, 1.0 - _u(rng, 0, 0.1)),
        lightbox_luminance=_u(rng, 0.7, 0.92),
        lightbox_tint=(_u(rng, 0.9, 1.02), 1.0, _u(rng, 0.98, 1.12)),
        lightbox_size=(_u(rng, 0.92, 1.2), _u(rng, 0.8, 1.3)),
        lightbox_offset=(_u(rng, -0.04, 0.04), _u(rng, -0.03, 0.03)),
        tube_count=int(rng.integers(2, 7)),
        tube_banding=_u(rng, 0.0, 0.03 + 0.07 * d),
        edge_falloff=_u(rng, 0.05, 0.2 + 0.25 * d),
        room_luminance=_u(rng, 0.01, 0.06 + 0.1 * d),
        film_height_frac=fh,
        film_offset=(_u(rng, -max_off_x, max_off_x), _u(rng, -max_off_y, max_off_y)),
        film_rotation_deg=_u(rng, -2.0 - 6 * d, 2.0 + 6 * d),
        glare_strength=_u(rng, 0.0, 0.05 + 0.35 * d) if rng.random() < 0.3 + 0.5 * d else 0.0,
        glare_width=_u(rng, 0.02, 0.08),
        glare_angle_deg=_u(rng, 0.0, 180.0),
        glare_center=(_u(rng, 0.2, 0.8), _u(rng, 0.2, 0.8)),
        tilt_x_deg=_u(rng, -tilt, tilt),
        tilt_y_deg=_u(rng, -tilt, tilt),
        roll_deg=_u(rng, -2.0 - 3 * d, 2.0 + 3 * d),
        focal_frac=_u(rng, 0.8, 1.4),
        vignetting=_u(rng, 0.0, 0.3 + 0.5 * d),
        blur_sigma_px=_u(rng, 0.3, 1.0 + 1.5 * d),
        full_well_e=_u(rng, 12000 - 8000 * d, 15000),
        read_noise_e=_u(rng, 2.0, 4.0 + 8.0 * d),
        exposure_scale=_u(rng, 1.0 - 0.35 * d, 1.08),
        gamma=_u(rng, 2.0, 2.4),
        jpeg_quality=int(rng.integers(int(90 - 30 * d), 96)),
        clip=bool(rng.random() < 0.5),
        fingers=bool(rng.random() < 0.35 * d),
        fingers_side=int(rng.choice([-1, 1])),
        second_film=bool(rng.random() < 0.25 * d),
        second_film_side=int(rng.choice([-1, 1])),
    )


# --------------------------------------------------------------------------- geometry


def _camera_homography(p: SceneParams, size: tuple[int, int]) -> np.ndarray:
    """Plane (untilted frame) -> image: a pinhole camera rotated about its centre."""
    h, w = size
    f = p.focal_frac * w
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=np.float64)
    ax, ay, az = (math.radians(v) for v in (p.tilt_x_deg, p.tilt_y_deg, p.roll_deg))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    hom = k @ (rz @ rx @ ry) @ np.linalg.inv(k)
    # the rig is aimed at the panel: keep the frame centre on the panel centre (keystone only)
    c = hom @ np.array([cx, cy, 1.0])
    shift = np.array([[1, 0, cx - c[0] / c[2]], [0, 1, cy - c[1] / c[2]], [0, 0, 1]])
    hom = shift @ hom
    return hom / hom[2, 2]


def _project(hom: np.ndarray, pts: np.ndarray) -> np.ndarray:
    out = cv2.perspectiveTransform(pts.reshape(-1, 1, 2).astype(np.float64), hom)
    return out.reshape(-1, 2)


def _rect_in_plane(
    center: tuple[float, float], width: float, height: float, rot_deg: float
) -> np.ndarray:
    """Corners TL, TR, BR, BL of a rotated rectangle (clockwise rotation in image axes)."""
    a = math.radians(rot_deg)
    c, s = math.cos(a), math.sin(a)
    half = np.array([[-width, -height], [width, -height], [width, height], [-width, height]]) / 2
    rot = np.array([[c, -s], [s, c]])
    return half @ rot.T + np.asarray(center, dtype=np.float64)


def _low_res_grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Full-resolution pixel coordinates of the centres of a 1/8-resolution grid."""
    h, w = size
    lh, lw = max(2, h // _FIELD_DOWNSCALE), max(2, w // _FIELD_DOWNSCALE)
    ys = (np.arange(lh, dtype=np.float32) + 0.5) * (h / lh) - 0.5
    xs = (np.arange(lw, dtype=np.float32) + 0.5) * (w / lw) - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return gx, gy, (lh, lw)


def _upsample(field: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(field, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- scene parts


def _lightbox_field(p: SceneParams, size: tuple[int, int], hom: np.ndarray) -> np.ndarray:
    """Linear luminance (H, W) float32 of the panel (with the dark room outside it)."""
    h, w = size
    lb_h, lb_w = p.lightbox_size[0] * h, p.lightbox_size[1] * w
    lcx = w / 2 + p.lightbox_offset[0] * w
    lcy = h / 2 + p.lightbox_offset[1] * h
    gx, gy, (lh, lw) = _low_res_grid(size)
    plane = cv2.perspectiveTransform(
        np.stack([gx, gy], axis=-1).reshape(-1, 1, 2).astype(np.float64), np.linalg.inv(hom)
    ).reshape(lh, lw, 2)
    u = (plane[..., 0] - lcx) / lb_w  # -0.5..0.5 across the panel
    v = (plane[..., 1] - lcy) / lb_h
    falloff = (1.0 - p.edge_falloff * (2 * u) ** 4) * (1.0 - p.edge_falloff * (2 * v) ** 4)
    banding = 1.0 + p.tube_banding * np.cos(2 * np.pi * p.tube_count * (u + 0.5) + np.pi)
    field = (p.lightbox_luminance * falloff * banding).astype(np.float32)
    field = _upsample(field, size)
    # the panel edge is sharp: rasterise its projected outline at full resolution
    panel = _project(hom, _rect_in_plane((lcx, lcy), lb_w, lb_h, 0.0))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, np.round(panel * 16).astype(np.int32), 255, cv2.LINE_AA, shift=4)
    lit = mask.astype(np.float32) * (1.0 / 255.0)
    return field * lit + np.float32(p.room_luminance) * (1.0 - lit)


def characteristic_density(digital: np.ndarray, p: SceneParams) -> np.ndarray:
    """Digital grey (0..1, bone bright) -> optical density through the H&D-like curve."""
    log_e = 1.0 - digital  # bright bone = little exposure
    s = 1.0 / (1.0 + np.exp(-p.film_contrast * (log_e - p.film_speed)))
    s0 = 1.0 / (1.0 + math.exp(p.film_contrast * p.film_speed))
    s1 = 1.0 / (1.0 + math.exp(-p.film_contrast * (1.0 - p.film_speed)))
    norm = (s - s0) / (s1 - s0)
    return (p.base_fog_density + (p.max_density - p.base_fog_density) * norm).astype(np.float32)


def _to_grey01(digital: np.ndarray) -> np.ndarray:
    if digital.ndim == 3:
        digital = cv2.cvtColor(digital, cv2.COLOR_RGB2GRAY)
    if digital.dtype == np.uint8:
        return digital.astype(np.float32) * (1.0 / 255.0)
    if digital.dtype == np.uint16:
        return digital.astype(np.float32) * (1.0 / 65535.0)
    return np.clip(digital.astype(np.float32), 0.0, 1.0)


def _film_density_canvas(
    digital: np.ndarray, p: SceneParams, target_h_px: float
) -> tuple[np.ndarray, float]:
    """Density of the whole film (image + clear margins) sampled near the on-screen size.

    Returns the canvas and its aspect ratio (width / height).
    """
    grey = _to_grey01(digital)
    ih, iw = grey.shape
    mt, mr, mb, ml = p.margin_frac
    film_h_units = ih * (1 + mt + mb)
    scale = min(1.0, max(target_h_px, 16.0) / film_h_units)
    nh, nw = max(8, round(ih * scale)), max(8, round(iw * scale))
    if (nh, nw) != (ih, iw):
        grey = cv2.resize(grey, (nw, nh), interpolation=cv2.INTER_AREA)
    dens = characteristic_density(grey, p)
    top, bottom = round(mt * nh), round(mb * nh)
    left, right = round(ml * nw), round(mr * nw)
    canvas = cv2.copyMakeBorder(
        dens, top, bottom, left, right, cv2.BORDER_CONSTANT, value=p.base_fog_density
    )
    return canvas, canvas.shape[1] / canvas.shape[0]


def _warp_density(canvas: np.ndarray, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    ch, cw = canvas.shape
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32) - 0.5
    m = cv2.getPerspectiveTransform(src, corners.astype(np.float32))
    return cv2.warpPerspective(
        canvas,
        m,
        (size[1], size[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )


def _glare_field(p: SceneParams, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    gx, gy, _ = _low_res_grid(size)
    a = math.radians(p.glare_angle_deg)
    px, py = p.glare_center[0] * w, p.glare_center[1] * h
    dist = (gx - px) * math.sin(a) - (gy - py) * math.cos(a)
    along = (gx - px) * math.cos(a) + (gy - py) * math.sin(a)
    sig = p.glare_width * h
    band = np.exp(-(dist**2) / (2 * sig**2)) * np.exp(-(along**2) / (2 * (0.45 * w) ** 2))
    return _upsample((p.glare_strength * band).astype(np.float32), size)


def _vignetting_field(p: SceneParams, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    gx, gy, _ = _low_res_grid(size)
    f = p.focal_frac * w
    r2 = ((gx - (w - 1) / 2) ** 2 + (gy - (h - 1) / 2) ** 2) / f**2
    cos4 = 1.0 / (1.0 + r2) ** 2
    return _upsample(((1 - p.vignetting) + p.vignetting * cos4).astype(np.float32), size)


def _occluders(
    p: SceneParams, size: tuple[int, int], hom: np.ndarray, film_plane: np.ndarray
) -> np.ndarray | None:
    """Alpha (H, W) float32 of opaque things in front of the panel, or None."""
    if not (p.clip or p.fingers):
        return None
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    tl, tr, br, bl = film_plane
    top_mid = (tl + tr) / 2
    right_dir = (tr - tl) / np.linalg.norm(tr - tl)
    down_dir = (bl - tl) / np.linalg.norm(bl - tl)
    film_w, film_h = np.linalg.norm(tr - tl), np.linalg.norm(bl - tl)
    polys: list[np.ndarray] = []
    if p.clip:
        cw, ch = 0.22 * film_w, 0.035 * film_h
        c = top_mid + down_dir * (ch * 0.15)
        polys.append(
            np.array(
                [
                    c - right_dir * cw / 2 - down_dir * ch / 2,
                    c + right_dir * cw / 2 - down_dir * ch / 2,
                    c + right_dir * cw / 2 + down_dir * ch / 2,
                    c - right_dir * cw / 2 + down_dir * ch / 2,
                ]
            )
        )
    if p.fingers:
        edge_a, edge_b = (tr, br) if p.fingers_side > 0 else (tl, bl)
        base = edge_a + (edge_b - edge_a) * 0.55
        out_dir = right_dir * p.fingers_side
        for k in range(3):
            centre = base + down_dir * (k * 0.035 * film_h) + out_dir * 0.01 * film_w
            ang = math.degrees(math.atan2(out_dir[1], out_dir[0]))
            pts = cv2.ellipse2Poly(
                (int(centre[0] * 4), int(centre[1] * 4)),
                (int(0.06 * film_w * 4), int(0.014 * film_h * 4)),
                int(ang),
                0,
                360,
                10,
            )
            polys.append(np.asarray(pts, np.float64) / 4)
    for poly in polys:
        img_pts = _project(hom, poly)
        cv2.fillPoly(mask, [np.round(img_pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) * (1.0 / 255.0)


# --------------------------------------------------------------------------- camera


def _srgb_encode_lut(gamma: float, levels: int = 4096) -> np.ndarray:
    x = np.linspace(0.0, 1.0, levels)
    if gamma <= 0:
        y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    else:
        y = np.power(x, 1.0 / gamma)
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


def _camera(
    linear: np.ndarray, p: SceneParams, rng: np.random.Generator, size: tuple[int, int]
) -> np.ndarray:
    """Linear RGB float32 (H, W, 3) radiance at the sensor -> the delivered RGB uint8 image."""
    sigma = p.blur_sigma_px * size[0] / REFERENCE_HEIGHT_PX
    if sigma > 0.3:
        linear = cv2.GaussianBlur(linear, (0, 0), sigma)
    linear *= np.float32(p.exposure_scale)
    np.clip(linear, 0.0, 1.0, out=linear)
    # shot noise variance = signal * full_well electrons; read noise is signal independent
    var = linear * np.float32(1.0 / p.full_well_e) + np.float32(
        (p.read_noise_e / p.full_well_e) ** 2
    )
    linear += np.sqrt(var) * rng.standard_normal(linear.shape, dtype=np.float32)
    np.clip(linear, 0.0, 1.0, out=linear)
    lut = _srgb_encode_lut(p.gamma)
    img = lut[(linear * np.float32(len(lut) - 1) + np.float32(0.5)).astype(np.uint16)]
    if p.jpeg_quality > 0:
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality]
        )
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            img = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return img


def render(
    digital: np.ndarray | None,
    params: SceneParams,
    rng: np.random.Generator,
    size: tuple[int, int] = (1080, 1920),
) -> Rendering:
    """Render ``digital`` (grey or RGB, bone bright) as a film on the lightbox.

    ``size`` is (height, width). ``digital=None`` renders the empty lightbox. The film's outer
    boundary (margins included) is returned as ``corners``, even where it leaves the frame.
    """
    h, w = size
    p = params
    hom = _camera_homography(p, size)
    light = _lightbox_field(p, size, hom)
    density: np.ndarray | None = None
    corners: np.ndarray | None = None
    film_plane: np.ndarray | None = None
    if digital is not None:
        fh = p.film_height_frac * h
        canvas, aspect = _film_density_canvas(digital, p, fh)
        fcx, fcy = w / 2 + p.film_offset[0] * w, h / 2 + p.film_offset[1] * h
        film_plane = _rect_in_plane((fcx, fcy), fh * aspect, fh, p.film_rotation_deg)
        corners = _project(hom, film_plane).astype(np.float32)
        density = _warp_density(canvas, corners, size)
        if p.second_film:
            gap = 0.03 * fh
            dx = (fh * aspect + gap) * p.second_film_side
            other_plane = film_plane + np.array([dx, 0.04 * fh])
            other = _warp_density(canvas[:, ::-1].copy(), _project(hom, other_plane), size)
            density += other
    tint = p.lightbox_tint
    channels = []
    for c in range(3):
        if density is None:
            channels.append(light * np.float32(tint[c]))
        else:
            trans = cv2.exp(density * np.float32(-math.log(10.0) * p.film_tint[c]))
            channels.append(light * trans * np.float32(tint[c]))
    linear = np.stack(channels, axis=-1)
    if p.glare_strength > 0:
        linear += _glare_field(p, size)[..., None]
    if film_plane is not None:
        alpha = _occluders(p, size, hom, film_plane)
        if alpha is not None:
            occ = np.array([0.05, 0.045, 0.04], np.float32) * np.float32(p.lightbox_luminance)
            linear = linear * (1.0 - alpha[..., None]) + alpha[..., None] * occ
    if p.vignetting > 0:
        linear *= _vignetting_field(p, size)[..., None]
    image = _camera(linear.astype(np.float32, copy=False), p, rng, size)
    return Rendering(image=image, corners=corners, params=p)


def render_empty(
    params: SceneParams,
    rng: np.random.Generator,
    size: tuple[int, int] = (1080, 1920),
    exposure_scale: float = 1.0,
) -> np.ndarray:
    """The empty lightbox as the camera sees it (no glare, no occluders): the rig reference.

    ``exposure_scale`` multiplies the scene's own exposure (a calibration capture may use a
    shorter exposure than a film capture).
    """
    p = replace(
        params,
        exposure_scale=params.exposure_scale * exposure_scale,
        glare_strength=0.0,
        clip=False,
        fingers=False,
    )
    return render(None, p, rng, size).image


# --------------------------------------------------------------------------- phantom


def phantom_chest(rng: np.random.Generator, size: tuple[int, int] = (1024, 1024)) -> np.ndarray:
    """A procedurally drawn PA chest radiograph, grey uint8, bone bright, air dark.

    Not anatomy-accurate: enough structure (lungs, mediastinum, heart, spine, ribs, clavicles,
    diaphragm, soft tissue) for the geometry and density tests to have something to recover.
    """
    h, w = size
    s = 4  # drawing resolution 1/4, then upsampled: cheap and naturally smooth
    dh, dw = max(32, h // s), max(32, w // s)
    img: np.ndarray = np.zeros((dh, dw), np.float32)

    def j(v: float, spread: float = 0.03) -> float:
        return v + float(rng.uniform(-spread, spread))

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(x * dw), int(y * dh)

    def ax(a: float, b: float) -> tuple[int, int]:
        return max(1, int(a * dw)), max(1, int(b * dh))

    # body soft tissue
    cv2.ellipse(img, pt(0.5, j(0.58)), ax(j(0.47), 0.62), 0, 0, 360, 0.45, -1)
    cv2.rectangle(img, pt(0.38, 0.0), pt(0.62, 0.1), 0.45, -1)  # neck
    # lungs (air: dark)
    for side in (-1, 1):
        cx = 0.5 + side * j(0.19, 0.02)
        cv2.ellipse(
            img, pt(cx, j(0.48)), ax(j(0.15, 0.02), j(0.3, 0.02)), side * 4, 0, 360, 0.12, -1
        )
    # mediastinum and spine
    cv2.rectangle(img, pt(0.45, 0.12), pt(0.55, 0.75), 0.6, -1)
    cv2.rectangle(img, pt(0.475, 0.0), pt(0.525, 1.0), 0.75, -1)
    # heart, to the image right (patient's left)
    cv2.ellipse(
        img, pt(j(0.56, 0.02), j(0.62, 0.02)), ax(j(0.13, 0.02), 0.12), -20, 0, 360, 0.62, -1
    )
    # diaphragm domes
    for side in (-1, 1):
        cv2.ellipse(img, pt(0.5 + side * 0.19, j(0.8, 0.02)), ax(0.17, 0.07), 0, 180, 360, 0.55, -1)
    cv2.rectangle(img, pt(0.05, 0.8), pt(0.95, 1.0), 0.55, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    # ribs: bright arcs across each lung
    bone: np.ndarray = np.zeros_like(img)
    for side in (-1, 1):
        for k in range(9):
            y = 0.2 + k * j(0.062, 0.003)
            centre = pt(0.5 + side * 0.02, y)
            cv2.ellipse(
                bone,
                centre,
                ax(0.33, 0.09),
                0,
                180 if side > 0 else 270,
                270 if side > 0 else 360,
                0.22,
                max(1, dh // 90),
            )
    # clavicles
    cv2.line(bone, pt(0.28, j(0.17)), pt(0.47, 0.2), 0.3, max(2, dh // 60))
    cv2.line(bone, pt(0.53, 0.2), pt(0.72, j(0.17)), 0.3, max(2, dh // 60))
    img = img + cv2.GaussianBlur(bone, (0, 0), 0.8)
    # lung texture (vessels) and quantum mottle
    tex = cv2.GaussianBlur(rng.standard_normal((dh, dw)).astype(np.float32), (0, 0), 2.0)
    img = img + 0.04 * tex
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    img = img + 0.01 * rng.standard_normal((h, w)).astype(np.float32)
    return np.clip(img * 255.0 + 10.0, 0, 255).astype(np.uint8)
