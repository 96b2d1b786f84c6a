"""Where extraction work runs: a local process pool, or the actors of a Ray cluster.

Both executors take the same batches of `ClipJob`s (one media clip, or up to TEXT_BATCH text-only
rows) and yield each batch's finished `Clip`s as it completes, in any order. The driver (the
`mmckd extract` process) writes every result through `FeatureFileWriter`, so the feature file is the
same whichever executor made it, and resuming works the same way.

    LocalExecutor(workers=2)                       # spawn-started processes on this machine
    RayExecutor(address="auto", gpus_per_worker=1) # Ray actors, models loaded once per actor

Ray is an optional extra (``pip install 'mmckd[ray]'``) imported only when a Ray run starts.
A worker that dies mid-run (killed, out of memory, a segfault, node lost) is replaced by a fresh
process or actor and the batch it held runs again, one clip per batch; a clip whose worker dies
``max_attempts`` times (local: 2, Ray: 3) is stored as failed with the reason ("worker died: signal 9
(SIGKILL) ..."), so one clip that crashes its worker cannot stop or hang the run. The local executor
always runs clips in worker processes (also with one worker), so the driver survives any clip.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

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

    def run(self, batches: list[list[ClipJob]], config: ExtractConfig) -> Generator[list[Clip], None, None]:
        """Yield the clips of every batch; models are loaded once per worker."""


def configure_worker_process(threads: int, media_timeout: float | None = None) -> None:
    """Thread counts of one extraction worker (torch intra-op threads, ffmpeg decoder threads) and the
    timeout of its ffprobe/ffmpeg calls (None: keep media.timeout_s)."""
    import torch

    from mmckd.extract import media

    torch.set_num_threads(threads)
    media.decoder_threads = threads
    if media_timeout is not None:
        media.timeout_s = float(media_timeout)


# ----------------------------------------------------------------------------- test fault hook

KILL_ENV = "MMCKD_TEST_KILL_CLIP"  # comma-separated clip ids: the worker extracting one SIGKILLs itself
KILL_ONCE_ENV = "MMCKD_TEST_KILL_ONCE_DIR"  # with it, each named clip kills its worker only once (a marker file)
HANG_ENV = "MMCKD_TEST_HANG_CLIP"  # comma-separated clip ids: the worker extracting one never returns


def maybe_kill_for_test(jobs: list[ClipJob]) -> None:
    """Test hooks: a worker about to extract a clip named in MMCKD_TEST_KILL_CLIP kills itself with SIGKILL
    (what the OOM killer or a segfault in a native library does). With MMCKD_TEST_KILL_ONCE_DIR set, a clip
    does so only the first time (a transient fault), remembered by a marker file in that folder. A clip named
    in MMCKD_TEST_HANG_CLIP makes its worker sleep forever instead (a hang)."""
    hang = os.environ.get(HANG_ENV)
    if hang and set(hang.split(",")) & {job.id for job in jobs}:
        while True:  # a worker stuck in native code, as far as the driver can tell
            time.sleep(3600)
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    names = set(spec.split(","))
    for job in jobs:
        if job.id not in names:
            continue
        once = os.environ.get(KILL_ONCE_ENV)
        if once:
            marker = os.path.join(once, hashlib.sha1(job.id.encode("utf-8", "surrogateescape")).hexdigest())
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
        os.kill(os.getpid(), signal.SIGKILL)


def worker_death_reason(exitcode: int | None) -> str:
    """'worker died: signal 9 (SIGKILL)' or 'worker died: exit code 1'."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"worker died: signal {-exitcode} ({name})"
    return f"worker died: exit code {exitcode}"


def split_lost_batch(batch: list[ClipJob], attempts: int, reason: str, max_attempts: int):
    """What to do with a batch whose worker died on attempt `attempts` (1-based): (batches to run again,
    failed clips to store). A batch of several clips is retried one clip per batch, so a second death names
    its clip; a clip whose worker died max_attempts times is failed with the reason."""
    if attempts >= max_attempts:
        times = {1: "once", 2: "twice"}.get(attempts, f"{attempts} times")
        msg = f"{reason} while extracting this clip ({times}; retry with --retry-failed)"
        return [], [_failed_clip(job, msg) for job in batch]
    return [[job] for job in batch], []


# ----------------------------------------------------------------------------- local processes


