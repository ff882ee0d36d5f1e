"""RadiologyAI: a research demo that classifies chest X-rays as covid, normal or pneumonia.

Not a diagnostic device.
"""

CLASS_NAMES = ("covid", "normal", "pneumonia")
DISCLAIMER = "Research demo, not for diagnosis. Do not use it to make clinical decisions."

__version__ = "0.1.0"
