"""Where extraction work runs: a local process pool, or the actors of a Ray cluster.

Both executors take the same batches of `ClipJob`s (one media clip, or up to TEXT_BATCH text-only
rows) and yield each batch's finished `Clip`s as it completes, in any order. The driver (the
`mmckd extract` process) writes every result through `FeatureFileWriter`, so the feature file is the
same whichever executor made it, and resuming works the same way.

    LocalExecutor(workers=2)                       # spawn-started processes on this machine
    RayExecutor(address="auto", gpus_per_worker=1) # Ray actors, models loaded once per actor

Ray is an optional extra (``pip install 'mmckd[ray]'``) imported only when a Ray run starts.
A Ray worker that dies mid-run (killed, out of memory, node lost) is replaced by a fresh actor and
the batches it held are run again elsewhere; a batch whose worker dies ``max_attempts`` times is
stored as failed clips with the reason, so one clip that crashes its worker cannot stop the run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from mmckd.extract.clip_extractor import ClipExtractor, ClipJob
from mmckd.extract.config import ExtractConfig
from mmckd.feature_file import Clip

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RAY_EXTRA_MESSAGE = "--executor ray needs the optional extra: pip install 'mmckd[ray]'"


class ExecutorError(Exception):
    """The executor cannot run (Ray missing or unreachable, workers cannot start or keep dying)."""


class Executor(Protocol):
    """Runs batches of jobs and yields the clips of each finished batch (any order, each batch once)."""

    name: str

    def check(self) -> None:
        """Raise ExecutorError now if the executor cannot run at all (before any output is touched)."""

    def run(self, batches: list[list[ClipJob]], config: ExtractConfig) -> Iterator[list[Clip]]:
        """Yield the clips of every batch; models are loaded once per worker."""


def configure_worker_process(threads: int) -> None:
    """Thread counts of one extraction worker: torch intra-op threads and ffmpeg decoder threads."""
    import torch

    from mmckd.extract import media

    torch.set_num_threads(threads)
    media.decoder_threads = threads


# ----------------------------------------------------------------------------- local processes

_worker: ClipExtractor | None = None


def _init_local_worker(config_dict: dict, threads: int) -> None:
    global _worker
    configure_worker_process(threads)
    _worker = ClipExtractor(ExtractConfig.from_dict(config_dict))


def _run_local_batch(jobs: list[ClipJob]) -> list[Clip]:
    return _worker.extract_batch(jobs)


@dataclass
class LocalExecutor:
    """workers processes on this machine (1: in this process), the cores shared evenly between them."""

    workers: int = 1
    name: str = "local"

    def check(self) -> None:
        if self.workers < 1:
            raise ExecutorError(f"workers must be >= 1; got {self.workers}")

    def run(self, batches: list[list[ClipJob]], config: ExtractConfig) -> Iterator[list[Clip]]:
        cores = os.cpu_count() or 1
        threads = max(1, cores // max(1, self.workers))
        if self.workers <= 1:
            _init_local_worker(config.to_dict(), threads)
            try:
                for b in batches:
                    yield _run_local_batch(b)
            finally:
                _worker.close()
            return
        ctx = mp.get_context("spawn")  # fresh interpreters: no inherited threads or MediaPipe/torch state
        with ctx.Pool(self.workers, initializer=_init_local_worker, initargs=(config.to_dict(), threads)) as pool:
            yield from pool.imap_unordered(_run_local_batch, batches)


# ----------------------------------------------------------------------------- Ray actors


def import_ray():
    """The ray module, or ExecutorError naming the optional extra to install."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(RAY_EXTRA_MESSAGE) from None
    return ray


class ClipWorker:
    """The state of one Ray actor: a ClipExtractor whose models load once, on first use."""

    def __init__(self, config_dict: dict, threads: int, device: str) -> None:
        configure_worker_process(threads)
        self.extractor = ClipExtractor(ExtractConfig.from_dict(config_dict), device=device)

    def ready(self) -> int:
        """The actor's process id, once it is up."""
        return os.getpid()

    def extract_batch(self, jobs: list[ClipJob]) -> list[Clip]:
        return self.extractor.extract_batch(jobs)


