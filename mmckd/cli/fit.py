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
from click.core import ParameterSource

from mmckd.atomic_write import WriteError, io_reason, is_io_error
from mmckd.feature_file import FeatureFileError
from mmckd.model.config import (
    CLASS_SCHEMES,
    LONG_SEQUENCE_POLICIES,
    MODES,
    MVSC_POSITIVES,
    MVSC_SPACES,
    MVSC_TEACHER,
    ROUTING_RULES,
    ConfigError,
    FitConfig,
    ModelConfig,
)

_F, _M = FitConfig(), ModelConfig()

# CLI option name -> (config section, field name)
_MODEL_OPTIONS = {
    "d_model": "d_model", "layers": "layers", "cross_layers": "cross_layers", "heads": "heads", "dropout": "dropout",
    "proj_dim": "proj_dim", "max_text": "max_text", "max_audio": "max_audio", "max_vision": "max_vision",
    "long_sequences": "long_sequences", "ff_mult": "ff_mult", "modality_dropout": "modality_dropout",
    "residual_heads": "residual_heads", "cra_blocks": "cra_blocks", "cra_layers": "cra_layers",
    "diffusion_steps": "diffusion_steps", "denoiser_width": "denoiser_width",
}  # fmt: skip
_FIT_OPTIONS = {
    "epochs": "epochs", "teacher_epochs": "teacher_epochs", "batch_size": "batch_size", "lr": "lr",
    "weight_decay": "weight_decay", "lambda_mvsc": "lambda_mvsc", "temperature": "temperature",
    "class_scheme": "class_scheme", "neutral_band": "neutral_band", "loss": "regression_loss", "seeds": "seeds",
    "patience": "patience", "eval_seed": "eval_seed", "compare": "compare", "grad_clip": "grad_clip",
    "missing_rates": "missing_rates", "routing": "routing", "mvsc_space": "mvsc_space",
    "mvsc_teacher": "mvsc_teacher", "mvsc_positives": "mvsc_positives",
    "lambda_reconstruction": "lambda_reconstruction", "lambda_cycle": "lambda_cycle",
}  # fmt: skip
_MODE_FLAGS = {"offline_teacher": "offline-teacher", "no_mvsc": "no-mvsc", "dropout_baseline": "dropout-baseline"}


