"""Offline tooling that fits things on the training data. Never imported by the app.

Commands (``python -m xray_xai.training.NAME``): ``classifier`` (train one network), ``ensemble``
(assemble and calibrate members), ``lungs`` (the lung segmenter), ``lung_crops`` (lung-box copies
of a dataset), ``shortcuts`` (shortcut-warning thresholds), ``conformal`` (conformal thresholds and
ordered operating points).

What they share: ``augment`` (batch augmentation), ``finalize`` (decoding films, scoring,
calibration metrics and saving a checkpoint), ``loop`` (the resumable epoch loop and its learning
rate), ``guidance`` (the lung-mask guidance loss). No command imports another.
"""
