"""From camera frames to one good still per film placement.

Three jobs, one module each (``detector``, ``bracket``, ``auto``), plus ``rig`` (the empty
lightbox reference):

* **Is a film there, and is it still?** ``FilmDetector`` compares small grey preview frames with
  the empty-lightbox appearance (learnt from the first frames, or given) and with the previous
  frame. States: ``empty -> placing (motion) -> stable -> captured -> removed -> empty``. A film
  left on the box is captured once; only its removal (or ``capture_now``) allows another.
* **Expose for the film, not the lightbox.** Metered on the bare lightbox, the dense lung fields
  of a film land in the bottom few 8-bit codes and drown in noise. ``meter_film_ev`` measures the
  film region of the preview in linear light and puts the film's brightest content just below
  clipping in the *shortest* frame of the bracket; the longer frames then lift the lung fields.
  The bare lightbox around the film may clip: the rig reference (``calibrate_rig``, taken at an
  unclipped exposure) is what measures the lightbox.
* **Bracket and merge.** ``merge_bracket`` merges the frames in linear light (inverse sRGB),
  each divided by its relative exposure and weighted by a hat function that is zero near
  clipping and near black, times its exposure (longer frames have better signal-to-noise). The
  result is encoded back to sRGB with white at the shortest frame's clipping point, so it reads
  like one unclipped, low-noise photo at ``exposure_us`` (metadata) and stays radiometrically
  linear after decoding: rectify's flat-field / density recovery relies on that. Mertens
  exposure fusion would look nicer but weights by contrast and saturation per pixel, which
  destroys the pixel-to-luminance relation that density measurement needs.

``AutoCapture`` runs all of it in a thread, survives a camera that errors or disappears
(status + log, exponential backoff with jitter, reopen) and exposes a heartbeat that stops when
the camera thread is stuck.
"""
