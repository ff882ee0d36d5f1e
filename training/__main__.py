"""Command line: ``python -m training --data DIR [options]`` trains one run in the foreground.

``--resume RUN_DIR`` continues a cancelled, failed or killed run from its last completed epoch;
``--estimate`` times the settings on this machine and prints how long the run would take.

A data-parallel run of several processes (several machines) runs the same command in every process, with
``--coordinator HOST:PORT --num-processes N --process-id K`` or Keras' ``KERAS_DISTRIBUTION_*`` variables;
process 0 creates (or resumes) the run folder and writes it, and the others follow it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

EXIT = {"succeeded": 0, "failed": 1, "busy": 2, "cancelled": 3}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per ``TrainConfig`` field, its default and help taken from the field and its docstring.

    ``--epochs N`` sets ``epochs``; a field that defaults to True is turned off by ``--no-NAME``, one that
    defaults to False on by ``--NAME``; ``--fractions TRAIN VAL TEST`` takes three numbers.
    """
    from dataclasses import fields

    from training.config import CHOICES, RANGES, TrainConfig, defaults, field_help

    default, helps = defaults(), field_help()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, "")
        if f.name not in default:  # data: required unless the run or estimate is given otherwise
            parser.add_argument(flag, help=text)
        elif isinstance(default[f.name], bool):
            if default[f.name]:
                parser.add_argument(f"--no-{flag[2:]}", dest=f.name, action="store_false", help=f"turn off: {text}")
            else:
                parser.add_argument(flag, action="store_true", help=text)
        elif isinstance(default[f.name], tuple):
            kind = type(default[f.name][0])
            metavar = ("TRAIN", "VAL", "TEST") if f.name == "fractions" else None
            parser.add_argument(
                flag, type=kind, nargs=len(default[f.name]), default=default[f.name], metavar=metavar, help=text
            )
        else:
            span = RANGES.get(f.name)
            parser.add_argument(
                flag,
                type=type(default[f.name]),
                default=default[f.name],
                choices=CHOICES.get(f.name),
                metavar=f"{span[0]}-{span[1]}" if span else None,
                help=text,
            )


