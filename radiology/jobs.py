"""Background jobs: training runs, evaluations and duration estimates, written once.

A job is a process started in its own session, so that a restart of the app does not take it down.
It reports through one JSON status file, which moves through one state machine: ``queued`` (written
before the process starts), ``running`` (written by the process itself, with its pid), then one final
state (``succeeded``, ``failed`` or ``cancelled``) that never changes. Every write is a read, a change
and an atomic write under an exclusive lock beside the file, so the launcher and the job never undo
each other's writes, and two launchers never both start a job.

A status names its process by pid and start time; only the job's own process is ever recorded, so a
cancel can never signal the app. A live status whose process has died reads as ``failed``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from radiology.fsutil import read_json, write_json_atomic
from radiology.settings import PROJECT_ROOT

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
LIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")
# a status only moves forwards: queued, then running, then one final state
STATE_RANK = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
# a queued job has no pid until its process starts; past this age without one, its launcher died
SPAWN_GRACE_S = 120.0
# fields of one attempt, cleared when a job is queued again
ATTEMPT_FIELDS = ("ended", "error", "pid", "pid_start", "phase", "progress", "done", "total")

_children: list[subprocess.Popen] = []  # kept so finished children are reaped, not left as zombies


def now() -> str:
    """The current UTC time as an ISO string."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_id() -> str:
    """A new job id: the local start time, then four random hex digits, so ids sort by start time."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def describe_error(exc: BaseException) -> str:
    """An exception as ``Type: message`` (``Type`` alone when it has no message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def process_start(pid) -> int | None:
    """When a process started, in clock ticks after boot (field 22 of ``/proc/PID/stat``); None if unknown.

    A pid is reused once its process is gone; the pid and this start time together name one process.
    """
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        # the command name (field 2) may hold spaces and parentheses, so count from its closing one
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid, start: int | None = None) -> bool:
    """Whether the process ``pid`` exists, is not a zombie and, when ``start`` is given, started then.

    A process that reused the pid of a dead one has another start time and reads as not alive.
    Reaps the process if it is our child.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None and process_start(pid) not in (start, None):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def terminate(pid, start: int | None) -> bool:
    """Sends SIGTERM to process ``pid`` if it lives and, when ``start`` is given, started then.

    On Linux the process is held by a pidfd while its start time is checked, so the pid cannot be
    reused between the check and the signal.

    Returns:
        whether the signal was sent.
    """
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfds here: check, then signal by pid
        if not pid_alive(pid, start):
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True
    try:
        if not pid_alive(pid, start):
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def _age_s(iso: str | None) -> float:
    try:
        return (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(iso)).total_seconds()
    except (TypeError, ValueError):
        return float("inf")


def is_live(status: dict | None) -> bool:
    """Whether a status is queued or running and its process lives.

    A queued status has no pid until its process has started: it counts as live for
    :data:`SPAWN_GRACE_S` seconds after its last write.
    """
    if not status or status.get("state") not in LIVE_STATES:
        return False
    if status.get("pid") is None:
        return status.get("state") == "queued" and _age_s(status.get("updated")) < SPAWN_GRACE_S
    return pid_alive(status.get("pid"), status.get("pid_start"))


def effective_state(status: dict | None) -> str:
    """The state of a status, with a live state whose process has died read as ``failed``."""
    state = (status or {}).get("state", "failed")
    if state in LIVE_STATES and not is_live(status):
        return "failed"
    return state


def died_message(status: dict, what: str) -> str | None:
    """Why a live status reads as failed (``the WHAT process (pid N) died without finishing``), else None."""
    if status.get("state") not in LIVE_STATES or is_live(status):
        return None
    if status.get("pid") is None:
        return f"the {what} process never started"
    return f"the {what} process (pid {status['pid']}) died without finishing"


def read_status(path: str | Path, *, what: str = "job") -> dict | None:
    """A job's status file, or None when there is none; a live status whose process died reads as ``failed``.

    Args:
        path: the status file.
        what: the job's kind in words, for the error of a dead job (``training``, ``evaluation``).
    """
    status = read_json(path)
    if not isinstance(status, dict):
        return None
    died = died_message(status, what)
    return {**status, "state": "failed", "error": died} if died else status


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.lock")


@contextmanager
def _locked(path: Path):
    fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_status(
    path: str | Path, state: str | None = None, *, job: str | None = None, restart: bool = False, **fields
) -> dict:
    """Changes a job's status file under its lock; returns the status as it is now on disk.

    The state only moves forwards (queued, running, then a final state): a write that would move it
    back, or change a final state, changes nothing. ``restart`` begins a new attempt: it moves a status
    that is not live (missing, final, or live with a dead process) to ``queued``, and changes nothing
    while another attempt is live, so that checking and queueing are one step.

    Args:
        path: the status file.
        state: the new state, or None to add ``fields`` without changing it.
        job: the id of the job the caller belongs to. With ``restart`` it names the new job, whose
            status replaces the old one; otherwise the write applies only while the status is that job's.
        restart: start a new attempt (``state`` must be ``queued``); without ``job`` the status keeps its
            fields, less those of the last attempt, and counts ``attempt`` up.
        **fields: fields to set, such as ``pid``, ``started`` or ``error``.

    Raises:
        ValueError: ``state`` is not one of :data:`STATES`, or ``restart`` with another state.
    """
    if state is not None and state not in STATE_RANK:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    if restart and state != "queued":
        raise ValueError(f"a restart queues the job, got state {state!r}")
    path = Path(path)
    with _locked(path):
        status = read_json(path, {})
        status = status if isinstance(status, dict) else {}
        current = status.get("state")
        if restart:
            if is_live(status):
                return status
            attempt = int(status.get("attempt", 0)) + 1 if status and job is None else 1
            status = {"job": job} if job is not None else {k: v for k, v in status.items() if k not in ATTEMPT_FIELDS}
            status["attempt"] = attempt
        elif job is not None and status.get("job") != job:
            return status
        elif state is not None and current in STATE_RANK:
            if STATE_RANK[state] < STATE_RANK[current] or (STATE_RANK[current] == 2 and state != current):
                return status
        status.update(fields, updated=now())
        if state is not None:
            status["state"] = state
        write_json_atomic(path, status)
        return status


def fail(path: str | Path, exc: BaseException, *, job: str | None = None) -> None:
    """Records an exception as the job's failure (``Type: message``), unless the job has already ended."""
    update_status(path, "failed", job=job, ended=now(), error=describe_error(exc))


