"""Starting and driving the training worker (core/service/worker.py) and the live-preview server
(core/service/preview.py) from Blender.

No bpy here: a job is a private temporary folder holding job.json and the arrays, and a
subprocess started without a shell. A reader thread moves the worker's JSON lines into a queue
(it never touches bpy); the caller drains the queue from a modal timer or blocks on it. spawn,
pump, stop and log_tail also drive dependencies.py's pip and environment-check processes.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from ..core.service.tasks import Task

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_MODULE = os.path.basename(PACKAGE_DIR) + ".core.service.worker"
PREVIEW_MODULE = os.path.basename(PACKAGE_DIR) + ".core.service.preview"


class WorkerError(RuntimeError):
    """The worker could not be started or stopped without finishing its job."""


def _package_root(folder: str) -> str:
    """A folder holding only our package (a link to it), so the worker does not see the other
    extensions installed beside it as top-level packages."""
    root = os.path.join(folder, "package")
    os.makedirs(root, exist_ok=True)
    try:
        os.symlink(PACKAGE_DIR, os.path.join(root, os.path.basename(PACKAGE_DIR)), target_is_directory=True)
    except OSError:  # no symlinks (Windows without the privilege): use the parent folder
        return os.path.dirname(PACKAGE_DIR)
    return root


def spawn(python: str, module: str, arguments: list, folder: str, extra_paths, stderr, stdin):
    """Start `python -m module arguments...` without a shell, in `folder`, with our package and
    `extra_paths` (the dependency folder) on its path and stdout as a text pipe."""
    env = dict(os.environ)
    paths = [_package_root(folder), *extra_paths]
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


class WorkerJob:
    """One run of the worker over a list of tasks (see core/service/worker.py and tasks.py for their fields)."""

    def __init__(self, python: str | None = None, extra_paths: tuple[str, ...] = (), options: dict | None = None):
        # mkdtemp creates the folder readable by this user only (mode 0700).
        self.folder = tempfile.mkdtemp(prefix="neural_field_job_")
        self.python = python or sys.executable
        self.extra_paths = tuple(p for p in extra_paths if p)
        self.tasks: list[dict] = []
        self.options = dict(options or {})  # job-level: cpu_fallback, gpu_memory_fraction
        self.process: subprocess.Popen | None = None
        self.messages: queue.Queue = queue.Queue()
        self.done = False
        self.started_at = 0.0
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
        self._stderr = open(self.path("worker.log"), "wb")
        self.process = spawn(self.python, WORKER_MODULE, [self.path("job.json")], self.folder, self.extra_paths,
                              self._stderr, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
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
        return [
            {"type": "error", "task": None, "message": f"the training worker stopped unexpectedly "
             f"(exit code {message['code']}): {self.log_tail() or 'no output'}"},
            {"type": "done"},
        ]

    def log_tail(self, lines: int = 6) -> str:
        return log_tail(self.path("worker.log"), lines)

    def cancel(self, grace: float = 0.5) -> None:
        """Stop the worker: terminate, then kill if it has not exited within `grace` seconds."""
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
