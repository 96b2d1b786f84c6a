"""Training speed of `mmckd fit` at the sizes of CMU-MOSI and CMU-MOSEI, on synthetic feature files.

For each size a feature file with the shapes of the dataset is written (every clip has all three
modalities at the full length: MOSI text 50x768, audio 375x5, vision 500x20, 2,199 clips; MOSEI
text 50x768, audio 500x74, vision 500x35, 22,856 clips; the standard train/valid/test proportions,
float32 as `mmckd extract` writes), then a fresh process measures, with the default FitConfig:

  * load: ``load_prepared`` (the data-preparation step of ``fit``: read, check, cut, normalise), once
    with the file evicted from the page cache (cold, ``posix_fadvise(DONTNEED)``) and once warm;
  * epoch: one training epoch of the online mode (teacher + six students, MVSC) including its valid
    evaluation and checkpoint. With ``--steps N`` only N training steps are run and the epoch is
    extrapolated: steps_per_epoch x seconds per step + valid evaluation + checkpoint (labelled so);
  * peak memory: the process's peak RSS after loading and at the end;
  * inference: seconds per clip of each network (teacher "lav" and the six students) on prepared
    test clips, batch 1 and batch 64 (forward pass only, no grad, median of repeats).

    python benchmarks/fit_speed.py --sizes mosi,mosei --mosei-steps 40

With ``--train-steps`` it measures only the training step of the two ``FitConfig.train_step`` paths
("per-network": each network on its own sub-batch; "grouped": the networks stacked, see
mmckd.model.grouped) side by side on the MOSI-shaped file, epochs interleaved, and writes
docs/results/train_step_speed.json:

    python benchmarks/fit_speed.py --train-steps --rounds 5 [--device cuda]

Writes docs/results/fit_speed.json (sizes measured by earlier invocations stay in it, each with its date
and command) and prints Markdown tables. The synthetic files go to --workdir and
are deleted afterwards (unless --keep). The file writer streams blocks of clips through h5py in the
layout of mmckd.feature_file, so a 8.5 GB file never has to fit in memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shape:
    """A dataset's size: clips, per-split counts, and per modality (frames per clip, feature dim)."""

    name: str
    splits: dict[str, int]
    frames: dict[str, int]
    dims: dict[str, int]

    @property
    def clips(self) -> int:
        return sum(self.splits.values())


SHAPES = {
    # CMU-MOSI: 1,284 / 229 / 686 (MMSA's unaligned 50/375/500 feature shapes)
    "mosi": Shape(
        "mosi",
        {"train": 1284, "valid": 229, "test": 686},
        {"text": 50, "audio": 375, "vision": 500},
        {"text": 768, "audio": 5, "vision": 20},
    ),
    # CMU-MOSEI: 16,326 / 1,871 / 4,659
    "mosei": Shape(
        "mosei",
        {"train": 16326, "valid": 1871, "test": 4659},
        {"text": 50, "audio": 500, "vision": 500},
        {"text": 768, "audio": 74, "vision": 35},
    ),
}
FRAME_RATE = {"text": 1.0, "audio": 25.0, "vision": 25.0}


# --------------------------------------------------------------------------- the synthetic file


