"""The scene description: every sampled parameter of one photo, and its coarse factors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SceneKind = Literal["film", "empty", "sheet"]


@dataclass(frozen=True)
class SceneSpec:
    """Every sampled parameter of one scene; plain numbers/strings/bools only.

    Lengths are in cm on the lightbox plane (origin at the lightbox centre, x right, y down),
    luminances in cd/m^2, angles in degrees. Film fields are zero / "none" for empty scenes.
    """

    kind: str  # "film" | "empty" | "sheet"
    cut_off: bool  # sampled so that part of the film is outside the frame
    layout_seed: int  # seeds the layout details drawn at render time
    aspect: float  # frame width / height the geometry was sampled for
    # --- camera pose and framing
    framing: str  # "fills" | "medium" | "small"
    subject_frac: float  # subject height / frame height at the subject centre
    center_x: float  # subject centre in the frame, fraction of width
    center_y: float  # subject centre in the frame, fraction of height
    aim_x_cm: float  # subject centre on the plane (film centre, or lightbox centre)
    aim_y_cm: float
    subject_h_cm: float  # film height, or panel height for empty scenes
    hfov_deg: float  # horizontal field of view at the sampled aspect
    pitch_deg: float  # camera tilt about the image x axis
    yaw_deg: float  # camera tilt about the image y axis ("roll" of the rig)
    rot_deg: float  # in-plane rotation about the optical axis
    # --- lightbox
    bays: int
    bay_w_cm: float
    bay_h_cm: float
    housing_cm: float
    divider_cm: float
    housing_reflectance: float
    wall_reflectance: float
    panel_cd_m2: float  # luminance as used (already dimmed for dim panels)
    panel_dim: bool
    ambient_cd_m2: float  # luminance of a white (reflectance 1) surface under the room light
    colour_temp_k: float
    tubes: int  # fluorescent tubes per bay (vertical)
    banding: float  # relative amplitude of the tube stripes
    tube_phase: float  # tube offset as a fraction of the tube pitch
    falloff: float  # relative luminance loss at the panel edges
    bay2_gain: float  # second bay luminance relative to the first
    # --- film
    orientation: str  # "portrait" | "landscape" | "none"
    film_w_cm: float  # as placed (horizontal extent)
    film_h_cm: float
    film_x_cm: float  # film centre on the plane
    film_y_cm: float
    film_rot_deg: float  # hung slightly crooked
    margin_kind: str  # "clear" | "black" | "grey" | "none"
    margin_density: float
    margin_left: float  # fraction of film width / height per side
    margin_top: float
    margin_right: float
    margin_bottom: float
    base_fog: float
    d_max: float
    film_gamma: float  # slope of the H&D curve at its midpoint
    log_e_range: float  # log10 exposure span of digital grey 1 -> 0
    mid_grey: float  # digital grey that lands at the curve's midpoint
    base_blue: float  # blue-minus-red density of the film base (negative tint)
    edge_blur_cm: float  # collimator/penumbra softness of the film image
    flash_card: bool
    flash_corner: str  # "tl" | "tr" | "bl" | "br" | "none"
    flash_density: float
    marker: str  # "R" | "L" | "none"
    marker_side: str  # "left" | "right" | "none"
    sheet_rows: int  # 0 unless kind == "sheet"
    sheet_cols: int
    # --- things on top
    clips: int
    magnets: int
    tape: int
    dust: int
    # --- room glare
    glare: str  # "none" | "faint" | "strong"
    glare_spots: int
    glare_bands: int
    glare_strength: float  # peak glare luminance relative to panel_cd_m2
    # --- exposure and camera pipeline
    metering: str  # "film" | "lightbox" | "between"
    metering_mix: float  # 0 = metered on film, 1 = on the panel (log-exposure interpolation)
    exposure_ev: float  # bias on top of the metered exposure
    film_target: float  # linear sensor level for the lung median when metered on the film
    box_target: float  # linear sensor level of the bright panel when metered on the panel
    vignetting: float  # exponent applied to the cos^4 law (lens shading correction leftover)
    blur_sigma: float  # Gaussian defocus sigma in px at 1080 rows
    motion_px: float  # motion blur length in px at 1080 rows (0 = none)
    motion_angle_deg: float
    full_well: float  # photo-electrons at full scale (shot noise)
    read_noise: float  # read noise as a fraction of full scale
    wb_correction: float  # fraction of the panel tint the camera white balance removes
    wb_error_r: float
    wb_error_b: float
    tone: str  # "srgb" | "gamma_s"
    s_curve: float
    jpeg_quality: int
    reference: bool  # a rig reference photo comes with this photo


def factors(spec: SceneSpec) -> dict[str, str]:
    """Coarse, human-readable scene factors for per-factor reporting."""
    blur_eff = max(spec.blur_sigma, spec.motion_px / 2.5)
    extras = [
        name
        for name, on in (
            ("clips", spec.clips > 0),
            ("tape", spec.tape > 0),
            ("magnets", spec.magnets > 0),
            ("dust", spec.dust > 0),
            ("flash", spec.flash_card),
            ("marker", spec.marker != "none"),
        )
        if on
    ]
    return {
        "kind": spec.kind,
        "cut_off": "yes" if spec.cut_off else "no",
        "framing": spec.framing,
        "metering": spec.metering,
        "margin": spec.margin_kind,
        "glare": spec.glare,
        "panel": "dim" if spec.panel_dim else "normal",
        "bays": str(spec.bays),
        "tilt": "high" if max(abs(spec.pitch_deg), abs(spec.yaw_deg)) >= 5.0 else "low",
        "blur": "sharp" if blur_eff < 0.7 else "soft" if blur_eff < 1.8 else "blurred",
        "jpeg": "high" if spec.jpeg_quality >= 75 else "low",
        "reference": "yes" if spec.reference else "no",
        "orientation": spec.orientation,
        "extras": "+".join(extras) if extras else "none",
    }