@contextmanager
def recording(path: str | Path | None, *, job: str | None = None):
    """Records any exception raised inside as the job's failure, then raises it again.

    Args:
        path: the job's status file, or None to record nothing.
        job: the job id the caller belongs to.
    """
    try:
        yield
    except BaseException as exc:
        if path is not None:
            fail(path, exc, job=job)
        raise


def spawn(
    argv: list[str], *, console: str | Path, env: dict | None = None, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen:
    """Starts ``python ARGV`` in the project root, in its own session, writing its output to ``console``.

    Args:
        argv: the arguments after the interpreter, such as ``["-m", "training", ...]``.
        console: the file that receives the process's stdout and stderr (appended to).
        env: the environment (default: this process's).
        pass_fds: descriptors the child inherits, such as a lock it takes over.

    Raises:
        OSError: the process could not start.
    """
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)
    with open(console, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=PROJECT_ROOT,
            env=dict(os.environ) if env is None else env,
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a restart of the app does not take the job down with it
        )
    _children.append(proc)
    return proc


def start(path: str | Path, argv: list[str], *, console: str | Path, job: str | None = None, **kwargs) -> dict:
    """Spawns the process of a queued job and records its pid; a failed start marks the job failed.

    The job's process writes ``running`` with its own pid; this records the same pid, so the status
    never names the launcher.

    Returns:
        the status after the pid is recorded.

    Raises:
        OSError: the process could not start (the status then reads failed, with the reason).
    """
    try:
        proc = spawn(argv, console=console, **kwargs)
    except OSError as exc:
        update_status(path, "failed", job=job, ended=now(), error=f"the process did not start: {describe_error(exc)}")
        raise
    return update_status(path, job=job, pid=proc.pid, pid_start=process_start(proc.pid))
