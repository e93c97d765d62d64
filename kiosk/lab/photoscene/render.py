"""Rendering a scene: linear light on the lightbox plane, through the camera, to a JPEG."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.lab.photoscene.camera import (
    _TONE_LUT_SIZE,
    _develop,
    _lowres_field,
    _noise_pool,
    _white_balance,
)
from kiosk.lab.photoscene.film import _film_canvas, _to_grey
from kiosk.lab.photoscene.geometry import (
    _film_rect_plane,
    _film_to_plane,
    _focal_rel,
    _image_area_cm,
    _local_scale,
    _order_clockwise,
    _project,
    _spec_homography,
    _warp,
)
from kiosk.lab.photoscene.lightbox import (
    _Canvas,
    _lightbox_canvas,
    _lightbox_rects,
    _poly,
    _tint,
)
from kiosk.lab.photoscene.overlays import _draw_film_items, _draw_rig_items, _glare_shape
from kiosk.lab.photoscene.spec import SceneSpec

_LUMA = (0.2126, 0.7152, 0.0722)
# Density an "average" chest film has in the lungs, used to meter when no film is present.
_NOMINAL_LUNG_DENSITY = 1.4
# Densities film metering may settle on (mid densities of a film).
_METER_DENSITY_RANGE = (0.8, 2.4)
_FILM_GLOSS_REFLECTANCE = 0.02  # diffuse part of the film surface reflection


@dataclass(frozen=True, eq=False)
class Photo:
    """A rendered photo and its ground truth (pixel centres at integer coordinates)."""

    image: np.ndarray  # RGB uint8 (H, W, 3)
    corners: np.ndarray | None  # (4, 2) float32 film corners TL, TR, BR, BL as seen
    image_corners: np.ndarray | None  # (4, 2) float32 radiograph image-area corners
    in_frame: bool  # the whole film sheet is inside the frame (False without a film)
    lung_clipped_frac: float  # central 60%x60% of the image area at 255 in any channel
    lung_crushed_frac: float  # same region at <= 3 in all channels
    lung_glare: float  # mean glare / mean transmitted luminance over that region
    reference: np.ndarray | None  # rig reference photo, RGB uint8, or None
    spec: SceneSpec


def render_photo(
    digital: np.ndarray | None,
    spec: SceneSpec,
    rng: np.random.Generator,
    size: tuple[int, int] = (1080, 1920),
) -> Photo:
    """Render the photo of ``spec`` at ``size`` = (height, width).

    ``digital``: the chest radiograph (grey or RGB, uint8/uint16/float, bone bright; any size,
    stretched to the image area). Required for "film", ignored for "sheet" and "empty".
    ``rng`` is used for sensor noise only (the layout comes from ``spec.layout_seed``).
    """
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError("size too small")
    has_film = spec.kind != "empty"
    grey = None
    if spec.kind == "film":
        if digital is None:
            raise ValueError("a 'film' scene needs a digital radiograph")
        grey = _to_grey(digital)
    lay = np.random.default_rng(spec.layout_seed)
    hm = _spec_homography(spec, h, w)
    tint = _tint(spec.colour_temp_k)
    wb = _white_balance(spec, tint)
    amb = spec.ambient_cd_m2
    panel = spec.panel_cd_m2

    # ---- lightbox canvas: only the part of the (padded) lightbox the camera can see.
    frame = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    vis, _ = _project(np.linalg.inv(hm), frame)
    _, housing = _lightbox_rects(spec)
    pad = 6.0
    x0, x1 = max(vis[:, 0].min(), housing[0] - pad), min(vis[:, 0].max(), housing[2] + pad)
    y0, y1 = max(vis[:, 1].min(), housing[1] - pad), min(vis[:, 1].max(), housing[3] + pad)
    if x1 <= x0 or y1 <= y0:
        x1, y1 = x0 + 1.0, y0 + 1.0
    res = _local_scale(hm, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    # About one canvas pixel per photo pixel where the plane is nearest; capped for 12 MP.
    res = min(res, math.sqrt(1.5 * h * w / ((x1 - x0) * (y1 - y0))))
    cvs = _Canvas(
        x0, y0, res, max(2, math.ceil((x1 - x0) * res)), max(2, math.ceil((y1 - y0) * res))
    )
    lum, refl, tau_r, refl_r = _lightbox_canvas(spec, cvs)
    _draw_rig_items(spec, cvs, tau_r, refl_r, lay)
    lum *= tau_r
    refl *= tau_r
    m_box = hm @ cvs.to_plane()
    # lt: panel luminance left by the rig overlays (clips, dust); rt: room-light reflectance
    # under them; rr: the overlays' own reflectance.
    # Planes that would be all zero are not warped (a warp is a large share of the time).
    has_rig = spec.clips > 0 or spec.dust > 0 or (not has_film and spec.magnets > 0)
    lt, rt = _warp([lum, refl], m_box, w, h, (0.0, spec.wall_reflectance))
    rr = _warp([refl_r], m_box, w, h, (0.0,))[0] if has_rig else None
    del lum, refl, tau_r, refl_r
    pw = None
    if spec.glare != "none":
        # How glossy each spot is for glare, relative to the film: the lit acrylic panel about
        # half, the housing and wall (matte) nothing.
        pw = np.minimum(lt, np.float32(0.5 * panel))
        pw *= np.float32(1.0 / panel)

    f = _focal_rel(spec.hfov_deg, spec.aspect) * h
    cx0, cy0 = (w - 1) / 2.0, (h - 1) / 2.0
    vexp = -2.0 * spec.vignetting  # cos^4 = (1 + r^2/f^2)^-2, softened by lens shading correction
    vig = _lowres_field(h, w, lambda x, y: (1.0 + ((x - cx0) ** 2 + (y - cy0) ** 2) / f**2) ** vexp)

    # ---- meter on the panel: brightest visible panel level (before any film).
    sub3 = (slice(None, None, 3), slice(None, None, 3))
    lum_s = lt[sub3]
    panel_px = lum_s > 0.05 * panel
    if np.any(panel_px):
        box_level = float(np.percentile((lum_s * vig[sub3])[panel_px], 99.5))
        panel_median = float(np.median(lum_s[panel_px]))
    else:
        box_level = panel_median = panel
    del lum_s, panel_px
    # WB gains are >= 1, so the post-WB clip binds first: keep the brightest channel below it.
    chan_peak = float(np.max(tint * wb))
    gain_box = spec.box_target / max(box_level * chan_peak, 1e-9)

    # Rig reference radiance = tint_c * lt + ref_refl (no film, tape, magnets or glare).
    ref_refl = None
    if spec.reference:
        ref_refl = rt * np.float32(amb) if rr is None else cv2.addWeighted(rt, amb, rr, amb, 0.0)

    corners = image_corners = None
    in_frame = False
    lung_sel = None
    lung_glare = 0.0
    glare_rgb = 1.0 + lay.uniform(-0.05, 0.05, 3)
    # The film base is faintly blue: a little less density in blue than in red.
    base_c = 10.0 ** (-spec.base_blue * np.array([0.5, 0.0, -0.5]))
    if has_film:
        film_quad = _film_rect_plane(
            (spec.film_x_cm, spec.film_y_cm),
            spec.film_w_cm,
            spec.film_h_cm,
            spec.film_rot_deg,
            (0.0, 0.0, spec.film_w_cm, spec.film_h_cm),
        )
        fres = _local_scale(hm, film_quad)
        fres = min(fres, math.sqrt(1.5 * h * w / (spec.film_w_cm * spec.film_h_cm)))
        film_planes, to_cm = _film_canvas(grey, spec, fres, lay)
        m_film = hm @ _film_to_plane(spec) @ to_cm
        ts, cov = _warp(film_planes, m_film, w, h, (1.0, 0.0))
        del film_planes
        lt_film = lt
        if spec.tape > 0 or spec.magnets > 0:
            tau_i = np.ones((cvs.nh, cvs.nw), np.float32)
            refl_i = np.zeros((cvs.nh, cvs.nw), np.float32)
            _draw_film_items(spec, cvs, tau_i, refl_i, lay)
            ti, ri = _warp([tau_i, refl_i], m_box, w, h, (1.0, 0.0))
            del tau_i, refl_i
            # The reference keeps the bare-panel lt (tape and magnets leave with the film).
            lt_film = lt * ti if spec.reference else np.multiply(lt, ti, out=lt)
            rt *= ti
            if rr is None:
                rr = ri
            else:
                rr += ri
            del ti, ri

        pts, _ = _project(hm, film_quad)
        corners = _order_clockwise(pts)
        ia = _image_area_cm(spec)
        centre = (spec.film_x_cm, spec.film_y_cm)
        fw, fh, frot = spec.film_w_cm, spec.film_h_cm, spec.film_rot_deg
        ipts, _ = _project(hm, _film_rect_plane(centre, fw, fh, frot, ia))
        image_corners = _order_clockwise(ipts)
        in_frame = bool(
            corners[:, 0].min() >= 0
            and corners[:, 0].max() <= w - 1
            and corners[:, 1].min() >= 0
            and corners[:, 1].max() <= h - 1
        )
        du, dv = ia[2] - ia[0], ia[3] - ia[1]
        lung_rect = (ia[0] + 0.2 * du, ia[1] + 0.2 * dv, ia[0] + 0.8 * du, ia[1] + 0.8 * dv)
        lpts, _ = _project(hm, _film_rect_plane(centre, fw, fh, frot, lung_rect))
        lung_mask = np.zeros((h, w), np.uint8)
        _poly(lung_mask, lpts, 1)
        lung_sel = lung_mask.view(bool)

        glare = _glare_shape(spec, h, w, pts, lay)
        if glare is not None and pw is not None:
            # Glossy film reflects fully, the panel by pw, wall and housing not at all.
            wgt = pw + cov
            wgt -= pw * cov
            glare *= wgt
            del wgt
        # Room light: panel/housing reflectance seen through the film (twice), the film's
        # own surface reflection, and the overlays on top. Outside the film ts = 1.
        reflected = ts * ts
        reflected *= rt
        reflected = np.asarray(cv2.scaleAdd(cov, _FILM_GLOSS_REFLECTANCE, reflected), np.float32)
        if rr is not None:
            reflected += rr
        del rt, rr, pw

        # Lung statistics and film metering (on a 2x subsample: plenty of pixels).
        sub2 = (slice(None, None, 2), slice(None, None, 2))
        sel2 = lung_sel[sub2]
        if np.any(sel2):
            lt2 = lt_film[sub2][sel2] * ts[sub2][sel2]
            cov2 = cov[sub2][sel2]
            trans2 = [lt2 * (1.0 + cov2 * (base_c[c] - 1.0)) * tint[c] for c in range(3)]
            refl2 = reflected[sub2][sel2] * amb
            vig2 = vig[sub2][sel2]
            film_level = float(np.median((trans2[1] + refl2) * vig2))
            # "Metered on the film" means its mid densities are well exposed: clamp the metered
            # density to a mid range, or a mostly black CT sheet (or a mostly clear region)
            # would drive the exposure to absurd values.
            bare = float(np.median(lt_film[sub2][sel2] * vig2)) * float(tint[1])
            if bare > 0:
                lo, hi = _METER_DENSITY_RANGE
                film_level = min(max(film_level, bare * 10.0**-hi), bare * 10.0**-lo)
            if glare is not None:
                trans_y = sum(_LUMA[c] * trans2[c] for c in range(3))
                g_y = float(np.dot(_LUMA, glare_rgb)) * spec.glare_strength * panel
                lung_glare = float(
                    g_y * glare[sub2][sel2].mean() / max(float(np.mean(trans_y)), 1e-12)
                )
            del lt2, cov2, trans2, refl2, vig2
        else:
            film_level = panel_median * 10.0**-_NOMINAL_LUNG_DENSITY
        trans_v = lt_film * vig
        del lt_film
        trans_v *= ts  # neutral transmitted luminance
        ctrans_v = trans_v * cov  # the part that went through the (slightly blue) base
        del ts, cov
    else:
        glare = _glare_shape(spec, h, w, None, lay)
        if glare is not None and pw is not None:
            glare *= pw
        del pw
        reflected = rt if rr is None else rt + rr
        del rt, rr
        film_level = panel_median * 10.0**-_NOMINAL_LUNG_DENSITY
        lt_v = lt * vig

    gain_film = spec.film_target / max(film_level * float(wb[1]), 1e-12)
    mix = spec.metering_mix
    gain = math.exp((1.0 - mix) * math.log(gain_film) + mix * math.log(gain_box))
    gain *= 2.0**spec.exposure_ev

    # Exposed sensor planes, scaled for the LUT (see _develop): k_c * vig * radiance_c.
    k = gain * wb * (_TONE_LUT_SIZE - 1)
    reflected *= vig
    if glare is not None:
        glare *= vig
    planes = []
    for c in range(3):
        if has_film:
            wt = float(tint[c] * k[c])
            p = cv2.addWeighted(trans_v, wt, ctrans_v, wt * float(base_c[c] - 1.0), 0.0)
            p = cv2.scaleAdd(reflected, float(amb * k[c]), p)
        else:
            p = cv2.addWeighted(lt_v, float(tint[c] * k[c]), reflected, float(amb * k[c]), 0.0)
        if glare is not None:
            p = cv2.scaleAdd(glare, float(glare_rgb[c] * spec.glare_strength * panel * k[c]), p)
        planes.append(np.asarray(p, np.float32))
    del reflected, glare
    if has_film:
        del trans_v, ctrans_v
    else:
        del lt_v
    noise = _noise_pool(rng, h * w, 6 if spec.reference else 3)
    image = _develop(planes, spec, wb, noise, 0)

    clipped = crushed = 0.0
    if lung_sel is not None:
        if np.any(lung_sel):
            px = image[lung_sel]
            clipped = float(np.mean((px == 255).any(axis=1)))
            crushed = float(np.mean((px <= 3).all(axis=1)))
            del px
        else:
            clipped = crushed = float("nan")  # lung region entirely out of frame
        del lung_sel

    reference = None
    if ref_refl is not None:
        lt *= vig
        ref_refl *= vig
        ref_planes = [
            np.asarray(
                cv2.addWeighted(lt, float(tint[c] * k[c]), ref_refl, float(k[c]), 0.0), np.float32
            )
            for c in range(3)
        ]
        del ref_refl
        reference = _develop(ref_planes, spec, wb, noise, 3)

    return Photo(
        image=image,
        corners=corners,
        image_corners=image_corners,
        in_frame=in_frame,
        lung_clipped_frac=clipped,
        lung_crushed_frac=crushed,
        lung_glare=lung_glare,
        reference=reference,
        spec=spec,
    )
