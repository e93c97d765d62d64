"""Calibration of the classifier's findings for photographed films.

A model trained on digital chest X-rays is miscalibrated (and loses some ranking) on photographs
of films (Kuo et al., npj Digital Medicine 4:25, 2021). A small labelled set of photos from the
site brings it back. Everything numeric runs with numpy only, on the Raspberry Pi; the metrics
themselves live in :mod:`kiosk.stats`. One idea per module:

* :mod:`~kiosk.calibration.optim`: golden section, Newton and L-BFGS for logistic fits;
* :mod:`~kiosk.calibration.folds`: stratified k-fold assignment;
* :mod:`~kiosk.calibration.calibrators`: temperature, Platt, isotonic and the refit head;
* :mod:`~kiosk.calibration.records`: :class:`~kiosk.calibration.records.CalibrationRecord`,
  its JSON form and applying it to logits;
* :mod:`~kiosk.calibration.selection`: minimum cases per method, the method choice, its
  nested cross-validated estimate, and the rules for activating a record;
* :mod:`~kiosk.calibration.fitting`: :func:`~kiosk.calibration.fitting.fit_calibration`;
* :mod:`~kiosk.calibration.factory`: the factory calibration shipped with a model;
* :mod:`~kiosk.calibration.drift`: drift checks and refit proposals for the site loop;
* :mod:`~kiosk.calibration.reliability`: reliability diagrams as SVG;
* :mod:`~kiosk.calibration.workflow`: labelled photos or confirmed cases -> a stored, checked
  record (the one path for `kiosk calibrate` and the supervisor page).

Import names from those modules; this package re-exports nothing.
"""
