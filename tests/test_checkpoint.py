"""Training checkpoints: written atomically (folder under a temporary name, renamed), newest KEEP kept."""

from __future__ import annotations

import pytest
import torch

from mmckd.model.checkpoint import KEEP, latest_checkpoint, save_checkpoint


def test_round_trip_and_only_the_newest_are_kept(tmp_path):
    for step in range(1, KEEP + 3):
        save_checkpoint(tmp_path, step, {"w": torch.full((3,), float(step))}, {"step": step, "loss": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"step_{s:06d}" for s in range(3, KEEP + 3)]
    tensors, state = latest_checkpoint(tmp_path)
    assert state == {"step": KEEP + 2, "loss": None}  # JSON has no NaN: stored as null
    assert torch.equal(tensors["w"], torch.full((3,), float(KEEP + 2)))


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temporary(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {"step": 1})
    shared = torch.zeros(4)
    with pytest.raises(Exception, match="share memory"):  # safetensors refuses, inside the folder being written
        save_checkpoint(tmp_path, 1, {"a": shared, "b": shared}, {"step": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["step_000001"]
    tensors, state = latest_checkpoint(tmp_path)
    assert state == {"step": 1} and torch.equal(tensors["w"], torch.ones(2))