def _set_parent_death_signal() -> None:
    """Linux: this process gets SIGKILL when the driver dies, so no orphaned worker keeps extracting."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: workers still exit when the driver's pipe closes
        pass


def _local_worker_main(conn, config_dict: dict, threads: int, media_timeout: float | None) -> None:
    """One worker process: load nothing until needed, then extract each batch sent, until None or EOF."""
    _set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the driver; the driver stops the workers
    configure_worker_process(threads, media_timeout)
    extractor = ClipExtractor(ExtractConfig.from_dict(config_dict))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            key, jobs = msg
            maybe_kill_for_test(jobs)
            try:
                out: tuple[str, Any, Any] = ("ok", key, extractor.extract_batch(jobs))
            except Exception as e:  # noqa: BLE001 - extract_batch never raises; be safe anyway
                out = ("error", key, f"{type(e).__name__}: {_one_line(e)}")
            try:
                conn.send(out)
            except (BrokenPipeError, OSError):
                return
            except Exception as e:  # noqa: BLE001 - a result that cannot be pickled
                conn.send(("error", key, f"result cannot be sent to the driver: {_one_line(e)}"))
    finally:
        extractor.close()


@dataclass
class LocalRunStats:
    """What happened during the last local run: worker processes started, worker deaths seen, batches run
    again after a death, clips failed because their worker died twice."""

    workers_started: int = 0
    worker_deaths: int = 0
    retried_batches: int = 0
    abandoned_clips: int = 0


class _LocalWorker:
    def __init__(self, ctx, config_dict: dict, threads: int, media_timeout: float | None) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_local_worker_main, args=(child, config_dict, threads, media_timeout),
                                daemon=True, name="mmckd-extract-worker")  # fmt: skip
        self.proc.start()
        child.close()
        self.task: tuple[int, list[ClipJob], int] | None = None  # (key, batch, attempts) while a batch is out
        self.deadline: float | None = None  # monotonic time by which the batch's result is due (clip_timeout)
        self.timed_out = False

    def stop(self, grace: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(grace)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(grace)
        self.conn.close()


@dataclass
class LocalExecutor:
    """workers processes on this machine, the cores shared evenly between them.

    Clips always run in worker processes (also with workers=1), so a clip that crashes its process (out of
    memory, a segfault in a native library, kill -9) cannot take the run down: the worker is replaced, the
    lost batch runs again (one clip per batch), and a clip whose worker dies max_attempts times is stored
    as failed with the reason ("worker died: signal 9 (SIGKILL) ...").
    media_timeout: seconds an ffprobe/ffmpeg call may go without progress (None: mmckd.extract.media's default).
    clip_timeout: seconds a worker may take per clip of a batch; a worker past it is killed and the batch
    handled like one whose worker died (None: no limit; ffprobe/ffmpeg have their own timeout anyway).
    """

    workers: int = 1
    name: str = "local"
    max_attempts: int = 2
    media_timeout: float | None = None
    max_deaths_in_a_row: int = 8
    clip_timeout: float | None = None

    def __post_init__(self) -> None:
        self.stats = LocalRunStats()

    def check(self) -> None:
        if self.workers < 1:
            raise ExecutorError(f"workers must be >= 1; got {self.workers}")

    def run(self, batches: list[list[ClipJob]], config: ExtractConfig) -> Generator[list[Clip], None, None]:
        from multiprocessing.connection import wait

        self.stats = LocalRunStats()
        if not batches:
            return
        cores = os.cpu_count() or 1
        n = max(1, min(self.workers, len(batches)))
        threads = max(1, cores // n)
        ctx = mp.get_context("spawn")  # fresh interpreters: no inherited threads or MediaPipe/torch state
        config_dict = config.to_dict()
        queue: deque[tuple[list[ClipJob], int]] = deque((b, 0) for b in batches)
        workers: list[_LocalWorker] = []
        deaths_in_a_row = 0  # worker deaths with no batch extracted in between (e.g. a worker cannot start)
        next_key = 0

        def start() -> _LocalWorker:
            self.stats.workers_started += 1
            return _LocalWorker(ctx, config_dict, threads, self.media_timeout)

        try:
            workers = [start() for _ in range(n)]
            while queue or any(w.task for w in workers):
                for w in workers:
                    if w.task is None and queue:
                        batch, attempts = queue.popleft()
                        w.task = (next_key, batch, attempts)
                        if self.clip_timeout:
                            w.deadline = time.monotonic() + self.clip_timeout * len(batch)
                        next_key += 1
                        try:
                            w.conn.send((w.task[0], batch))
                        except (BrokenPipeError, OSError):
                            pass  # it died: its sentinel says so below
                busy = [w for w in workers if w.task is not None]
                due = [w.deadline for w in busy if w.deadline is not None]
                timeout = max(0.0, min(due) - time.monotonic()) if due else None
                ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout)
                for w in busy:
                    if w.deadline is not None and time.monotonic() >= w.deadline and w.proc.is_alive():
                        w.timed_out = True
                        w.proc.kill()  # its sentinel reports it on the next wait
                for i, w in enumerate(workers):
                    if w.task is None or (w.conn not in ready and w.proc.sentinel not in ready):
                        continue
                    msg = None
                    try:
                        if w.conn.poll():
                            msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is not None and msg[1] == w.task[0]:
                        _, batch, attempts = w.task
                        w.task = w.deadline = None
                        deaths_in_a_row = 0
                        if msg[0] == "ok":
                            yield msg[2]
                        else:
                            yield [_failed_clip(job, msg[2]) for job in batch]
                        continue
                    if w.proc.is_alive() and msg is None:
                        continue  # woke up for nothing (a partial message): wait again
                    # the worker died with a batch out
                    w.proc.join(5.0)
                    reason = worker_death_reason(w.proc.exitcode)
                    if w.timed_out:
                        reason = f"worker stopped: no result within the clip timeout ({self.clip_timeout:g} s a clip)"
                    _, batch, attempts = w.task
                    w.task = None
                    self.stats.worker_deaths += 1
                    deaths_in_a_row += 1
                    log.warning("worker %d (pid %s) %s; starting a new one", i, w.proc.pid, reason[len("worker ") :])
                    w.stop(grace=1.0)
                    if deaths_in_a_row > 2 * n + self.max_deaths_in_a_row:
                        raise ExecutorError(
                            f"extraction workers keep dying ({deaths_in_a_row} in a row, none finished a clip; last: "
                            f"{reason}). What was extracted is stored: run the same command again to resume"
                        )
                    workers[i] = start()
                    again, failed = split_lost_batch(batch, attempts + 1, reason, self.max_attempts)
                    if again:
                        self.stats.retried_batches += 1
                        queue.extendleft((b, attempts + 1) for b in reversed(again))
                    if failed:
                        self.stats.abandoned_clips += len(failed)
                        yield failed
        finally:
            for w in workers:
                w.stop()


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

    def __init__(self, config_dict: dict, threads: int, device: str, media_timeout: float | None = None) -> None:
        configure_worker_process(threads, media_timeout)
        self.extractor = ClipExtractor(ExtractConfig.from_dict(config_dict), device=device)

    def ready(self) -> int:
        """The actor's process id, once it is up."""
        return os.getpid()

    def extract_batch(self, jobs: list[ClipJob]) -> list[Clip]:
        maybe_kill_for_test(jobs)
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
    max_attempts: runs of a clip whose worker died before it is stored as failed (a lost batch of several
    clips runs again one clip per batch, as with the local executor).
    media_timeout: seconds an ffprobe/ffmpeg call may go without progress (None: the default).
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
        media_timeout: float | None = None,
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
        self.media_timeout = media_timeout
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
            raise ExecutorError(f"the Ray cluster has {gpus:g} GPU(s); {self.gpus_per_worker:g} per worker were asked")
        if self.cpus_per_worker > cpus:
            raise ExecutorError(f"the Ray cluster has {cpus:g} CPU(s); {self.cpus_per_worker:g} per worker were asked")
        n = self.workers
        if n is None:
            n = int(cpus // self.cpus_per_worker)
            if self.gpus_per_worker > 0:
                n = min(n, int(gpus // self.gpus_per_worker))
        return max(1, min(n, batches))

    # ---- the run
    def run(self, batches: list[list[ClipJob]], config: ExtractConfig) -> Generator[list[Clip], None, None]:
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
        self.actors = [remote_worker.remote(config_dict, threads, device, self.media_timeout) for _ in range(n)]
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
                    self.actors[slot] = remote_worker.remote(config_dict, threads, device, self.media_timeout)
                    load[slot] = 0
                again, failed = split_lost_batch(batch, attempts + 1, f"worker died: {reason}", self.max_attempts)
                if failed:
                    self.stats.abandoned_batches += 1
                    yield failed
                else:
                    self.stats.retried_batches += 1
                    queue.extendleft((b, attempts + 1) for b in reversed(again))
                continue
            yield clips


def make_executor(name: str, workers: int | None = None) -> Executor:
    """The executor called name ("local" or "ray") with default options."""
    if name == "local":
        return LocalExecutor(workers or 1)
    if name == "ray":
        return RayExecutor(workers=workers)
    raise ExecutorError(f"executor must be one of {', '.join(EXECUTORS)}; got {name!r}")
