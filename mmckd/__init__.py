"""mmckd: multimodal sentiment analysis that keeps working when a modality is missing."""

__version__ = "0.1.0"


def load(path=None):
    """Load a trained model bundle for prediction: ``mmckd.load("runs/NAME").predict("clip.mp4")``."""
    from mmckd.predict import load as _load

    return _load(path)
