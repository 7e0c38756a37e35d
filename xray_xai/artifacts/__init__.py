"""Builders of the files the app ships next to the classifier, each a command
(``python -m xray_xai.artifacts.NAME``): ``similar_index`` (the similar-case index) and
``model_report`` (the Model tab's per-film probabilities and error gallery)."""
