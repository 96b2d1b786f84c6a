"""Label files in both layouts, and how label rows are matched to media files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmckd.extract.labels import LabelsError, read_labels
from mmckd.extract.pipeline import plan_jobs


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "label.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_flat_layout(tmp_path):
    rows = read_labels(write(tmp_path, "id,text,label,mode\nabc_1,so good,2.4,train\nabc_2,,,\n"))
    assert [(r.id, r.text, r.label, r.split) for r in rows] == [
        ("abc_1", "so good", 2.4, "train"),
        ("abc_2", None, None, None),
    ]


def test_mmsa_layout_with_extra_columns(tmp_path):
    rows = read_labels(
        write(tmp_path, "video_id,clip_id,text,label,label_T,mode,annotation\nv1,3,bad,-1.5,0,valid,x\n")
    )
    assert rows[0].id == "v1_3" and rows[0].label == -1.5 and rows[0].split == "valid"
    assert rows[0].media_keys() == ("v1_3", "v1/3")


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,text,mode\na,b,train\n", "missing column"),
        ("id,text,label,mode\na,b,high,train\n", "not a number"),
        ("id,text,label,mode\na,b,nan,train\n", "not finite"),
        ("id,text,label,mode\na,b,1,train\na,c,2,test\n", "duplicate clip id"),
        ("id,text,label,mode\n", "no rows"),
        ("", "missing column"),
    ],
)
def test_bad_label_files_name_file_and_reason(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(LabelsError, match=message) as e:
        read_labels(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_missing_labels_file(tmp_path):
    with pytest.raises(LabelsError, match="no such labels file"):
        read_labels(tmp_path / "nope.csv")


def test_plan_matches_media_to_rows_and_keeps_the_rest(tmp_path):
    root = tmp_path / "videos"
    media = [
        root / "v1" / "3.mp4",
        root / "abc_1.mp4",
        root / "extra.wav",
        root / "a" / "dup.mp4",
        root / "b" / "dup.mp4",
    ]
    rows = read_labels(
        write(tmp_path, "video_id,clip_id,text,label,mode\nv1,3,x,1,train\nabc,1,y,2,test\nzzz,9,only text,0,dev\n")
    )
    jobs = {j.id: j for j in plan_jobs(media, root, rows)}
    assert jobs["v1_3"].media == str(media[0]) and jobs["v1_3"].label == 1.0
    assert jobs["abc_1"].media == str(media[1])
    assert jobs["zzz_9"].media is None and jobs["zzz_9"].text == "only text"
    assert jobs["extra"].label is None and jobs["extra"].media == str(media[2])
    assert {"a/dup", "b/dup"} <= set(jobs)
    assert len(jobs) == 6
