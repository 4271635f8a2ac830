"""Starting and driving the training worker (core/worker.py) from Blender.

No bpy here: a job is a private temporary folder holding job.json and the arrays, and a
subprocess started without a shell. A reader thread moves the worker's JSON lines into a queue
(it never touches bpy); the caller drains the queue from a modal timer or blocks on it.
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

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_MODULE = os.path.basename(PACKAGE_DIR) + ".core.worker"


class WorkerError(RuntimeError):
    """The worker could not be started or stopped without finishing its job."""


class WorkerJob:
    """One run of the worker over a list of tasks (see core/worker.py for their fields)."""

    def __init__(self, python: str | None = None, extra_paths: tuple[str, ...] = ()):
        # mkdtemp creates the folder readable by this user only (mode 0700).
        self.folder = tempfile.mkdtemp(prefix="neural_field_job_")
        self.python = python or sys.executable
        self.extra_paths = tuple(p for p in extra_paths if p)
        self.tasks: list[dict] = []
        self.process: subprocess.Popen | None = None
        self.messages: queue.Queue = queue.Queue()
        self.done = False
        self.started_at = 0.0
        self._reader: threading.Thread | None = None
        self._stderr = None

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def add_task(self, task: dict) -> int:
        self.tasks.append(task)
        return len(self.tasks) - 1

    def start(self) -> None:
        with open(self.path("job.json"), "w", encoding="utf-8") as handle:
            json.dump({"tasks": self.tasks}, handle)
        env = dict(os.environ)
        paths = [self._package_root(), *self.extra_paths]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        self._stderr = open(self.path("worker.log"), "wb")
        command = [self.python, "-m", WORKER_MODULE, self.path("job.json")]
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                cwd=self.folder,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as error:
            raise WorkerError(f"cannot start the training worker with {self.python!r}: {error}") from error
        self.started_at = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _package_root(self) -> str:
        """A folder holding only our package (a link to it), so the worker does not see the
        other extensions installed beside it as top-level packages."""
        root = self.path("package")
        os.makedirs(root, exist_ok=True)
        try:
            os.symlink(PACKAGE_DIR, os.path.join(root, os.path.basename(PACKAGE_DIR)), target_is_directory=True)
        except OSError:  # no symlinks (Windows without the privilege): use the parent folder
            return os.path.dirname(PACKAGE_DIR)
        return root

    def _read(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict) or "type" not in message:
                message = {"type": "log", "message": line}
            self.messages.put(message)
        self.process.wait()
        self.messages.put({"type": "_exit", "code": self.process.returncode})

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
        try:
            with open(self.path("worker.log"), encoding="utf-8", errors="replace") as handle:
                text = handle.read().strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def cancel(self, grace: float = 0.5) -> None:
        """Stop the worker: terminate, then kill if it has not exited within `grace` seconds."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass  # unkillable (stuck in the driver): leave it to the OS
        self.done = True

    def cleanup(self) -> None:
        self.cancel()
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self._stderr is not None:
            self._stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)
