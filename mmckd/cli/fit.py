"""`mmckd fit`: a feature file in, a run folder out (predict bundle, metrics, report, plots).

A thin layer over ``mmckd.model.training.fit``; every option maps to a FitConfig/ModelConfig field.
``--nproc N`` re-runs the same command under ``torch.distributed.run`` (torchrun) with N processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import click

from mmckd.atomic_write import WriteError, io_reason, is_io_error
from mmckd.cli.config_options import config_file_option, config_options, given_overrides
from mmckd.config_fields import ConfigError, merge_dicts, read_config_file
from mmckd.feature_file import FeatureFileError
from mmckd.model.config import FitConfig
from mmckd.model.presets import preset, preset_names

_MODE_FLAGS = {"offline_teacher": "offline-teacher", "no_mvsc": "no-mvsc", "dropout_baseline": "dropout-baseline"}


@click.command()
@click.argument("features", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--offline-teacher", is_flag=True, help="Ablation: pre-train the teacher, freeze it, then distil.")
@click.option("--no-mvsc", is_flag=True, help="Ablation: every network on its regression loss only.")
@click.option("--dropout-baseline", is_flag=True, help="Baseline: one network trained with random modality dropout.")
@click.option(
    "--preset",
    type=click.Choice(preset_names()),
    default=None,
    help="Named settings applied over the defaults (mmckd/model/presets/NAME.json says what each is for).",
)
@config_file_option(
    "JSON file of settings (a FitConfig dict, or a run's run.json / bundle.json), applied after --preset; "
    "options given here win over both."
)
@config_options(FitConfig, prefixes={"model": ""})
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch [half the cores, 1 to 4].")
@click.option(
    "--nproc",
    type=click.IntRange(1),
    default=None,
    help="Train data-parallel in N processes on this machine (launches torchrun; gloo on CPU, NCCL on CUDA).",
)
@click.option("--resume", is_flag=True, help="Continue the run in the output folder after a crash or stop.")
@click.option("--overwrite", is_flag=True, help="Replace a previous run in the output folder.")
@click.option("--progress/--no-progress", default=None, help="Per-batch progress bar [when stderr is a terminal].")
@click.pass_context
def fit(
    ctx: click.Context,
    features: Path,
    output: Path,
    device: str,
    threads,
    nproc,
    resume: bool,
    overwrite: bool,
    progress,
    **options,
) -> None:
    """Train MM-CKD (teacher + six students, MVSC) on FEATURES and write the run folder OUTPUT.

    OUTPUT gets model/ (the predict bundle), metrics.json, report.md and plots. Resumable: after a
    crash, run the same command with --resume.
    """
    from mmckd.model.data import DataError
    from mmckd.model.distributed import launched_rank, launched_world_size
    from mmckd.model.training import RunError, run_config
    from mmckd.model.training import fit as run_fit

    in_torchrun = launched_world_size() > 1
    if nproc is not None and nproc > 1 and in_torchrun:
        _fail("--nproc starts its own processes; leave it out under torchrun")
    modes = [mode for flag, mode in _MODE_FLAGS.items() if options.pop(flag)]
    preset_name, config_file = options.pop("preset"), options.pop("config_file")
    given = given_overrides(FitConfig, options)
    if "mode" in given:
        modes.append(given["mode"])
    if len(modes) > 1:
        _fail("choose at most one of --mode, --offline-teacher, --no-mvsc, --dropout-baseline")
    if modes:
        given["mode"] = modes[0]
    existed = output.exists()
    lock = _lock_run_folder(output, in_torchrun)
    try:
        overrides: dict = {}
        if preset_name is not None:
            overrides = merge_dicts(overrides, preset(preset_name))
        if config_file is not None:
            overrides = merge_dicts(overrides, FitConfig.overrides_in(read_config_file(config_file), str(config_file)))
        base = run_config(output) if resume else None
        config = (base or FitConfig()).merged(merge_dicts(overrides, given))
        if nproc is not None and nproc > 1:
            _launch_torchrun(nproc)  # the options are valid: run this very command in nproc processes
            return
        result = run_fit(
            features,
            output,
            config,
            resume=resume,
            overwrite=overwrite,
            device=device,
            threads=threads,
            progress=progress,
        )
    except WriteError as e:
        _remove_temporaries(output)
        _fail(str(e) if not in_torchrun else f"rank {launched_rank()}: {e}")
    except (DataError, RunError, ConfigError, FeatureFileError) as e:
        _fail(str(e) if not in_torchrun else f"rank {launched_rank()}: {e}")
    except KeyboardInterrupt:
        _fail(f"interrupted; continue with: mmckd fit {features} -o {output} --resume")
    except OSError as e:  # disk full or another I/O error on an output the run writes
        _remove_temporaries(output)
        where = f"{e.filename}: " if getattr(e, "filename", None) else f"{output}: "
        _fail(f"{where}cannot write ({io_reason(e)})")
    except Exception as e:
        if not is_io_error(e):
            raise
        _remove_temporaries(output)  # a library's wrapper of an I/O error (safetensors on a full disk)
        _fail(f"{output}: cannot write ({io_reason(e)})")
    finally:
        if lock is not None:
            # a fit refused before it wrote anything leaves no run folder behind (only its lock was there)
            empty = not existed and output.is_dir() and [p.name for p in output.iterdir()] == [lock.lock_path.name]
            lock.release(remove=empty)
            if empty:
                try:
                    output.rmdir()
                except OSError:  # another process put something there meanwhile
                    pass
    if in_torchrun and launched_rank() != 0:
        return  # rank 0 reports
    m = result.metrics
    click.echo(f"{result.out_dir}: {m['mode']}, seeds {m['seeds']} (best {m['best_seed']}), bundle {result.bundle_dir}")
    for subset, entry in m["conditions"].items():
        if entry is None:
            click.echo(f"  {subset:>3}: no network ({m['null_reasons'].get(subset, '')})")
            continue
        t = entry.get("test") or {}
        if not t:
            click.echo(f"  {subset:>3}: no test clip")
            continue
        click.echo(
            f"  {subset:>3}: test MAE {t['MAE']:.3f}  Corr {_num(t['Corr'])}  Acc2 {_pct(t['Acc2_non0'])}  "
            f"F1 {_pct(t['F1_non0'])}  Acc7 {_pct(t['Acc7'])}  (n {t['n']})"
        )
    click.echo(f"report: {result.out_dir / 'report.md'}")


_LOCK_HELD_ENV = "MMCKD_FIT_LOCK_HELD"  # set by --nproc's launcher, which holds the run folder's lock for its ranks


def _lock_run_folder(output: Path, in_torchrun: bool):
    """Lock the run folder for this fit (one process per run: a second fit, --overwrite included, is refused
    while the first runs; the lock of a dead process is taken over). Under torchrun rank 0 holds it, or
    the --nproc launcher that started the ranks. Returns the FileLock, or None when another process of
    this same run holds it."""
    from mmckd.file_lock import LockHeldError, run_folder_lock
    from mmckd.model.distributed import launched_rank

    if in_torchrun and (launched_rank() != 0 or os.environ.get(_LOCK_HELD_ENV)):
        return None
    lock = run_folder_lock(output)
    try:
        lock.acquire()
    except LockHeldError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{output}: cannot create the run folder's lock ({io_reason(e)})")
    if lock.previous_holder:
        click.echo(f"mmckd fit: took over the lock of process {lock.previous_holder}, which ended without "
                   "releasing it", err=True)  # fmt: skip
    return lock


def _remove_temporaries(output: Path) -> None:
    """After a failed write: remove the temporary files and folders (``*.tmp``) under the run folder. The
    folder is locked by this process, so any temporary in it is this run's (or a dead run's) leftover."""
    import shutil

    if not output.is_dir():
        return
    for p in sorted(output.rglob("*.tmp"), key=lambda q: len(q.parts), reverse=True):
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError:
            pass


def _launch_torchrun(nproc: int) -> None:
    """Run this command line again under torch.distributed.run with nproc processes (--nproc removed);
    exits with an error when any rank fails (torchrun then stops the others)."""
    args = _argv_without_nproc(sys.argv[1:])
    if args is None:
        _fail("--nproc needs the command line it was given on; run: torchrun --nproc-per-node N -m mmckd fit ...")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "mmckd", *args]  # fmt: skip
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # each rank sets its torch threads itself; silences torchrun's notice
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # no per-rank DDP notices (find_unused_parameters)
    env[_LOCK_HELD_ENV] = str(os.getpid())  # this launcher holds the run folder's lock for its ranks
    try:
        code = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        _fail("interrupted; continue with the same command and --resume")
    if code != 0:
        _fail(f"distributed training failed (torchrun exit status {code}); the failing rank's error is above")


def _argv_without_nproc(argv: list[str]) -> list[str] | None:
    """argv with its --nproc option removed (None when argv holds no --nproc: not this command line)."""
    out, found, skip = [], False, False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            found = skip = True
        elif a.startswith("--nproc="):
            found = True
        else:
            out.append(a)
    return out if found else None


def _num(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _fail(message: str) -> NoReturn:
    click.echo(f"mmckd fit: error: {message}", err=True)
    sys.exit(2)
