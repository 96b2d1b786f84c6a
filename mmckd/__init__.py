"""mmckd: multimodal sentiment analysis that keeps working when a modality is missing."""

__version__ = "0.1.0"


def load(path=None, asr=None):
    """Load a trained model bundle for prediction: ``mmckd.load("runs/NAME").predict("clip.mp4")``.

    asr: transcribe clips without a transcript (None: as the bundle was configured)."""
    from mmckd.predict import load as _load

    return _load(path, asr=asr)
