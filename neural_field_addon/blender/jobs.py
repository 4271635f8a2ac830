"""Starting and driving the training worker and the live-preview server (core/service/preview.py)
from Blender.

No bpy here: a job is a private temporary folder holding job.json and the arrays. It runs in the
warm worker (core/service/server.py), one process per Blender kept with its imports done between
jobs (`warm_worker`; replaced when it died or its settings changed, gone after its idle time, and
when Blender exits), or, without warm settings, in a worker process of its own
(core/service/worker.py). Processes start without a shell. A reader thread moves the worker's
JSON lines into each job's queue (it never touches bpy); the caller drains the queue from a modal
timer or blocks on it. spawn, pump, stop and log_tail also drive dependencies.py's pip and
environment-check processes.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from ..core.service.caches import CACHE_ENV
from ..core.service.tasks import Task

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_MODULE = os.path.basename(PACKAGE_DIR) + ".core.service.worker"
SERVER_MODULE = os.path.basename(PACKAGE_DIR) + ".core.service.server"
PREVIEW_MODULE = os.path.basename(PACKAGE_DIR) + ".core.service.preview"


class WorkerError(RuntimeError):
    """The worker could not be started or stopped without finishing its job."""


def _package_root(folder: str) -> str:
    """A folder holding only our package (a link to it), so the worker does not see the other
    extensions installed beside it as top-level packages. In `folder`/package, kept if it is
    there: a stable folder (the kernel cache's) gives every worker the same path to the sources,
    which Numba's cache is keyed by."""
    root = os.path.join(folder, "package")
    link = os.path.join(root, os.path.basename(PACKAGE_DIR))
    os.makedirs(root, exist_ok=True)
    try:
        if os.path.islink(link) and os.readlink(link) == PACKAGE_DIR:
            return root
        if os.path.islink(link):  # another installation of the add-on: point at this one
            os.remove(link)
        os.symlink(PACKAGE_DIR, link, target_is_directory=True)
    except FileExistsError:  # another Blender made it at the same moment
        return root if os.path.islink(link) and os.readlink(link) == PACKAGE_DIR else os.path.dirname(PACKAGE_DIR)
    except OSError:  # no symlinks (Windows without the privilege): use the parent folder
        return os.path.dirname(PACKAGE_DIR)
    return root


def spawn(python: str, module: str, arguments: list, folder: str, extra_paths, stderr, stdin,
          environment: dict | None = None):
    """Start `python -m module arguments...` without a shell, in `folder`, with our package and
    `extra_paths` (the dependency folder) on its path, `environment` added to ours and stdout as a
    text pipe."""
    env = {**os.environ, **(environment or {})}
    paths = [_package_root(env.get(CACHE_ENV) or folder), *extra_paths]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        return subprocess.Popen(
            [python, "-m", module, *arguments],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=folder,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except OSError as error:
        raise WorkerError(f"cannot start the training worker with {python!r}: {error}") from error


def _parse_line(line: str):
    line = line.strip()
    if not line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict) or "type" not in message:
        message = {"type": "log", "message": line}
    return message


def pump(process, messages: queue.Queue, last) -> None:
    """Move the process's JSON lines into `messages` (a reader thread's loop); when its stdout
    closes, wait for it and put `last(exit code)`."""
    for line in process.stdout:
        message = _parse_line(line)
        if message is not None:
            messages.put(message)
    process.wait()
    messages.put(last(process.returncode))


def log_tail(path: str, lines: int = 6) -> str:
    """The last `lines` lines of a process's log, joined on one line for a message."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read().strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def stop(process, grace: float) -> None:
    """Terminate, then kill if the process has not exited within `grace` seconds."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # unkillable (stuck in the driver): leave it to the OS


class WarmWorker:
    """One warm worker process (core/service/server.py) and the jobs it runs, its messages routed
    to each job's queue by the job's id. `key` is what it was started with: a worker whose key
    differs from the settings of a new job is replaced."""

    def __init__(self, key: tuple, python: str, extra_paths: tuple, idle: float, device: str,
                 environment: dict | None = None):
        self.key = key
        self.folder = tempfile.mkdtemp(prefix="neural_field_worker_")
        self.log_path = os.path.join(self.folder, "worker.log")
        self._log = open(self.log_path, "wb")
        self.ready: dict | None = None  # the worker's 'ready' message once its imports are done
        self.unusable = ""  # why this Python cannot run jobs, if it said so
        self.finished = False
        self.statuses: queue.Queue = queue.Queue()
        self._jobs: dict = {}  # job id -> its message queue
        self._lock = threading.Lock()
        self._stdin_lock = threading.Lock()
        try:
            self.process = spawn(python, SERVER_MODULE, ["--idle", f"{idle:g}", "--device", device], self.folder,
                                 extra_paths, self._log, stdin=subprocess.PIPE, environment=environment)
        except WorkerError:
            self._log.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.finished and self.process.poll() is None

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._jobs)

    def _read(self) -> None:
        for line in self.process.stdout:
            message = _parse_line(line)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "ready":
                self.ready = message
                continue
            if kind == "unusable":
                self.unusable = message.get("message", "")
                continue
            if kind == "status":
                self.statuses.put(message)
                continue
            job_id = message.pop("job", None)
            with self._lock:
                target = self._jobs.get(job_id)
                if kind == "done":
                    self._jobs.pop(job_id, None)
            if target is not None:
                target.put(message)
        self.process.wait()
        with self._lock:
            self.finished = True
            targets, self._jobs = list(self._jobs.values()), {}
        for target in targets:
            target.put({"type": "_exit", "code": self.process.returncode, "reason": self.unusable})

    def submit(self, job_id: str, path: str, messages: queue.Queue) -> None:
        """Run the job file at `path`; its messages go to `messages`, the last 'done' (or an
        '_exit' if the worker dies first)."""
        with self._lock:
            if self.finished:
                messages.put({"type": "_exit", "code": self.process.returncode, "reason": self.unusable})
                return
            self._jobs[job_id] = messages
        try:
            self._send({"type": "job", "id": job_id, "path": path})
        except WorkerError:
            pass  # it has exited: the reader gives the job its '_exit' and the reason

    def cancel(self, job_id: str, grace: float) -> None:
        """Ask the worker to stop the job at its next progress report; if it has not within
        `grace` seconds (a long step that reports nothing), the worker is stopped."""
        with self._lock:
            if job_id not in self._jobs:
                return
            self._jobs[job_id] = queue.Queue()  # its caller has gone: the rest is dropped
        try:
            self._send({"type": "cancel", "id": job_id})
        except WorkerError:
            return
        timer = threading.Timer(grace, self._stop_if_running, args=(job_id,))
        timer.daemon = True
        timer.start()

    def status(self, timeout: float = 10.0) -> dict:
        """The worker's status reply (core/service/server.py): its pid, jobs run, the GPU memory
        it holds. It answers between jobs."""
        self._send({"type": "status"})
        try:
            return self.statuses.get(timeout=timeout)
        except queue.Empty as error:
            raise WorkerError("the training worker did not answer") from error

    def _stop_if_running(self, job_id: str) -> None:
        with self._lock:
            running = job_id in self._jobs
        if running:
            stop(self.process, grace=0.5)

    def _send(self, message: dict) -> None:
        try:
            with self._stdin_lock:
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.flush()
        except (OSError, ValueError) as error:  # it has exited (its pipe is closed)
            raise WorkerError(f"the training worker has stopped: {log_tail(self.log_path) or error}") from error

    def shutdown(self, grace: float = 1.0) -> None:
        """Ask the worker to quit, and stop it if it has not within `grace` seconds."""
        if self.process.poll() is None:
            try:
                self._send({"type": "quit"})
                self.process.stdin.close()
                self.process.wait(timeout=grace)
            except (WorkerError, OSError, subprocess.TimeoutExpired):
                pass
        stop(self.process, grace=0.5)
        self._reader.join(timeout=2)
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_WORKER: WarmWorker | None = None
_WORKER_LOCK = threading.Lock()
# Settings whose worker could not be started (no such Python): a prewarm does not try them again
# until the settings change; a job asks anyway, and reports why.
_UNSTARTABLE: set = set()