def _numbers(value: str, kind=int) -> tuple:
    """A comma-separated list of ints or floats, at least one (click names the option in its error)."""
    try:
        items = tuple(kind(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise click.BadParameter(f"expected comma-separated {what}, got {value!r}") from None
    if not items:
        raise click.BadParameter("give at least one value")
    return items


def _list_of(kind):
    """A click callback parsing a comma-separated list of kind (defaults arrive as tuples already)."""

    def callback(ctx, param, value):
        if value is None or isinstance(value, tuple):
            return value
        return _numbers(value, kind)

    return callback


def _mode_list(ctx, param, value):
    if not value:
        return ()
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    for v in items:
        if v not in MODES:
            raise click.BadParameter(f"{v!r} is not a mode; choose from {', '.join(MODES)}")
    return items


def _explicit(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


@click.command()
@click.argument("features", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--offline-teacher", is_flag=True, help="Ablation: pre-train the teacher, freeze it, then distil.")
@click.option("--no-mvsc", is_flag=True, help="Ablation: every network on its regression loss only.")
@click.option("--dropout-baseline", is_flag=True, help="Baseline: one network trained with random modality dropout.")
@click.option("--compare", callback=_mode_list, help=f"Also train these modes for comparison ({', '.join(MODES)}).")
@click.option("--d-model", type=click.IntRange(4), default=_M.d_model, show_default=True, help="Model width.")
@click.option("--layers", type=click.IntRange(1), default=_M.layers, show_default=True, help="Intra-modal layers.")
@click.option(
    "--cross-layers",
    type=click.IntRange(0),
    default=_M.cross_layers,
    show_default=True,
    help="Cross-modal attention layers.",
)
@click.option("--heads", type=click.IntRange(1), default=_M.heads, show_default=True, help="Attention heads.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=_M.dropout, show_default=True)
@click.option(
    "--proj-dim", type=click.IntRange(2), default=_M.proj_dim, show_default=True, help="MVSC projection size."
)
@click.option("--max-text", type=click.IntRange(1), default=_M.max_text, show_default=True, help="Text frames kept.")
@click.option("--max-audio", type=click.IntRange(1), default=_M.max_audio, show_default=True, help="Audio frames kept.")
@click.option(
    "--max-vision", type=click.IntRange(1), default=_M.max_vision, show_default=True, help="Vision frames kept."
)
@click.option(
    "--long-sequences",
    type=click.Choice(LONG_SEQUENCE_POLICIES),
    default=_M.long_sequences,
    show_default=True,
    help="Longer sequences: average into bins (pool) or cut (truncate).",
)
@click.option("--epochs", type=click.IntRange(1), default=_F.epochs, show_default=True)
@click.option("--teacher-epochs", type=click.IntRange(1), default=None, help="Offline teacher epochs [= --epochs].")
@click.option("--batch-size", type=click.IntRange(1), default=_F.batch_size, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_F.lr, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=_F.weight_decay, show_default=True)
@click.option(
    "--lambda",
    "lambda_mvsc",
    type=click.FloatRange(min=0),
    default=_F.lambda_mvsc,
    show_default=True,
    help="Weight of the MVSC loss.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=_F.temperature,
    show_default=True,
    help="MVSC temperature.",
)
@click.option(
    "--class-scheme",
    type=click.Choice(CLASS_SCHEMES),
    default=_F.class_scheme,
    show_default=True,
    help="Sentiment classes of cross-sample positives.",
)
@click.option(
    "--neutral-band",
    type=click.FloatRange(min=0),
    default=_F.neutral_band,
    show_default=True,
    help="3class: |y| <= band is neutral.",
)
@click.option(
    "--loss", type=click.Choice(("l1", "mse")), default=_F.regression_loss, show_default=True, help="Regression loss."
)
@click.option(
    "--seeds",
    callback=_list_of(int),
    default=",".join(map(str, _F.seeds)),
    show_default=True,
    help="Comma-separated training seeds.",
)
@click.option(
    "--patience",
    type=click.IntRange(1),
    default=_F.patience,
    show_default=True,
    help="Early stopping: epochs without a better valid MAE.",
)
@click.option("--eval-seed", type=int, default=_F.eval_seed, show_default=True, help="Seed of the missing protocol.")
@click.option("--mode", "main_mode", type=click.Choice(MODES), default=None, help="The mode to train [online].")
@click.option(
    "--ff-mult", type=click.IntRange(1), default=_M.ff_mult, show_default=True, help="Feed-forward width x d_model."
)
@click.option(
    "--modality-dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=_M.modality_dropout,
    show_default=True,
    help="Multimodal networks drop whole streams of a clip with this probability in training.",
)
@click.option(
    "--residual-heads/--no-residual-heads",
    default=_M.residual_heads,
    show_default=True,
    help="Multimodal networks add a linear head per stream to the fused head.",
)
@click.option(
    "--cra-blocks", type=click.IntRange(1), default=_M.cra_blocks, show_default=True, help="imputation: CRA blocks."
)
@click.option(
    "--cra-layers",
    callback=_list_of(int),
    default=",".join(map(str, _M.cra_layers)),
    show_default=True,
    help="imputation: CRA encoder widths.",
)
@click.option(
    "--diffusion-steps",
    type=click.IntRange(1),
    default=_M.diffusion_steps,
    show_default=True,
    help="diffusion-imputation: sampling steps.",
)
@click.option(
    "--denoiser-width",
    type=click.IntRange(1),
    default=_M.denoiser_width,
    show_default=True,
    help="diffusion-imputation: score network width.",
)
@click.option("--grad-clip", type=click.FloatRange(min=0), default=_F.grad_clip, show_default=True, help="0: none.")
@click.option(
    "--missing-rates",
    callback=_list_of(float),
    default=",".join(map(str, _F.missing_rates)),
    show_default=True,
    help="Missing rates of the random-missing evaluation.",
)
@click.option(
    "--routing",
    type=click.Choice(ROUTING_RULES),
    default=_F.routing,
    show_default=True,
    help="exact: the network of the clip's modalities; validated: the best on valid among those it can use.",
)
@click.option("--mvsc-space", type=click.Choice(MVSC_SPACES), default=_F.mvsc_space, show_default=True)
@click.option("--mvsc-teacher", type=click.Choice(MVSC_TEACHER), default=_F.mvsc_teacher, show_default=True)
@click.option("--mvsc-positives", type=click.Choice(MVSC_POSITIVES), default=_F.mvsc_positives, show_default=True)
@click.option(
    "--lambda-reconstruction",
    type=click.FloatRange(min=0),
    default=_F.lambda_reconstruction,
    show_default=True,
    help="imputation modes: weight of the reconstruction / denoising loss.",
)
@click.option(
    "--lambda-cycle",
    type=click.FloatRange(min=0),
    default=_F.lambda_cycle,
    show_default=True,
    help="imputation: weight of the cycle-consistency loss.",
)
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
    main_mode = options.pop("main_mode")
    if main_mode is not None:
        modes.append(main_mode)
    mode_explicit = bool(modes)
    if len(modes) > 1:
        _fail("choose at most one of --mode, --offline-teacher, --no-mvsc, --dropout-baseline")
    existed = output.exists()
    lock = _lock_run_folder(output, in_torchrun)
    try:
        explicit_model = {f: options[o] for o, f in _MODEL_OPTIONS.items() if _explicit(ctx, o)}
        explicit_fit = {f: options[o] for o, f in _FIT_OPTIONS.items() if _explicit(ctx, o)}
        if mode_explicit:
            explicit_fit["mode"] = modes[0]
        base = run_config(output) if resume else None
        if base is None:
            base = FitConfig()
        config = FitConfig.from_dict(
            base.to_dict()
            | {k: list(v) if isinstance(v, tuple) else v for k, v in explicit_fit.items()}
            | {"model": base.model.to_dict() | explicit_model}
        )
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
