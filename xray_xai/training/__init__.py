"""Offline tooling that fits things on the training data: classifier and lung-segmenter
training, and thresholds fitted on the validation split. Never imported by the app."""
