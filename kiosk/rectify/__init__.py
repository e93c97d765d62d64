"""Photo of a film on the lightbox -> the film as the model expects it, with a quality verdict.

Steps (``rectifier.rectify``; one module per step: ``photometry``, ``locate``, ``refine``,
``warp``, ``gates``):

1. **Lightbox model** on a copy with a long side of 640 px, in linear light (inverse sRGB):
   the rig reference's flat field scaled to this photo's exposure, or, without one, a robust
   smooth polynomial surface fitted to the visible lightbox. ``T = L / L_lightbox`` is the
   transmittance: ~1 on the lightbox, ~0.55-0.75 on the clear film margin, lower inside.
2. **Film quad, coarse**: the largest rectangular region with ``T`` below the lightbox level
   inside the lit panel; four robust line fits to its outline (a clip or fingers on an edge
   are outliers).
3. **Refinement at full resolution**: along short profiles across each side, the first
   crossing (from the outside in) of the level half-way between lightbox and clear film gives
   the film edge to a fraction of a pixel; robust line fits; corners are line intersections.
4. **Warp** to the canonical view (aspect from the quad), **density**
   ``D = -log10(I / I_lightbox)``, crop the clear margins, map density linearly to grey with
   robust percentiles (low density = bone = bright).
5. **Quality gate**: no film, cut off, blurred, glare, under/over-exposed, not an X-ray.

Orientation is what the camera sees: the film is clipped upright, the top of the photo is the
top of the film; nothing is rotated by content.
"""
