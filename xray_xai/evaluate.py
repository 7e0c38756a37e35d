"""``python -m xray_xai.evaluate``: the stable name of the evaluation command.

Checkpoints are scored outside the project with this command, so it keeps its name; the code
lives in :mod:`xray_xai.evaluation.classifier`.
"""

from .evaluation.classifier import main

if __name__ == "__main__":
    main()