@dataclass
class RayRunStats:
    """What happened during the last Ray run: workers started, worker deaths seen, batches re-run,
    batches given up on (stored as failed clips)."""

    workers: int = 0
    worker_deaths: int = 0
    retried_batches: int = 0
    abandoned_batches: int = 0


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failed_clip(job: ClipJob, reason: str) -> Clip:
    return Clip(id=job.id, status="failed", error=reason, split=job.split, label=job.label, media=job.media)


class RayExecutor:
    """Batches run as tasks of Ray actors (one ClipExtractor each), results come back to the driver.

    address: None starts a local Ray instance unless RAY_ADDRESS is set; "auto" or "HOST:PORT"
    joins a running cluster (a Ray instance this process already initialised is used as it is).
    workers: actors to start (None: as many as the cluster's CPUs, or GPUs when asked, allow).
    cpus_per_worker / gpus_per_worker: Ray resources of each actor; with GPUs the text model (and
    ASR) run on CUDA. in_flight: batches queued per actor, so an actor never waits for the driver.
    max_attempts: runs of one batch whose worker died before it is stored as failed clips.
    max_worker_restarts: replacement actors started in all (default: 2 per worker + 2); past that the
    run stops with ExecutorError (what was extracted is kept; run again to resume).
    start_timeout: seconds to wait for the actors to start (e.g. a GPU the cluster lacks).
    init_options: further keyword arguments of ray.init when this executor starts Ray.
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        address: str | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        in_flight: int = 2,
        max_attempts: int = 3,
        max_worker_restarts: int | None = None,
        start_timeout: float = 600.0,
        init_options: dict | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ExecutorError(f"workers must be >= 1; got {workers}")
        if cpus_per_worker <= 0 or gpus_per_worker < 0:
            raise ExecutorError("cpus per worker must be > 0 and GPUs per worker >= 0")
        if in_flight < 1 or max_attempts < 1:
            raise ExecutorError("in_flight and max_attempts must be >= 1")
        self.workers, self.address = workers, address
        self.cpus_per_worker, self.gpus_per_worker = float(cpus_per_worker), float(gpus_per_worker)
        self.in_flight, self.max_attempts = in_flight, max_attempts
        self.max_worker_restarts = max_worker_restarts
        self.start_timeout = start_timeout
        self.init_options = dict(init_options or {})
        self.actors: list = []  # the live actor of each worker slot while a run is in progress
        self.pids: list[int] = []  # process ids of the first actors of the current run, by slot
        self.stats = RayRunStats()

    def check(self) -> None:
        import_ray()

    # ---- setup
    def _connect(self, ray) -> bool:
        """Start or join Ray; True when this executor started it (and so shuts it down)."""
        if ray.is_initialized():
            return False
        options = {"include_dashboard": False} | self.init_options
        try:
            ray.init(address=self.address, **options)
        except Exception as e:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError by version
            where = self.address or os.environ.get("RAY_ADDRESS") or "a new local instance"
            raise ExecutorError(f"cannot start or join Ray ({where}): {_one_line(e)}") from None
        return True

    def _worker_count(self, ray, batches: int) -> int:
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
        if self.gpus_per_worker > gpus:
            raise ExecutorError(
                f"the Ray cluster has {gpus:g} GPU(s); {self.gpus_per_worker:g} per worker were asked"
            )
        if self.cpus_per_worker > cpus:
            raise ExecutorError(f"the Ray cluster has {cpus:g} CPU(s); {self.cpus_per_worker:g} per worker were asked")
        n = self.workers
        if n is None:
            n = int(cpus // self.cpus_per_worker)
            if self.gpus_per_worker > 0:
                n = min(n, int(gpus // self.gpus_per_worker))
        return max(1, min(n, batches))

    # ---- the run
    def run(self, batches: list[list[ClipJob]], config: ExtractConfig) -> Iterator[list[Clip]]:
        ray = import_ray()
        self.stats = RayRunStats()
        if not batches:
            return
        owned = self._connect(ray)
        try:
            yield from self._run(ray, batches, config)
        finally:
            for actor in self.actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self.actors = []
            if owned:
                ray.shutdown()

    def _run(self, ray, batches: list[list[ClipJob]], config: ExtractConfig) -> Iterator[list[Clip]]:
        from ray.exceptions import GetTimeoutError, NodeDiedError, ObjectLostError, RayActorError, WorkerCrashedError

        lost_worker = (RayActorError, WorkerCrashedError, ObjectLostError, NodeDiedError)
        n = self._worker_count(ray, len(batches))
        threads = max(1, int(round(self.cpus_per_worker)))
        device = "cuda" if self.gpus_per_worker > 0 else "cpu"
        remote_worker = ray.remote(ClipWorker).options(
            num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker, max_restarts=0, max_task_retries=0
        )
        config_dict = config.to_dict()
        self.actors = [remote_worker.remote(config_dict, threads, device) for _ in range(n)]
        self.stats.workers = n
        try:
            pids = ray.get([a.ready.remote() for a in self.actors], timeout=self.start_timeout)
        except GetTimeoutError:
            raise ExecutorError(
                f"{n} Ray worker(s) did not start within {self.start_timeout:g} s (cluster: "
                f"{ray.cluster_resources()}; each asks {self.cpus_per_worker:g} CPU, {self.gpus_per_worker:g} GPU)"
            ) from None
        except lost_worker as e:
            raise ExecutorError(f"a Ray worker could not start: {_one_line(e)}") from None
        self.pids = list(pids)
        log.info("ray: %d workers (pids %s), %d batches", n, ",".join(map(str, pids)), len(batches))

        restarts_left = self.max_worker_restarts if self.max_worker_restarts is not None else 2 * n + 2
        queue: deque[tuple[list[ClipJob], int]] = deque((b, 0) for b in batches)
        in_flight: dict = {}  # ObjectRef -> (slot, actor, batch, attempts before this one)
        load = [0] * n
        while queue or in_flight:
            while queue:
                batch, attempts = queue[0]
                # a batch whose worker died runs again alone on an idle worker, so a second death is its own
                slot = min(range(n), key=load.__getitem__)
                if load[slot] >= (1 if attempts else self.in_flight):
                    break
                queue.popleft()
                ref = self.actors[slot].extract_batch.remote(batch)
                in_flight[ref] = (slot, self.actors[slot], batch, attempts)
                load[slot] += 1
            done, _ = ray.wait(list(in_flight), num_returns=1)
            slot, actor, batch, attempts = in_flight.pop(done[0])
            current = self.actors[slot] is actor
            if current:
                load[slot] -= 1
            try:
                clips = ray.get(done[0])
            except lost_worker as e:
                reason = _one_line(e)
                if current:  # the first loss seen from this actor: replace it
                    self.stats.worker_deaths += 1
                    if restarts_left <= 0:
                        raise ExecutorError(
                            f"Ray workers keep dying ({self.stats.worker_deaths} deaths); last: {reason}. "
                            "What was extracted is stored: run the same command again to resume"
                        ) from None
                    restarts_left -= 1
                    log.warning("ray: worker %d died (%s); starting a new one", slot, reason)
                    try:
                        ray.kill(actor, no_restart=True)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    self.actors[slot] = remote_worker.remote(config_dict, threads, device)
                    load[slot] = 0
                if attempts + 1 >= self.max_attempts:
                    self.stats.abandoned_batches += 1
                    msg = f"worker process died while extracting this clip ({attempts + 1} attempts; last: {reason})"
                    yield [_failed_clip(job, msg) for job in batch]
                else:
                    self.stats.retried_batches += 1
                    queue.appendleft((batch, attempts + 1))
                continue
            yield clips


def make_executor(name: str, workers: int | None = None) -> Executor:
    """The executor called name ("local" or "ray") with default options."""
    if name == "local":
        return LocalExecutor(workers or 1)
    if name == "ray":
        return RayExecutor(workers=workers)
    raise ExecutorError(f"executor must be one of {', '.join(EXECUTORS)}; got {name!r}")
