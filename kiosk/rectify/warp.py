"""Warp the film to its canonical view and crop its clear margins.

What this module does not do: judge the result (``gates``).
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.imaging.resize import box_shrink

OUTPUT_LONG_SIDE_PX = 1024  # cap on the rectified film's long side


def quad_sides(corners: np.ndarray) -> tuple[float, float]:
    """(width, height) of a quad (TL, TR, BR, BL): the mean lengths of its opposite sides."""
    tl, tr, br, bl = np.asarray(corners, np.float64)
    fw = float(np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    fh = float(np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    return fw, fh


def film_size(corners: np.ndarray) -> tuple[int, int]:
    """(width, height) of the rectified film: the quad's mean side lengths, long side capped
    at ``OUTPUT_LONG_SIDE_PX``."""
    fw, fh = quad_sides(corners)
    s = min(1.0, OUTPUT_LONG_SIDE_PX / max(fw, fh))
    return max(16, round(fw * s)), max(16, round(fh * s))


def _target(size: tuple[int, int]) -> np.ndarray:
    ow, oh = size
    return np.array([[0, 0], [ow, 0], [ow, oh], [0, oh]], np.float32) - 0.5


def upright(image: np.ndarray, corners: np.ndarray, min_side: int = 1) -> np.ndarray:
    """The quadrilateral ``corners`` (TL, TR, BR, BL) of ``image`` warped to an upright
    rectangle as long as its longer opposite sides (at least ``min_side`` px), as it is (colour
    stays colour; no box averaging: for a quad about the image's own scale)."""
    c = np.asarray(corners, np.float32)
    w = max(min_side, round(float(max(np.linalg.norm(c[1] - c[0]), np.linalg.norm(c[2] - c[3])))))
    h = max(min_side, round(float(max(np.linalg.norm(c[3] - c[0]), np.linalg.norm(c[2] - c[1])))))
    m = cv2.getPerspectiveTransform(c, _target((w, h)))
    return cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_LINEAR)


def warp_film(photo: np.ndarray, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The film region of one frame (RGB uint8) -> grey uint8 of ``size`` (w, h), canonical view.

    Only the film's bounding box is touched: converted to grey (the sRGB-encoded luminance of
    a near-neutral film), box-averaged by an integer factor to about 1-1.5x the output scale
    (so the perspective warp does not alias), then warped.
    """
    ow, oh = size
    height, width = photo.shape[:2]
    x0 = max(0, int(np.floor(corners[:, 0].min())) - 2)
    y0 = max(0, int(np.floor(corners[:, 1].min())) - 2)
    x1 = min(width, int(np.ceil(corners[:, 0].max())) + 3)
    y1 = min(height, int(np.ceil(corners[:, 1].max())) + 3)
    k = max(1, round(max(x1 - x0, y1 - y0) / max(ow, oh) / 1.25))
    # grow the box to whole k x k cells (towards the frame's inside) so none of it is dropped
    x1, y1 = min(width, x0 + -(-(x1 - x0) // k) * k), min(height, y0 + -(-(y1 - y0) // k) * k)
    x0, y0 = max(0, x1 - -(-(x1 - x0) // k) * k), max(0, y1 - -(-(y1 - y0) // k) * k)
    roi = photo[y0:y1, x0:x1]
    grey = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY) if roi.ndim == 3 else roi
    grey = box_shrink(grey, k)
    src_corners = ((corners - [x0, y0] + 0.5) / k - 0.5).astype(np.float32)
    m_src = cv2.getPerspectiveTransform(src_corners, _target(size))
    return cv2.warpPerspective(grey, m_src, (ow, oh), flags=cv2.INTER_LINEAR)


def warp_lightbox(
    log_lightbox_work: np.ndarray, corners: np.ndarray, work_scale: float, size: tuple[int, int]
) -> np.ndarray:
    """The smooth log10 lightbox model (work resolution) under the film, in the film's view.

    The field is smooth, so it is warped to a quarter of the output size and enlarged.
    """
    ow, oh = size
    qw, qh = max(4, ow // 4), max(4, oh // 4)
    m_full = cv2.getPerspectiveTransform(corners.astype(np.float32), _target((qw, qh)))
    off = 0.5 / work_scale - 0.5
    to_full = np.array([[1 / work_scale, 0, off], [0, 1 / work_scale, off], [0, 0, 1]])
    small = cv2.warpPerspective(
        log_lightbox_work,
        m_full @ to_full,
        (qw, qh),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return cv2.resize(small, (ow, oh), interpolation=cv2.INTER_LINEAR)


def crop_margins(density: np.ndarray, base_d: float) -> tuple[int, int, int, int]:
    """Rows/columns of clear film (density near base+fog) at each side: (top, bottom, left,
    right) counts to cut. A row is margin when most of it is clear film."""
    h, w = density.shape
    clear = density < base_d + 0.12
    row_frac = clear[:, w // 10 : w - w // 10].mean(axis=1)
    col_frac = clear[h // 10 : h - h // 10, :].mean(axis=0)

    def run(frac: np.ndarray, limit: int) -> int:
        k = 0
        while k < limit and frac[k] > 0.7:
            k += 1
        return k

    top = run(row_frac, h // 5)
    bottom = run(row_frac[::-1], h // 5)
    left = run(col_frac, w // 5)
    right = run(col_frac[::-1], w // 5)
    # a pixel more: the edge of the image area is blurred into the margin
    pad = max(1, round(0.004 * max(h, w)))
    return (
        top + pad if top else 0,
        bottom + pad if bottom else 0,
        left + pad if left else 0,
        right + pad if right else 0,
    )
