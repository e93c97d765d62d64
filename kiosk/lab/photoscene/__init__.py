"""Physically based synthetic photos of a film clipped on a clinic lightbox.

What it does
    ``sample_scene`` draws every parameter of one scene (lightbox, film, things on top, room
    glare, camera pose, lens, exposure, tone curve, JPEG quality) into a plain, JSON-serialisable
    ``SceneSpec``. ``render_photo`` turns a spec plus a digital chest radiograph into the photo a
    camera would take, with the ground truth other code needs (film corners, image-area corners,
    whether the film is in frame, how much of the lung region is clipped/crushed/glared), and
    optionally the technician's "rig reference" photo of the same scene without the film.

    The model, in linear light on the lightbox plane (centimetres, lightbox centre at the origin,
    x right, y down): panel luminance (tube banding, edge fall-off, colour tint, dim panels) times
    film transmittance 10^-D (H&D curve of the digital grey, margins, flash card, lead marker,
    slightly blue base), plus room light reflected by wall, housing, film and overlays (clips,
    magnets, tape, dust), plus specular glare. A pinhole camera (pitch/yaw/in-plane rotation)
    maps the plane to the sensor by a homography; then vignetting, blur, exposure (metered on
    the film, on the panel, or in between), shot + read noise, clipping, imperfect white balance,
    tone curve and a real cv2 JPEG round trip.

What it does NOT do
    It is not a radiograph simulator: the X-ray image is the caller's digital image (except for
    the CT/MR "sheet" scenes, whose tiles are crude procedural drawings). There is no lens
    distortion, no rolling shutter, no demosaicing, no camera denoising/sharpening, no film
    curl or sag (the film is flat on the plane), no inter-reflection between film and panel and
    no spectral rendering (three RGB channels only). It is written from a physical description
    only and deliberately shares no code with the project's other scene renderer, so the two can
    check each other.

Randomness: ``sample_scene`` consumes its generator; ``render_photo`` draws the layout details
(clip/dust/tape/glare positions, flash-card strokes, sheet tiles) from ``spec.layout_seed`` and
uses its own generator only for sensor noise, so one spec renders the same scene with fresh
noise for each generator.

Modules, in the order a render uses them: :mod:`spec` (``SceneSpec``, ``factors``),
:mod:`sampling` (``sample_scene``), :mod:`geometry` (camera pose, homography, warping),
:mod:`lightbox` (panel, tubes, housing, room), :mod:`film` (H&D curve, margins, flash card,
marker, sheet tiles), :mod:`overlays` (clips, tape, magnets, dust, glare), :mod:`camera`
(vignetting, white balance, blur, noise, tone curve, JPEG) and :mod:`render`
(``render_photo``, ``Photo``).
"""

from __future__ import annotations

from kiosk.lab.photoscene.render import Photo, render_photo
from kiosk.lab.photoscene.sampling import FILM_SIZES_CM as FILM_SIZES_CM
from kiosk.lab.photoscene.sampling import sample_scene
from kiosk.lab.photoscene.spec import SceneKind as SceneKind
from kiosk.lab.photoscene.spec import SceneSpec, factors

__all__ = ["Photo", "SceneSpec", "factors", "render_photo", "sample_scene"]
