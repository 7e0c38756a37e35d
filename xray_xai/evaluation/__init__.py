"""Offline tooling that scores checkpoints: classification metrics, segmentation quality and
faithfulness of the explanations. Never imported by the app."""
