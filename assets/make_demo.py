"""Make the demo material: short talking-head clips of clearly positive, neutral and negative sentences.

Speech by espeak-ng (several voices and speeds), the picture a face photo (scikit-image's astronaut),
muxed by ffmpeg. Writes OUT/clips/*.mp4 (24 clips, 8 per polarity: 18 train, 3 valid, 3 test),
OUT/label.csv (id,text,label,mode) and OUT/heldout/happy.mp4 + happy.txt (a positive clip kept out of
training, with its sidecar transcript, for `mmckd predict`). Deterministic; a few seconds on 2 cores.

    python assets/make_demo.py assets/demo
"""

from __future__ import annotations

import csv
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mmckd.testing.clips import make_clip

POSITIVE = [
    ("I absolutely loved this movie, it was wonderful.", 3.0),
    ("What a fantastic film, the acting was brilliant.", 2.6),
    ("This is the best story I have seen in years.", 2.8),
    ("I really enjoyed it, great music and a happy ending.", 2.2),
    ("A beautiful and charming film, I am delighted.", 2.4),
    ("Excellent work, I would happily watch it again.", 2.0),
    ("The cast was amazing and the jokes were great.", 1.8),
    ("Such a lovely experience, it made me smile.", 2.2),
]
NEUTRAL = [
    ("The movie is about two hours long.", 0.0),
    ("It was released in the spring in several countries.", 0.0),
    ("The story takes place in a small town.", 0.2),
    ("There are four main characters in the film.", 0.0),
    ("I watched it on a Tuesday evening.", -0.2),
    ("The director also wrote the script.", 0.0),
    ("Most scenes were filmed indoors.", 0.0),
    ("The film was shown in the large theater.", 0.2),
]
NEGATIVE = [
    ("I hated this movie, it was terrible.", -3.0),
    ("What an awful film, the acting was horrible.", -2.6),
    ("This is the worst story I have seen in years.", -2.8),
    ("I was bored and annoyed, a complete waste of time.", -2.4),
    ("A sad and ugly mess, I am very disappointed.", -2.2),
    ("Dreadful work, I would never watch it again.", -2.0),
    ("The cast was dull and the jokes were painful.", -1.8),
    ("Such a miserable experience, it made me angry.", -2.4),
]
HELDOUT = ("I loved it, what a great and happy film.", 2.6)
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+m3"]
SPLITS = ["train", "train", "train", "train", "train", "valid", "test", "train"]


def main(out: Path) -> None:
    """Write the demo material into out (see module docstring)."""
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows, jobs = [], []
    for polarity, group in (("pos", POSITIVE), ("neu", NEUTRAL), ("neg", NEGATIVE)):
        for i, (text, label) in enumerate(group):
            cid = f"{polarity}{i}"
            jobs.append((clips / f"{cid}.mp4", text, VOICES[i % len(VOICES)], 150 + 10 * (i % 3)))
            rows.append({"id": cid, "text": text.lower().rstrip("."), "label": label, "mode": SPLITS[i]})
    # espeak-ng and ffmpeg run as subprocesses: one thread per core keeps them all busy
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(lambda job: make_clip(job[0], job[1], voice=job[2], speed=job[3]), jobs))
    with open(out / "label.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text", "label", "mode"])
        w.writeheader()
        w.writerows(rows)
    held = out / "heldout"
    held.mkdir(exist_ok=True)
    make_clip(held / "happy.mp4", HELDOUT[0], voice="en-us")
    (held / "happy.txt").write_text(HELDOUT[0].lower() + "\n")
    print(f"{out}: {len(rows)} labelled clips, 1 held-out clip", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "assets/demo"))
