"""Chest X-ray pneumonia classifier with faithful, measured explanations.

Research and education only: not a medical device.
"""

CLASSES = ("NORMAL", "PNEUMONIA")

DISCLAIMER = (
    "Research and education only. This tool is not a medical device and does not give a "
    "diagnosis. Its output can be wrong. Any decision about a patient must be made by a "
    "qualified clinician who has examined the patient and the full imaging study."
)
