"""Offline tooling that scores checkpoints. Never imported by the app.

Commands (``python -m xray_xai.evaluation.NAME``): ``classifier`` (metrics and plots of a
classifier; also ``python -m xray_xai.evaluate``), ``faithfulness`` (deletion/insertion and lung
figures of the explanation maps), ``lungs`` (segmentation quality), ``similar`` (label agreement of
the similar films), ``mask_leak`` (whether the reference lung masks could leak the label).

What they share: ``scoring`` (films scored as the app scores an upload), ``checkpoint_metrics``
(the JSON sections that read the model card), ``plots`` (the evaluation PNGs), ``lung_scoring``
(Dice and IoU against reference masks). The metrics themselves are :mod:`xray_xai.metrics`.
"""