def parse_args(argv=None) -> argparse.Namespace:
    """Parses the command line."""
    p = argparse.ArgumentParser(
        prog="python -m training", description="Train the VGG16 transfer model on a dataset folder."
    )
    add_config_options(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last completed epoch")
    p.add_argument("--estimate", action="store_true", help="time these settings here and print the run's duration")
    p.add_argument("--estimate-file", help=argparse.SUPPRESS)  # an estimate record prepared by training.launch
    p.add_argument("--run-dir", help=argparse.SUPPRESS)  # a run folder prepared by training.launch
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the lock handed over by training.launch
    cluster = p.add_argument_group(
        "several processes (machines)",
        "every process runs the same command; by default these come from KERAS_DISTRIBUTION_JOB_ADDRESSES, "
        "KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID, else the run is one process",
    )
    cluster.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, which coordinates")
    cluster.add_argument("--num-processes", type=int, metavar="N", help="how many processes train together")
    cluster.add_argument("--process-id", type=int, metavar="K", help="this process, 0 to N-1; 0 writes the run folder")
    args = p.parse_args(argv)
    if not (args.run_dir or args.resume or args.estimate_file) and not args.data:
        p.error("--data is required")
    return args


def _config(args) -> TrainConfig:
    from dataclasses import fields

    from training.config import TrainConfig

    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def main(argv=None) -> int:
    """Runs the command; returns the exit status (0 succeeded, 1 failed, 2 busy, 3 cancelled).

    A failure of a run or estimate that has a status file is recorded there, with its type and message,
    whatever its type; a user's error (an unreadable config) is then printed, anything else raised again.
    """
    args = parse_args(argv)
    from radiology.errors import DistributeError
    from training.distribute import Cluster, initialize

    try:
        cluster = Cluster.from_options(args.coordinator, args.num_processes, args.process_id)
        initialize(cluster)  # before any JAX computation
    except DistributeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT["failed"]
    if cluster.num_processes == 1:
        return _main(args, None)
    if args.estimate or args.estimate_file:
        print("error: an estimate times one process: run it without --coordinator", file=sys.stderr)
        return EXIT["failed"]
    from training.distribute import Mesh, Peers

    peers = Peers(Mesh("data", processes=cluster.num_processes, process_id=cluster.process_id), _abort)
    peers.start()
    code = _main(args, peers)
    if code != EXIT["succeeded"] and code != EXIT["cancelled"]:
        # the others may be gone: skip JAX's shutdown barrier, which would wait for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _abort(message: str) -> None:
    """Ends this process for another process's failure before the run folder is known."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT["failed"])


def _main(args, peers) -> int:
    """:func:`main` in this process: one process alone, or one of a distributed run's (``peers``)."""
    from radiology import jobs
    from radiology.errors import RadiologyError
    from radiology.pretrained import require_weights
    from radiology.registry import STATUS_FILE, load_run
    from training.config import TrainConfig
    from training.distribute import plan
    from training.trainer import run_training

    if args.estimate_file:
        return _estimate(args, None)
    main_process = peers is None or peers.mesh.main
    run_dir = Path(args.resume or args.run_dir) if (args.resume or args.run_dir) else None
    status = run_dir / STATUS_FILE if run_dir is not None and main_process else None
    try:
        with jobs.recording(status):
            if main_process:
                config = TrainConfig.load(run_dir / "config.json") if run_dir is not None else _config(args)
            if peers is not None:  # process 0's config, which the others may have no copy of
                config = TrainConfig.from_dict(peers.share("config", config.to_dict() if main_process else None))
        if run_dir is None or not main_process:  # a resumed or launched run records failures in its folder
            _check_data(config)
            require_weights(config.weights)
        with jobs.recording(status):
            mesh = plan(config)  # refuses a batch the devices do not divide, before training
        error = None
    except (RadiologyError, ValueError, OSError) as exc:
        error = exc
    if peers is not None:
        cause = peers.ready(jobs.describe_error(error) if error is not None else None)
        if cause:  # in process 0: another process cannot start, so no run starts
            print(f"error: {cause}", file=sys.stderr)
            if status is not None:
                jobs.update_status(status, "failed", ended=jobs.now(), error=cause)
            peers.publish_failure(cause)
            return EXIT["failed"]
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        if peers is not None and main_process:
            peers.publish_failure(jobs.describe_error(error))
        return EXIT["failed"]
    if run_dir is None and main_process:
        for warning in config.warnings():
            print(f"warning: {warning}", file=sys.stderr)
    if main_process:
        claimed, lock = _claim(args, config, run_dir)  # the lock is held until this function returns
        if isinstance(claimed, int):
            if peers is not None:
                peers.publish_failure(f"process 0 refused to start (exit status {claimed})")
            return claimed
        run_dir = claimed
    if peers is not None:
        # no shared filesystem assumed: the others make a folder of the same path for their logs
        run_dir = Path(peers.share("run_dir", str(run_dir) if main_process else None))
        run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run folder: {run_dir}; {mesh.describe()}", flush=True)
    _console_without_errors()
    state = run_training(config, run_dir, resume=bool(args.resume), mesh=mesh, peers=peers)
    print(f"run {run_dir.name}: {state}", flush=True)
    if state == "failed" and main_process:
        error = load_run(run_dir).error or "unknown error"
        print(f"error: {error} (the traceback is in {run_dir / 'log.txt'})", file=sys.stderr)
    return EXIT[state]


def _claim(args, config: TrainConfig, run_dir: Path | None) -> tuple[Path | int, object]:
    """In the process that writes the run folder: takes the lock and makes or checks the run folder.

    Returns:
        the run folder, or the exit status when the run is refused (busy, not resumable) or was an
        estimate; and the lock taken here (None when ``training.launch`` handed it over), to hold.
    """
    lock = None
    from radiology.registry import TrainingLock, load_run, new_run_dir, resumable
    from training.launch import busy_message

    if args.lock_fd is None:
        # the lock of the runs folder the run is in, as training.launch takes it: a resumed run's own
        # folder, not the runs_dir its config named when it started
        runs_dir = run_dir.resolve().parent if args.resume else Path(config.runs_dir)
        lock = TrainingLock(runs_dir)
        if not lock.acquire():
            print(f"refused: {busy_message(runs_dir)}", file=sys.stderr)
            return EXIT["busy"], None
        if args.estimate:
            return _estimate(args, config), lock
        if run_dir is None:
            run_dir = new_run_dir(config.runs_dir)
    if args.resume and args.lock_fd is None:  # launch.resume checked it under the lock, then queued the run
        why = resumable(load_run(run_dir))
        if why:
            print(f"error: cannot resume: {why}", file=sys.stderr)
            return EXIT["failed"], lock
    return run_dir, lock


def _check_data(config: TrainConfig) -> None:
    """Finds the dataset's images before a run folder is made, so that a wrong ``--data`` leaves no failed run.

    Raises:
        DatasetError: the folder does not exist or holds no class folder with images.
    """
    from radiology.datasets import discover

    discover(config.data, fractions=config.fractions, seed=config.seed)


def _console_without_errors() -> None:
    """Shows the training log on the console without its error records.

    A failed run logs its traceback, which stays in the run's ``log.txt``; the console gets one ``error:``
    line from :func:`main` instead. The trainer adds no console handler of its own when one is there.
    """
    logger = logging.getLogger("training")
    consoles = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    if not consoles:
        consoles = [logging.StreamHandler()]
        logger.addHandler(consoles[0])
    for console in consoles:
        if _below_error not in console.filters:
            console.addFilter(_below_error)


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def _estimate(args, config) -> int:
    """Times the settings, prints the estimate, and records it where the Training page finds it.

    With ``--estimate-file`` the record, queued by ``training.launch.estimate``, gives the config and the
    job; otherwise this process queues a new record itself. Any failure is recorded in it.
    """
    from radiology import jobs
    from radiology.errors import RadiologyError
    from radiology.fsutil import read_json
    from training.config import TrainConfig
    from training.estimate import describe, estimate_path, estimate_run

    if args.estimate_file:
        path = Path(args.estimate_file)
        job = (read_json(path, {}) or {}).get("job")
    else:
        path = estimate_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        job = jobs.new_id()
        jobs.update_status(path, "queued", job=job, restart=True, queued=jobs.now(), config=config.to_dict())
    pid = os.getpid()
    try:
        with jobs.recording(path, job=job):
            if config is None:
                config = TrainConfig.from_dict(read_json(path, {})["config"])
            jobs.update_status(path, "running", job=job, pid=pid, pid_start=jobs.process_start(pid), started=jobs.now())

            def say(phase):
                print(f"{phase}…", flush=True)
                jobs.update_status(path, job=job, phase=phase)

            estimate = estimate_run(config, progress=say)
    except (RadiologyError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT["failed"]
    jobs.update_status(path, "succeeded", job=job, ended=jobs.now(), estimate=estimate.to_dict())
    print(f"{describe(estimate, config.epochs)}\nHow: {estimate.method()}".replace("**", ""), flush=True)
    return EXIT["succeeded"]


if __name__ == "__main__":
    sys.exit(main())
