"""Inference cost of a trained model per condition: parameters, FLOPs, CPU milliseconds per clip.

For each condition (modality subset) the model answers, on real clips of the data with only that
condition's modalities:
  * params: parameters of the network that answers (MM-CKD: the routed network; single-network modes:
    the whole network, imputation included), less the modules that only run in training
    (``TRAINING_ONLY`` of a network class, e.g. the backward autoencoder of the MMIN-style imputation);
  * flops: floating-point operations of one clip's forward pass, counted by ``torch.utils.flop_counter``
    (matrix products and attention; elementwise work is not counted);
  * ms_per_clip_b1 / ms_per_clip_b64: median wall milliseconds per clip of the no-grad forward pass at
    batch 1 and at batch 64 on this process's torch threads (inputs already prepared, as in a batch
    prediction), after a warm-up.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mmckd.model.data import PreparedData
from mmckd.model.inference import NetworkRouter, subset_columns
from mmckd.model.routing import SUBSETS

COST_FIELDS = ("params", "flops", "ms_per_clip_b1", "ms_per_clip_b64")


def inference_parameter_count(network: torch.nn.Module) -> int:
    skip = {id(p) for name in getattr(network, "TRAINING_ONLY", ()) for p in getattr(network, name).parameters()}
    return sum(p.numel() for p in network.parameters() if id(p) not in skip)


def _median_ms(fn, min_runs: int = 5, min_seconds: float = 0.2) -> float:
    fn()  # warm-up
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        if len(times) >= 200:
            break
    return float(np.median(times))


def condition_cost(predictor: NetworkRouter, data: PreparedData, condition: str, clips: np.ndarray) -> dict:
    """The cost entry of one condition (see module docstring); clips: indices of clips having its modalities."""
    network = predictor.network_for(condition)
    net = predictor.model.networks[network]
    keep = np.tile(subset_columns(condition), (len(clips), 1))
    one = data.batch(clips[:1], keep[:1]).to(predictor.device)
    rows = np.resize(clips, 64)  # 64 clips (repeated when fewer exist)
    many = data.batch(rows, np.tile(subset_columns(condition), (64, 1))).to(predictor.device)
    predictor.model.eval()
    # counted with autograd on: no-grad inference takes PyTorch's fused Transformer fast path, whose
    # kernels the counter does not see (the arithmetic is the same)
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:
        predictor.model(network, one)
    flops = int(counter.get_total_flops())
    with torch.no_grad():

        def run(batch):
            return lambda: predictor.model(network, batch).pred.cpu()

        b1 = _median_ms(run(one))
        b64 = _median_ms(run(many)) / 64.0
    return {"params": inference_parameter_count(net), "flops": flops, "ms_per_clip_b1": b1, "ms_per_clip_b64": b64}


def model_cost(predictor: NetworkRouter, data: PreparedData, split: str = "test") -> dict[str, dict | None]:
    """{condition: cost entry or None} for the 7 conditions, on clips of split (any split if it has none)."""
    out: dict[str, dict | None] = {}
    for cond in SUBSETS:
        if cond not in predictor.answers:
            out[cond] = None
            continue
        have = data.present[:, subset_columns(cond)].all(1)
        idx = np.flatnonzero(have & (data.split == split))
        if not len(idx):
            idx = np.flatnonzero(have)
        out[cond] = condition_cost(predictor, data, cond, idx) if len(idx) else None
    return out