def _key(python, extra_paths, idle, device, memory, environment) -> tuple:
    return (python, tuple(extra_paths), float(idle), device, float(memory), tuple(sorted((environment or {}).items())))


def warm_worker(python: str, extra_paths: tuple = (), idle: float = 600.0, device: str = "auto",
                memory: float = 1.0, environment: dict | None = None, replace_busy: bool = True) -> WarmWorker:
    """This Blender's warm worker for these settings: the running one, or a new one where there
    is none, it died, or it was started with other settings (its Python, dependency folder, idle
    time, device, memory limit or environment: the kernel caches). A busy worker is replaced only
    with `replace_busy`."""
    global _WORKER
    key = _key(python, extra_paths, idle, device, memory, environment)
    with _WORKER_LOCK:
        current = _WORKER
        if current is not None and current.key == key and current.alive:
            return current
        if current is not None and current.alive and current.busy and not replace_busy:
            return current
        if current is not None:
            _WORKER = None
            current.shutdown()
        _WORKER = WarmWorker(key, python, tuple(extra_paths), idle, device, environment)
        return _WORKER


def prewarm(python: str, extra_paths: tuple = (), idle: float = 600.0, device: str = "auto",
            memory: float = 1.0, environment: dict | None = None) -> WarmWorker | None:
    """Start the warm worker in the background if it is not running (the panel is drawn, the
    add-on enabled): never raises, never blocks, and leaves a busy worker alone."""
    key = _key(python, extra_paths, idle, device, memory, environment)
    current = _WORKER
    if key in _UNSTARTABLE or (current is not None and current.key == key and current.unusable):
        return None  # a Python that cannot run jobs is not restarted at every redraw; a job says why
    try:
        return warm_worker(python, extra_paths, idle, device, memory, environment, replace_busy=False)
    except WorkerError:
        _UNSTARTABLE.add(key)
        return None


