"""Training, export and evaluation of the bundled classifier (needs the ``train`` extra).

Modules, in the order a run uses them: :mod:`data` (find, de-duplicate, split by patient,
read CheXpert-style CSVs), :mod:`augment` (photographed-film augmentations), :mod:`effnet_torch`
and :mod:`trainer` (PyTorch fine-tuning), :mod:`effnet_keras` and :mod:`export` (verified port,
TFLite conversion), :mod:`release` (thresholds, OOD reference, manifests), :mod:`evaluate`
(card numbers through the product runtime), :mod:`engines` (latency across runtimes).
Nothing here is imported by the appliance; torch and TensorFlow are imported lazily.
"""
