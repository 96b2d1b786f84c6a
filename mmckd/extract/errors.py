"""Exceptions of the extraction stage."""


class MediaError(Exception):
    """The media file cannot be read at all (empty, corrupt, not media). The clip is marked failed."""


class ModalityMissing(Exception):
    """One modality is absent from a readable clip (no audio track, silence, no face, no transcript)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
