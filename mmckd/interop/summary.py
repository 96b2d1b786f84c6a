"""What an import or export did: counts per split and modality, and what was dropped or changed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mmckd.feature_file import MODALITIES, Clip

_ORDER = ("train", "valid", "dev", "test")


@dataclass
class TransferSummary:
    """One import or export. splits: clips per split; present: clips having each modality;
    notes: one-line remarks worth a user's attention (values replaced, keys not carried over, clips skipped)."""

    source: Path
    output: Path
    clips: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of_clips(cls, source: Path, output: Path, clips: list[Clip], notes: list[str]) -> TransferSummary:
        counted = Counter(c.split or "-" for c in clips)
        order = [s for s in _ORDER if s in counted] + sorted(s for s in counted if s not in _ORDER)
        splits = {s: counted[s] for s in order}
        present = {m: sum(c.sequence(m) is not None for c in clips) for m in MODALITIES}
        return cls(Path(source), Path(output), len(clips), splits, present, list(notes))

    def line(self) -> str:
        """The one-line result a command prints."""
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        present = ", ".join(f"{m} {self.present.get(m, 0)}" for m in MODALITIES)
        return f"{self.output}: {self.clips} clips from {self.source} ({splits}; present: {present})"
