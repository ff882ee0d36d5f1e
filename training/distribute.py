"""Data-parallel training over every device of every process, on Keras' distribution API (JAX backend).

Keras provides the engine: ``keras.distribution.initialize`` joins the processes (JAX's multi-process
runtime), ``DataParallel`` replicates the variables over a one-axis mesh of all their devices and splits
each batch along it. This module decides whether a run distributes (:func:`plan`), sets the distribution
up (:func:`initialize`, :func:`scope`) and keeps the processes of one run together (:class:`Peers`):

* each process feeds its own slice of every global batch (``training.data.batches`` takes the shard);
* only process 0 writes the run folder, the others log to ``log.<id>.txt`` in it;
* a failure in any process fails the run: each process publishes its failure and a heartbeat in JAX's
  distributed key-value store, and a watcher thread in process 0 records the first failure, or a process
  that stopped beating, in ``status.json`` and ends process 0; the others end when process 0 is gone;
* a cancel seen by any process (the cancel file, SIGTERM) stops them all at the same batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from radiology.errors import DistributeError

log = logging.getLogger("training")

BEAT_S = 1.0  # how often every process publishes its heartbeat
STALE_S = 20.0  # a process whose heartbeat has not moved for this long has stopped responding
KEY = "radiology"  # the prefix of this app's keys in JAX's key-value store


@dataclass(frozen=True)
class Cluster:
    """Where a process stands among the processes of one run.

    Attributes:
        coordinator: ``HOST:PORT`` of process 0 (the coordinator), or None for a single process.
        num_processes: how many processes run the same command.
        process_id: this process, 0 to ``num_processes - 1``; 0 writes the run folder.
    """

    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0

    def __post_init__(self):
        if self.num_processes < 1:
            raise DistributeError(f"the number of processes must be at least 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise DistributeError(
                f"the process id must be 0 to {self.num_processes - 1} for {self.num_processes} processes, "
                f"got {self.process_id}"
            )
        if self.num_processes > 1 and not self.coordinator:
            raise DistributeError(
                f"{self.num_processes} processes need the coordinator's address: --coordinator HOST:PORT or "
                "KERAS_DISTRIBUTION_JOB_ADDRESSES"
            )

    @classmethod
    def from_options(
        cls, coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
    ) -> Cluster:
        """The cluster from the command line's options, else Keras' standard environment variables.

        ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (the first address is the coordinator's),
        ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID`` fill what the options leave
        out; with neither, the run is one process.

        Raises:
            DistributeError: the values do not make a cluster.
        """
        env = os.environ
        if coordinator is None and env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
            coordinator = env["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")[0]
        try:
            if num_processes is None:
                num_processes = int(env.get("KERAS_DISTRIBUTION_NUM_PROCESSES", 1))
            if process_id is None:
                process_id = int(env.get("KERAS_DISTRIBUTION_PROCESS_ID", 0))
        except ValueError as exc:
            raise DistributeError(f"KERAS_DISTRIBUTION_* must be whole numbers: {exc}") from exc
        return cls(coordinator or None, num_processes, process_id)


def initialize(cluster: Cluster) -> None:
    """Joins the processes of ``cluster`` with ``keras.distribution.initialize``; nothing for one process.

    It must run before any JAX computation in the process.

    Raises:
        DistributeError: several processes on a backend other than JAX.
    """
    if cluster.num_processes == 1:
        return
    import keras

    if keras.backend.backend() != "jax":
        raise DistributeError(
            f"{cluster.num_processes} processes need the JAX backend (KERAS_BACKEND=jax); this is "
            f"{keras.backend.backend()}"
        )
    keras.distribution.initialize(cluster.coordinator, cluster.num_processes, cluster.process_id)


@dataclass(frozen=True)
class Mesh:
    """How a run computes: on one device, or data-parallel over ``devices`` devices of ``processes`` processes.

    Attributes:
        mode: ``off`` (one device) or ``data`` (``keras.distribution.DataParallel``).
        devices: devices of every process together that share each batch (1 when off).
        processes: processes of the run.
        process_id: this process.
    """

    mode: str = "off"
    devices: int = 1
    processes: int = 1
    process_id: int = 0

    @property
    def distributed(self) -> bool:
        """Whether the run trains with ``DataParallel``."""
        return self.mode == "data"

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder (process 0)."""
        return self.process_id == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(this process, processes): which slice of every global batch this process feeds."""
        return self.process_id, self.processes

    def describe(self) -> str:
        """The mesh in words: ``JAX data-parallel on 8 devices (2 processes)``, ``one device``."""
        if not self.distributed:
            return "one device"
        processes = f"{self.processes} processes" if self.processes > 1 else "1 process"
        return f"JAX data-parallel on {self.devices} devices ({processes})"

    def to_dict(self) -> dict:
        """JSON-ready data, with the description."""
        return {**asdict(self), "description": self.describe()}


def batch_refusal(batch_size: int, devices: int) -> str | None:
    """Why a global batch cannot be split evenly over ``devices`` devices, or None when it can."""
    if devices > 1 and batch_size % devices:
        return (
            f"batch size {batch_size} does not divide over {devices} devices: choose a multiple of {devices} "
            "(each device takes the same share of every batch)"
        )
    return None


def resolve(distribute: str, batch_size: int, *, backend: str, devices: int, processes: int = 1, process_id: int = 0):
    """The mesh a run's ``distribute`` setting gives on these devices.

    Args:
        distribute: ``auto`` (data-parallel when the JAX backend sees more than one device), ``off`` or ``data``.
        batch_size: the global batch size.
        backend: the Keras backend.
        devices: the devices of every process together.
        processes: the processes of the run.
        process_id: this process.

    Returns:
        the :class:`Mesh`.

    Raises:
        DistributeError: ``data`` (or several processes) on a backend other than JAX, ``off`` with several
            processes, or a batch the devices do not divide.
    """
    if distribute not in ("auto", "off", "data"):
        raise DistributeError(f"distribute must be 'auto', 'off' or 'data', got {distribute!r}")
    if processes > 1 and distribute == "off":
        raise DistributeError(f"distribute off trains on one device, but {processes} processes were started")
    if distribute == "data" and backend != "jax":
        raise DistributeError(
            f"distribute data trains with keras.distribution on the JAX backend; this is {backend}: start it with "
            "KERAS_BACKEND=jax, or set distribute to off"
        )
    mode = distribute if distribute != "auto" else ("data" if backend == "jax" and devices > 1 else "off")
    if mode == "off":
        return Mesh()
    why = batch_refusal(batch_size, devices)
    if why:
        raise DistributeError(why)
    return Mesh("data", devices, processes, process_id)


def plan(config) -> Mesh:
    """The mesh of ``config`` in this process, after :func:`initialize`: its backend, devices and processes.

    Raises:
        DistributeError: as :func:`resolve`.
    """
    import keras

    backend = keras.backend.backend()
    if backend != "jax":
        return resolve(config.distribute, config.batch_size, backend=backend, devices=1)
    import jax

    return resolve(
        config.distribute,
        config.batch_size,
        backend=backend,
        devices=jax.device_count(),
        processes=jax.process_count(),
        process_id=jax.process_index(),
    )


@contextlib.contextmanager
def scope(mesh: Mesh):
    """Trains with ``mesh`` inside: ``DataParallel`` over every device of every process, or as it was when off.

    The data is sharded by this app's loader (each process feeds its slice of every global batch), so
    Keras' own dataset sharding is off. Outside, computations run on this process's own devices again (the
    gate, the test evaluation), so that no process waits in a collective the others never join.
    """
    if not mesh.distributed:
        yield
        return
    import keras

    devices = keras.distribution.list_devices()
    with _distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)):
        yield


def local():
    """Computes on this process's own devices inside, outside any distribution."""
    return _distribution(None)


@contextlib.contextmanager
def _distribution(distribution):
    import keras

    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def broadcast(values: list, *, main: bool) -> list:
    """Process 0's numpy arrays in every process (the others pass arrays of the same shapes and dtypes)."""
    import numpy as np
    from jax.experimental import multihost_utils

    return [np.asarray(v) for v in multihost_utils.broadcast_one_to_all(values, is_source=main)]


def training_backend() -> str:
    """The Keras backend the app's runs train on: ``RADIOLOGY_TRAINING_BACKEND``, else the app's own."""
    import keras

    return os.environ.get("RADIOLOGY_TRAINING_BACKEND") or keras.backend.backend()


def device_count(backend: str | None = None, *, timeout: float = 120.0) -> int:
    """The devices a training process started here on ``backend`` sees, asked in a child process.

    The app runs TensorFlow while its runs may train on JAX (``RADIOLOGY_TRAINING_BACKEND``); asking in a
    child keeps JAX from taking the GPU's memory inside the app.

    Args:
        backend: the Keras backend of the runs; by default :func:`training_backend`.
        timeout: seconds to wait for the answer.

    Returns:
        the device count; 1 on a backend other than JAX, where runs train on one device.
    """
    if (backend or training_backend()) != "jax":
        return 1
    code = "import jax; print(jax.device_count())"
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise DistributeError(f"could not count the JAX devices: {out.stderr.strip()[-300:]}")
    return int(out.stdout.split()[-1])


class Peers:
    """The processes of one distributed run, through JAX's key-value store and collectives.

    Every process publishes a heartbeat and, when it fails, its failure. Process 0 watches the others and
    calls ``on_peer_failure(message)`` with the first failure or silence it sees (that callback records it
    and ends the process); the others end themselves when process 0 has failed or is gone.

    Args:
        mesh: the run's mesh.
        on_peer_failure: called in process 0, in the watcher thread, with the failure in words.
        stale_s: seconds without a heartbeat after which a process counts as stopped.
    """

    def __init__(self, mesh: Mesh, on_peer_failure: Callable[[str], None], *, stale_s: float = STALE_S):
        from jax._src import distributed

        self.mesh = mesh
        self.client = distributed.global_state.client
        self.on_peer_failure = on_peer_failure
        self.stale_s = stale_s
        self._stop = threading.Event()
        self._reported = threading.Lock()
        self._beats = 0
        self._finishing = False
        self._thread: threading.Thread | None = None

    def _key(self, *parts) -> str:
        return "/".join((KEY, *map(str, parts)))

    def _get(self, key: str) -> str | None:
        try:
            return self.client.key_value_try_get(key)
        except Exception as exc:  # noqa: BLE001  (NOT_FOUND comes as the runtime's one error type)
            if "NOT_FOUND" in str(exc):
                return None
            raise

    def start(self) -> None:
        """Starts the heartbeat and, in process 0, the watch over the others (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="peers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the heartbeat and the watch."""
        self._stop.set()

    def _run(self) -> None:
        seen = {k: (None, time.monotonic()) for k in range(self.mesh.processes) if k != self.mesh.process_id}
        while not self._stop.is_set():
            try:
                self._beats += 1
                beat = self._key("beat", self.mesh.process_id)
                self.client.key_value_set(beat, str(self._beats), allow_overwrite=True)
                if self.mesh.main:
                    message = self._watch(seen)
                    if message:
                        self.report(message)
                        return
                elif self._get(self._key("failed", 0)) is not None:
                    self._exit("process 0 failed; this process ends with it")
                elif not self._finishing and self._get(self._key("shared", "finished")) is not None:
                    self._exit("process 0 ended the run (cancelled before training); this process ends with it")
            except Exception as exc:  # noqa: BLE001  (the coordinator is gone: nothing left to train with)
                if self._stop.is_set():
                    return
                if self.mesh.main:
                    self.report(f"the distributed runtime failed: {type(exc).__name__}: {exc}")
                    return
                self._exit(f"process 0 is gone ({type(exc).__name__}); this process ends")
            self._stop.wait(BEAT_S)

    def _watch(self, seen: dict) -> str | None:
        """The first failure or silence among the other processes, in words, or None."""
        for k, (last, since) in seen.items():
            failed = self._get(self._key("failed", k))
            if failed is not None:
                return f"process {k} of {self.mesh.processes} failed: {failed}"
            beat = self._get(self._key("beat", k))
            if beat != last:
                seen[k] = (beat, time.monotonic())
            elif time.monotonic() - since > self.stale_s:
                return (
                    f"process {k} of {self.mesh.processes} stopped responding (no heartbeat for "
                    f"{round(time.monotonic() - since)} s)"
                )
        return None

    def peer_failure(self, *, wait_s: float | None = None) -> str | None:
        """In process 0, after its own error: the failure of another process that caused it, if any.

        A collective whose peer died fails in every process; the process that died first is the one to name.
        Waits up to ``wait_s`` (default: the heartbeat timeout) for a failure report or a silent heartbeat.
        """
        seen = {k: (None, time.monotonic()) for k in range(self.mesh.processes) if k != self.mesh.process_id}
        end = time.monotonic() + (self.stale_s + 2 * BEAT_S if wait_s is None else wait_s)
        while True:
            try:
                message = self._watch(seen)
            except Exception:  # noqa: BLE001  (the runtime itself is broken: this process's error stands)
                return None
            if message or time.monotonic() > end:
                return message
            time.sleep(BEAT_S / 2)

    def publish_failure(self, message: str) -> None:
        """Tells the other processes that this one failed, with ``message``."""
        with contextlib.suppress(Exception):
            self.client.key_value_set(self._key("failed", self.mesh.process_id), message, allow_overwrite=True)

    def report(self, message: str) -> None:
        """In process 0: hands the first failure to ``on_peer_failure`` (once), which ends the process."""
        if self._reported.acquire(blocking=False):
            self.on_peer_failure(message)
        else:  # another thread is reporting, and ends the process
            threading.Event().wait()

    def _exit(self, why: str) -> None:
        log.error(why)
        for handler in log.handlers:
            handler.flush()
        os._exit(1)

    def ready(self, error: str | None) -> str | None:
        """Every process's start-up checks (config, data, weights, mesh), gathered by process 0 before it makes
        the run folder, so that a process that cannot start (a machine without the dataset) leaves none.

        Args:
            error: this process's failure in words, or None when its checks passed.

        Returns:
            in process 0, whose checks passed: the first other process's failure in words, or None when all
            can start; else None.
        """
        self.client.key_value_set(self._key("ready", self.mesh.process_id), error or "", allow_overwrite=True)
        if not self.mesh.main or error:
            return None
        for k in range(1, self.mesh.processes):
            outcome = self.client.blocking_key_value_get(self._key("ready", k), 24 * 3600 * 1000)
            if outcome:
                return f"process {k} of {self.mesh.processes} could not start: {outcome}"
        return None

    def share(self, name: str, value=None):
        """Process 0's ``value`` (JSON-ready) in every process: set by process 0, awaited by the others."""
        key = self._key("shared", name)
        if self.mesh.main:
            self.client.key_value_set(key, json.dumps(value), allow_overwrite=True)
            return value
        return json.loads(self.client.blocking_key_value_get(key, 24 * 3600 * 1000))

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true in any process: a tiny collective every process must reach together."""
        import numpy as np
        from jax.experimental import multihost_utils

        return bool(np.asarray(multihost_utils.process_allgather(np.array([flag], dtype=np.int32))).any())

    def finish(self, state: str) -> str:
        """The end of the run in every process: process 0 publishes its final state, the others wait for it.

        Returns:
            process 0's final state.
        """
        self._finishing = True
        state = self.share("finished", state)
        self.stop()
        return state
