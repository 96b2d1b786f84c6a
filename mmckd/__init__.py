"""mmckd: multimodal sentiment analysis that keeps working when a modality is missing."""

__version__ = "0.1.0"