def write_shaped_file(path: Path, shape: Shape, seed: int = 0, block: int = 128, no_face: float = 0.05) -> float:
    """Write a labelled feature file of the given shape; returns seconds taken.

    Label y = clip(0.5 c + s_text + s_audio + s_vision, -3, 3) with c, s_m ~ U(-1, 1); modality m carries
    s_m and c along fixed directions plus unit noise; vision frames without a face (mask False, share
    no_face) hold NaN like the synthetic test files."""
    import h5py

    # The layout helpers of the feature file module, so this file is exactly what extract writes.
    from mmckd.feature_file import MODALITIES
    from mmckd.feature_file.layout import write_attrs, write_strings
    from mmckd.feature_file.schema import CLIP_STR_FIELDS

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = shape.clips
    common = rng.uniform(-1, 1, n).astype(np.float32)
    scores = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    labels = np.clip(0.5 * common + scores.sum(1), -3, 3).round(3).astype(np.float32)
    split = np.concatenate([[s] * k for s, k in shape.splits.items()])
    rng.shuffle(split)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        write_attrs(
            h5,
            {"synthetic": {"shape": shape.name, "seed": seed}},
            {"generator": "benchmarks/fit_speed.py"},
        )
        g = h5.create_group("clips")
        columns = {
            "id": [f"clip{i:05d}" for i in range(n)],
            "status": ["ok"] * n,
            "split": list(split),
        }
        for name in CLIP_STR_FIELDS:
            write_strings(g, name, columns.get(name, [""] * n))
        g.create_dataset("label", data=labels)
        g.create_dataset("duration", data=np.full(n, shape.frames["vision"] / 25.0))
        for j, m in enumerate(MODALITIES):
            t, dim = shape.frames[m], shape.dims[m]
            total = n * t
            direction = rng.normal(size=dim).astype(np.float32)
            shared_direction = rng.normal(size=dim).astype(np.float32)
            mg = h5.create_group(m)
            mg.attrs["dim"] = dim
            chunk_rows = max(1, min(total, 2**18 // dim))
            feats = mg.create_dataset("features", shape=(total, dim), dtype=np.float32, chunks=(chunk_rows, dim))
            mask = np.ones(total, bool)
            if m == "vision":
                mask = rng.random(total) >= no_face
                mask[::t] = True  # every clip keeps at least one face frame
            for b0 in range(0, n, block):
                b1 = min(n, b0 + block)
                x = rng.standard_normal((b1 - b0, t, dim), dtype=np.float32)
                x += scores[b0:b1, j, None, None] * direction + common[b0:b1, None, None] * shared_direction
                x = x.reshape(-1, dim)
                x[~mask[b0 * t : b1 * t]] = np.nan
                feats[b0 * t : b1 * t] = x
            mg.create_dataset("timestamps", data=np.tile(np.arange(t) / FRAME_RATE[m], n))
            mg.create_dataset("mask", data=mask)
            mg.create_dataset("confidence", data=np.ones(total, np.float32))
            mg.create_dataset("offsets", data=np.arange(n + 1, dtype=np.int64) * t)
            mg.create_dataset("present", data=np.ones(n, bool))
            write_strings(mg, "missing_reason", [""] * n)
            if m == "text":
                write_strings(mg, "tokens", ["tok"] * total)
    os.replace(tmp, path)
    return time.perf_counter() - t0


def evict(path: Path) -> None:
    """Drop the file's pages from the OS page cache (the next read comes from disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- measuring (child process)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: Path, steps: int | None, threads: int, epochs: int) -> dict:
    """Everything measured on one file, in this (fresh) process."""
    import torch

    from mmckd.feature_file import FeatureFile
    from mmckd.model.config import FitConfig
    from mmckd.model.data import load_prepared
    from mmckd.model.evaluation import valid_mae
    from mmckd.model.inference import subset_columns
    from mmckd.model.networks import parameter_count
    from mmckd.model.routing import SUBSETS
    from mmckd.model.training import SeedTrainer

    torch.set_num_threads(threads)
    cfg = FitConfig()
    out: dict = {"threads": threads, "fit_config": "defaults (FitConfig())"}
    start_rss = _rss_mib()

    evict(path)
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_prepared(path, cfg.model)
    out["load_cold_s"], out["load_cold_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    out["peak_rss_after_load_mib"] = _peak_rss_mib()
    out["rss_after_load_mib"] = _rss_mib()
    out["rss_before_load_mib"] = start_rss
    del data
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_prepared(path, cfg.model)
    out["load_warm_s"], out["load_warm_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    out["prepared_mib"] = sum(r.nbytes for r in data.rows.values()) / 2**20
    # the raw read alone (warm cache), one modality at a time
    out["raw_read_warm_s"] = {}
    for m in ("text", "audio", "vision"):
        t0 = time.perf_counter()
        arr = FeatureFile(path).modality(m)
        out["raw_read_warm_s"][m] = time.perf_counter() - t0
        del arr
        gc.collect()

    class LimitedTrainer(SeedTrainer):
        """Trains on the first max_rows training clips only (for a fixed number of steps)."""

        max_rows: int | None = None

        def _train_rows(self, phase):
            rows = super()._train_rows(phase)
            return rows if self.max_rows is None else rows[: self.max_rows]

    with tempfile.TemporaryDirectory(prefix="mmckd-fitspeed-") as tmp:
        trainer = LimitedTrainer(data, cfg, 1, Path(tmp) / "ckpt", torch.device("cpu"))
        out["parameters"] = {s: parameter_count(trainer.model.networks[s]) for s in trainer.subsets}
        out["parameters_total"] = parameter_count(trainer.model)
        phase = trainer.phases[0]
        trainer.optimizer = trainer._new_optimizer(phase)
        n_train = len(trainer._train_rows(phase))
        steps_per_epoch = -(-n_train // cfg.batch_size)
        out["train_clips"], out["steps_per_epoch"] = n_train, steps_per_epoch
        # warm-up: 3 steps (first-call allocations), not counted
        trainer.max_rows = 3 * cfg.batch_size
        trainer._train_epoch(phase)
        t0 = time.perf_counter()
        trainer._save()
        out["checkpoint_s"] = time.perf_counter() - t0
        valid_times = []
        for _ in range(2):
            t0, c0 = time.perf_counter(), time.process_time()
            valid_mae(trainer.predictor, data)
            valid_times.append((time.perf_counter() - t0, time.process_time() - c0))
        out["valid_eval_s"], out["valid_eval_cpu_s"] = min(valid_times)
        if steps is not None:
            trainer.max_rows = steps * cfg.batch_size
            t0, c0 = time.perf_counter(), time.process_time()
            trainer._train_epoch(phase)
            limited, limited_cpu = time.perf_counter() - t0, time.process_time() - c0
            out["measured_steps"] = steps
            out["step_s"] = (limited - out["valid_eval_s"]) / steps
            out["step_cpu_s"] = (limited_cpu - out["valid_eval_cpu_s"]) / steps
            fixed = out["valid_eval_s"] + out["checkpoint_s"]
            out["epoch_s_extrapolated"] = steps_per_epoch * out["step_s"] + fixed
            out["epoch_cpu_s_extrapolated"] = steps_per_epoch * out["step_cpu_s"] + out["valid_eval_cpu_s"]
        out["epoch_s_measured"], out["epoch_cpu_s_measured"] = [], []
        trainer.max_rows = None
        for _ in range(epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            trainer._train_epoch(phase)
            trainer._save()
            out["epoch_s_measured"].append(time.perf_counter() - t0)
            out["epoch_cpu_s_measured"].append(time.process_time() - c0)

        # inference per clip, each network on the test clips it reads (no grad, eval mode)
        predictor = trainer.predictor
        test = data.indices("test")
        out["inference_ms_per_clip"] = {}
        for s in SUBSETS:
            row = {}
            for bs, reps in ((1, 40), (64, 5)):
                idx = test[:bs]
                keep = np.tile(subset_columns(s), (len(idx), 1))
                batch = data.batch(idx, keep)
                for _ in range(3):
                    predictor.predict_batch(batch, s)
                times, cpu = [], []
                for _ in range(reps):
                    t0, c0 = time.perf_counter(), time.process_time()
                    predictor.predict_batch(batch, s)
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                row[f"batch{bs}"] = 1000 * statistics.median(times) / bs
                row[f"batch{bs}_cpu"] = 1000 * statistics.median(cpu) / bs
            out["inference_ms_per_clip"][s] = row
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def measure_train_steps(path: Path, threads: int, rounds: int, device: str) -> dict:
    """Seconds per epoch of training steps (the 21 optimisation steps of a MOSI-shaped epoch, no valid
    evaluation, no checkpoint) of the two ``FitConfig.train_step`` paths, in this (fresh) process:
    one trainer per path from the same seed, one warm-up epoch each, then ``rounds`` rounds of one
    epoch of each path, interleaved (the order alternates) so a change in the machine's load hits both."""
    import torch

    from mmckd.model.config import TRAIN_STEPS, FitConfig
    from mmckd.model.data import load_prepared
    from mmckd.model.networks import parameter_count
    from mmckd.model.training import SeedTrainer

    torch.set_num_threads(threads)
    data = load_prepared(path, FitConfig().model)
    dev = torch.device(device)
    trainers, phases = {}, {}
    for step in TRAIN_STEPS:
        cfg = FitConfig(train_step=step)
        trainer = SeedTrainer(data, cfg, 1, None, dev)
        phases[step] = trainer.phases[0]
        trainer.optimizer = trainer._new_optimizer(phases[step])
        trainers[step] = trainer
    n_train = len(trainers[TRAIN_STEPS[0]]._train_rows(phases[TRAIN_STEPS[0]]))
    out: dict = {
        "threads": threads,
        "device": device,
        "fit_config": "FitConfig() but train_step",
        "parameters_total": parameter_count(trainers[TRAIN_STEPS[0]].model),
        "train_clips": n_train,
        "steps_per_epoch": -(-n_train // FitConfig().batch_size),
        "rounds": rounds,
        "epoch_s": {s: [] for s in TRAIN_STEPS},
        "epoch_cpu_s": {s: [] for s in TRAIN_STEPS},
        "train_loss": {s: [] for s in TRAIN_STEPS},
    }

    def one_epoch(step: str) -> tuple[float, float, float]:
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        sums, counts = trainers[step].train_steps(phases[step])
        sync()
        return time.perf_counter() - t0, time.process_time() - c0, sums["loss"] / counts["loss"]

    for step in TRAIN_STEPS:  # warm-up epoch (first-call allocations), not counted
        one_epoch(step)
    for r in range(rounds):
        order = TRAIN_STEPS if r % 2 == 0 else TRAIN_STEPS[::-1]
        for step in order:
            wall, cpu, loss = one_epoch(step)
            out["epoch_s"][step].append(wall)
            out["epoch_cpu_s"][step].append(cpu)
            out["train_loss"][step].append(loss)
            print(f"round {r + 1}/{rounds} {step}: {wall:.2f} s (CPU {cpu:.2f} s), loss {loss:.3f}", file=sys.stderr)
    return out


def train_step_speed(args, threads: int) -> None:
    """--train-steps: the two train_step paths side by side on the MOSI-shaped file; writes args.json."""
    shape = SHAPES["mosi"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / "mosi_shaped.h5"
    print(f"mosi: writing {shape.clips} clips to {path}", file=sys.stderr)
    write_shaped_file(path, shape)
    load_before = os.getloadavg()
    cmd = [sys.executable, __file__, "--measure-steps", str(path), "--threads", str(threads)]
    cmd += ["--rounds", str(args.rounds), "--device", args.device]
    print(f"mosi: measuring ({' '.join(cmd[2:])})", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if not args.keep:
        path.unlink()
    if proc.returncode != 0:
        sys.exit("measuring the train steps failed")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    median = {s: statistics.median(v) for s, v in m["epoch_s"].items()}
    median_cpu = {s: statistics.median(v) for s, v in m["epoch_cpu_s"].items()}
    m["median_epoch_s"], m["median_epoch_cpu_s"] = median, median_cpu
    m["grouped_over_per_network"] = median["grouped"] / median["per-network"]
    m["grouped_over_per_network_cpu"] = median_cpu["grouped"] / median_cpu["per-network"]
    m["loadavg_before"], m["loadavg_after"] = load_before, os.getloadavg()
    result = {
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "device": args.device,
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "shape": {"name": shape.name, "splits": shape.splits, "frames": shape.frames, "dims": shape.dims},
        "train_step": m,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['date']}, {result['machine']['cores']} cores, {args.device}, torch threads {threads}\n")
    print("| train_step | epoch s (median of rounds) | CPU s | rounds (s) |")
    print("|---|---|---|---|")
    for step in median:
        rounds = ", ".join(f"{v:.2f}" for v in m["epoch_s"][step])
        print(f"| {step} | {median[step]:.2f} | {median_cpu[step]:.2f} | {rounds} |")
    print(f"\ngrouped / per-network: {m['grouped_over_per_network']:.2f} (CPU {m['grouped_over_per_network_cpu']:.2f})")


# --------------------------------------------------------------------------- the run


def _fmt_s(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="mosi,mosei", help="comma-separated: mosi, mosei")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fitbench")
    ap.add_argument("--mosi-epochs", type=int, default=2, help="full MOSI epochs measured")
    ap.add_argument("--mosi-steps", type=int, default=10, help="MOSI steps for the extrapolation check")
    ap.add_argument("--mosei-steps", type=int, default=40, help="MOSEI: steps measured, epoch extrapolated")
    ap.add_argument("--mosei-epochs", type=int, default=0, help="full MOSEI epochs measured as well")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [fit's default]")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic files")
    ap.add_argument("--json", type=Path, default=None, help="[docs/results/fit_speed.json]")
    ap.add_argument(
        "--train-steps",
        action="store_true",
        help="only compare the train_step paths (per-network, grouped) on the MOSI shape, interleaved; "
        "writes docs/results/train_step_speed.json unless --json is given",
    )
    ap.add_argument("--rounds", type=int, default=5, help="--train-steps: epochs of each path measured")
    ap.add_argument("--device", default="cpu", help="--train-steps: cpu or cuda")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--measure-steps", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.measure:  # child process
        print(json.dumps(measure(args.measure, args.steps, args.threads, args.epochs)))
        return
    if args.measure_steps:  # child process
        print(json.dumps(measure_train_steps(args.measure_steps, args.threads, args.rounds, args.device)))
        return

    from mmckd.model.training import default_threads

    threads = args.threads or default_threads()
    if args.train_steps:
        args.json = args.json or REPO / "docs" / "results" / "train_step_speed.json"
        train_step_speed(args, threads)
        return
    args.json = args.json or REPO / "docs" / "results" / "fit_speed.json"
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "device": "cpu",
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "sizes": {},
    }
    for name in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        shape = SHAPES[name]
        path = args.workdir / f"{name}_shaped.h5"
        load_before = os.getloadavg()
        print(f"{name}: writing {shape.clips} clips to {path}", file=sys.stderr)
        write_s = write_shaped_file(path, shape)
        size = path.stat().st_size
        steps = args.mosi_steps if name == "mosi" else args.mosei_steps
        epochs = args.mosi_epochs if name == "mosi" else args.mosei_epochs
        cmd = [sys.executable, __file__, "--measure", str(path), "--threads", str(threads), "--epochs", str(epochs)]
        if steps:
            cmd += ["--steps", str(steps)]
        print(f"{name}: measuring ({' '.join(cmd[2:])})", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"measuring {name} failed: {proc.stderr[-3000:]}")
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        m["file_bytes"] = size
        m["write_s"] = write_s
        m["clips"] = shape.clips
        m["splits"] = shape.splits
        m["frames"], m["dims"] = shape.frames, shape.dims
        m["loadavg_before"], m["loadavg_after"] = load_before, os.getloadavg()
        m["date"], m["command"] = result["date"], result["command"]
        measured = bool(m["epoch_s_measured"])
        epoch = statistics.median(m["epoch_s_measured"]) if measured else m["epoch_s_extrapolated"]
        epoch_cpu = statistics.median(m["epoch_cpu_s_measured"]) if measured else m["epoch_cpu_s_extrapolated"]
        m["epoch_s"], m["epoch_cpu_s"] = epoch, epoch_cpu
        m["epoch_is_extrapolated"] = not measured
        m["load_over_epoch_cold"] = m["load_cold_s"] / epoch
        m["load_over_epoch_warm"] = m["load_warm_s"] / epoch
        m["load_over_epoch_cpu"] = m["load_cold_cpu_s"] / epoch_cpu
        result["sizes"][name] = m
        print(json.dumps(m, indent=1), file=sys.stderr)
        if not args.keep:
            path.unlink()
    measured = result["sizes"]
    earlier = json.loads(args.json.read_text()).get("sizes", {}) if args.json.exists() else {}
    result["sizes"] = earlier | measured  # sizes measured by earlier invocations stay, with their date
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{result['date']}, {result['machine']['cores']} cores, CPU, torch threads {threads}\n")
    print("wall seconds (CPU seconds of the process in brackets: what a quiet core would take)\n")
    print(
        "| size | clips | file GB | load cold s | load warm s | epoch s | load/epoch (cold) | peak RSS GiB | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in measured.items():
        tag = " extrapolated" if m["epoch_is_extrapolated"] else ""
        print(
            f"| {name} | {m['clips']} | {m['file_bytes'] / 1e9:.2f} | {_fmt_s(m['load_cold_s'])} "
            f"({_fmt_s(m['load_cold_cpu_s'])}) | {_fmt_s(m['load_warm_s'])} | {_fmt_s(m['epoch_s'])} "
            f"({_fmt_s(m['epoch_cpu_s'])}){tag} | {m['load_over_epoch_cold']:.3f} ({m['load_over_epoch_cpu']:.3f}) | "
            f"{m['peak_rss_mib'] / 1024:.2f} | {m['loadavg_before'][0]:.1f} -> {m['loadavg_after'][0]:.1f} |"
        )
    for name, m in measured.items():
        print(f"\n{name}: inference ms per clip (forward only)\n")
        print("| network | parameters | batch 1 ms (CPU ms) | batch 64 ms (CPU ms) |")
        print("|---|---|---|---|")
        for s, row in m["inference_ms_per_clip"].items():
            print(
                f"| {s} | {m['parameters'].get(s, '-')} | {row['batch1']:.2f} ({row['batch1_cpu']:.2f}) | "
                f"{row['batch64']:.3f} ({row['batch64_cpu']:.3f}) |"
            )


if __name__ == "__main__":
    main()