def current_worker() -> WarmWorker | None:
    """The warm worker if one is running."""
    worker = _WORKER
    return worker if worker is not None and worker.alive else None


def shutdown_worker() -> None:
    """Stop the warm worker (the add-on is disabled, Blender exits)."""
    global _WORKER
    with _WORKER_LOCK:
        worker, _WORKER = _WORKER, None
    if worker is not None:
        worker.shutdown()


atexit.register(shutdown_worker)
_JOB_IDS = itertools.count(1)
# Seconds a cancelled job has to reach its next progress report before its worker is stopped.
CANCEL_GRACE = 10.0


class WorkerJob:
    """One job of tasks (see core/service/worker.py and tasks.py for their fields), run by the
    warm worker when `warm` gives its settings (warm_worker's idle, device, memory), else by a
    worker process of its own."""

    def __init__(self, python: str | None = None, extra_paths: tuple[str, ...] = (), options: dict | None = None,
                 warm: dict | None = None, environment: dict | None = None):
        # mkdtemp creates the folder readable by this user only (mode 0700).
        self.folder = tempfile.mkdtemp(prefix="neural_field_job_")
        self.python = python or sys.executable
        self.extra_paths = tuple(p for p in extra_paths if p)
        self.tasks: list[dict] = []
        self.options = dict(options or {})  # job-level: cpu_fallback, gpu_memory_fraction
        self.warm = warm
        self.environment = dict(environment or {})  # added to the worker's (the kernel caches' folder)
        self.worker: WarmWorker | None = None
        self.process: subprocess.Popen | None = None
        self.messages: queue.Queue = queue.Queue()
        self.done = False
        self.started_at = 0.0
        self.id = f"{os.getpid()}-{next(_JOB_IDS)}"
        self._reader: threading.Thread | None = None
        self._stderr = None

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def add_task(self, task: Task | dict) -> int:
        """Add a task (core/service/tasks.py), or its JSON object as the worker reads it; returns
        its index, the `task` of its messages."""
        self.tasks.append(task.to_dict() if isinstance(task, Task) else dict(task))
        return len(self.tasks) - 1

    def start(self) -> None:
        with open(self.path("job.json"), "w", encoding="utf-8") as handle:
            json.dump({**self.options, "tasks": self.tasks}, handle)
        self.started_at = time.monotonic()
        if self.warm is not None:
            self.worker = warm_worker(self.python, self.extra_paths, **self.warm, environment=self.environment)
            self.process = self.worker.process
            self.worker.submit(self.id, self.path("job.json"), self.messages)
            return
        self._stderr = open(self.path("worker.log"), "wb")
        self.process = spawn(self.python, WORKER_MODULE, [self.path("job.json")], self.folder, self.extra_paths,
                              self._stderr, stdin=subprocess.DEVNULL, environment=self.environment)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pump(self.process, self.messages, lambda code: {"type": "_exit", "code": code})

    def poll(self) -> list[dict]:
        """Messages received since the last call, without blocking. The last one of a job is
        {'type': 'done'} or, if the worker died first, an 'error' naming its exit code."""
        out = []
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return out
            out.extend(self._translate(message))

    def wait_messages(self, timeout: float = 0.25) -> list[dict]:
        """Like poll(), but waits up to `timeout` seconds for the first message."""
        try:
            first = self.messages.get(timeout=timeout)
        except queue.Empty:
            return []
        return self._translate(first) + self.poll()

    def _translate(self, message: dict) -> list[dict]:
        if message.get("type") == "done":
            self.done = True
        if message.get("type") != "_exit":
            return [message]
        if self.done:
            return []
        self.done = True
        text = message.get("reason") or (f"the training worker stopped unexpectedly (exit code {message['code']}): "
                                         f"{self.log_tail() or 'no output'}")
        return [{"type": "error", "task": None, "message": text}, {"type": "done"}]

    def log_tail(self, lines: int = 6) -> str:
        return log_tail(self.worker.log_path if self.worker is not None else self.path("worker.log"), lines)

    def cancel(self, grace: float = 0.5) -> None:
        """Stop the job. In the warm worker it stops at its next progress report and the worker
        stays (stopped only if the job does not stop within CANCEL_GRACE); a worker of its own is
        terminated, then killed if it has not exited within `grace` seconds."""
        if self.worker is not None:
            if not self.done:
                self.worker.cancel(self.id, CANCEL_GRACE)
        else:
            stop(self.process, grace)
        self.done = True

    def cleanup(self) -> None:
        self.cancel()
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self._stderr is not None:
            self._stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class PreviewSession:
    """A live-preview server (core/service/preview.py) holding one shape space: request() sends a blend
    and returns its id; poll() gives the replies. Only the newest mesh matters to the caller, and
    the server skips blends that a newer one has overtaken, so requests may be sent freely."""

    def __init__(self, space_path: str, device: str = "auto", python: str | None = None,
                 extra_paths: tuple[str, ...] = ()):
        self.space_path = space_path
        self.folder = tempfile.mkdtemp(prefix="neural_field_preview_")
        self.messages: queue.Queue = queue.Queue()
        self.next_id = 0
        self.loaded = None  # the 'loaded' reply once the space is in memory
        self._stderr = open(os.path.join(self.folder, "preview.log"), "wb")
        self.process = spawn(python or sys.executable, PREVIEW_MODULE, [], self.folder,
                              tuple(p for p in extra_paths if p), self._stderr, stdin=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._send({"type": "load", "path": space_path, "device": device})

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def request(self, weights: dict, slerp: bool = False, resolution: int = 64, level: float = 0.0) -> int:
        """Ask for the blend {shape index: weight}; returns the request's id."""
        request_id = self.next_id
        self.next_id += 1
        self._send({"type": "blend", "id": request_id, "weights": {str(i): float(w) for i, w in weights.items()},
                    "slerp": bool(slerp), "resolution": int(resolution), "level": float(level),
                    "out": os.path.join(self.folder, f"preview_{request_id}.npz")})
        return request_id

    def _send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError) as error:  # the server has exited (its pipe is closed)
            raise WorkerError(f"the preview worker has stopped: {log_tail(self._log_path()) or error}") from error

    def _read(self) -> None:
        pump(self.process, self.messages, lambda code: {
            "type": "error", "id": None, "fatal": True,
            "message": f"the preview worker stopped (exit code {code}): {log_tail(self._log_path()) or 'no output'}"})

    def _log_path(self) -> str:
        return os.path.join(self.folder, "preview.log")

    def poll(self, timeout: float = 0.0) -> list[dict]:
        """Replies received so far; waits up to `timeout` seconds for the first one."""
        out = []
        try:
            out.append(self.messages.get(timeout=timeout) if timeout > 0 else self.messages.get_nowait())
            while True:
                out.append(self.messages.get_nowait())
        except queue.Empty:
            pass
        for message in out:
            if message.get("type") == "loaded":
                self.loaded = message
        return out

    def close(self) -> None:
        if self.alive:
            try:
                self._send({"type": "quit"})
                self.process.wait(timeout=1.0)
            except (WorkerError, subprocess.TimeoutExpired):
                pass
        stop(self.process, grace=0.5)
        self._reader.join(timeout=2)
        self._stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)
