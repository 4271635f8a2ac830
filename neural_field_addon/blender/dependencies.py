"""Install Dependencies and Check Dependencies (add-on preferences).

Install runs pip in the worker's Python (`python -m pip install --target <dependency folder>`),
without a shell, reading its output on a thread; the preferences show a progress bar and the last
line, the status bar says what it does, and the result is reported in words. Check runs
core/service/environment.py in the worker's Python and keeps what it found (PyTorch version, CUDA
or not, the GPU) for the preferences to show. Both then warm the kernel caches: a warm-up job
(core/service/tasks.py's WarmupTask) in the worker compiles what a fit compiles (Numba on the CPU,
Triton on the GPU) into the add-on's cache folder, with progress, so the first fit on a machine
is as fast as the tenth. Neither imports torch into Blender.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

import bpy
from bpy.props import StringProperty

from .driver import new_job
from .jobs import PACKAGE_DIR, WorkerError, log_tail, pump, spawn, stop
from .redraw import redraw_areas
from .worker_env import addon_preferences, dependency_folder, job_device, worker_paths, worker_python

ENVIRONMENT_MODULE = os.path.basename(PACKAGE_DIR) + ".core.service.environment"
# What the worker needs (torch, scikit-image and NumPy) and what makes it fast on the CPU (Numba,
# libigl). CUDA builds of PyTorch bring Triton with them.
PACKAGES = ("torch>=2.4", "scikit-image>=0.22", "scipy>=1.11", "numba>=0.60", "libigl>=2.5")
# pip's output, as the stage it starts and the share of the work done by then.
STAGES = (
    ("Collecting", 0.05, "Finding packages"),
    ("Downloading", 0.25, "Downloading"),
    ("Installing collected packages", 0.8, "Installing"),
    ("Successfully installed", 1.0, "Installed"),
)
PROBE_TIMEOUT = 180.0  # first import of a CUDA build of torch can take a minute on a cold disk


class InstallState:
    """The one pip run, in Python memory (never saved, untouched by undo)."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.messages: queue.Queue = queue.Queue()
        self.progress = 0.0
        self.stage = ""
        self.last_line = ""
        self.result = ""  # the outcome of the last run, for the preferences
        self.succeeded = False
        self.lines: list[str] = []
        self.started = 0.0
        self.code: int | None = None  # pip's exit code, once its output has all been read

    @property
    def running(self) -> bool:
        return self.process is not None

    def read(self) -> bool:
        """Take in pip's output so far; True once pip has exited and all of it is read."""
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return self.code is not None
            if message.get("type") == "_exit":
                self.code = message["code"]
                continue
            line = message.get("message", "")
            self.lines = (self.lines + [line])[-200:]
            self.last_line = line
            for prefix, progress, stage in STAGES:
                if line.startswith(prefix) and progress >= self.progress:
                    self.progress, self.stage = progress, stage
            if self.stage == "Finding packages" and line.startswith("Collecting"):
                self.progress = min(0.24, self.progress + 0.01)  # one more package resolved


INSTALL = InstallState()


class ProbeState:
    """What core/service/environment.py found in the worker's Python, filled in by a thread."""

    def __init__(self):
        self.report: dict | None = None
        self.error = ""
        self.python = ""
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


PROBE = ProbeState()


class WarmupState:
    """The kernel warm-up after Install or Check: its progress and result, filled in by a thread."""

    def __init__(self):
        self.progress = 0.0
        self.result = ""
        self.succeeded = False
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


WARMUP = WarmupState()
# The longest a warm-up may take (a first CUDA fit compiles for well under a minute).
WARMUP_TIMEOUT = 600.0


def warmup_job(context):
    """The warm-up job for the preferences' worker (the warm worker, which keeps what it loaded)."""
    from ..core.service.tasks import WarmupTask

    job = new_job(context)
    job.add_task(WarmupTask(device=job_device(context)))
    return job


def warm_caches(job) -> bool:
    """Run the warm-up job (blocking; on a thread for the UI), keeping its progress and result in WARMUP."""
    WARMUP.progress, WARMUP.result, WARMUP.succeeded = 0.0, "Compiling kernels...", False
    deadline = time.monotonic() + WARMUP_TIMEOUT
    try:
        job.start()
        result, errors = None, []
        while not job.done and time.monotonic() < deadline:
            for message in job.wait_messages(timeout=0.25):
                if message["type"] == "progress":
                    WARMUP.progress = message.get("step", 0) / max(1, message.get("steps", 1))
                elif message["type"] == "result":
                    result = message
                elif message["type"] == "error":
                    errors.append(message.get("message", "unknown error"))
    except WorkerError as error:
        result, errors = None, [str(error)]
    finally:
        job.cleanup()
    if result is None:
        WARMUP.result = f"Kernels not compiled: {'; '.join(errors) or 'the warm-up took too long'}"
        return False
    devices = " and ".join(d.upper() for d in result["devices"])
    WARMUP.progress, WARMUP.succeeded = 1.0, True
    WARMUP.result = (f"Kernels ready on {devices} ({result['cache_files']} cached files, "
                     f"{sum(result['seconds'].values()):.0f} s)")
    return True


def start_warmup(context) -> None:
    """Warm the caches on a thread; the preferences redraw as it goes."""
    if WARMUP.running:
        return
    job = warmup_job(context)
    WARMUP.thread = threading.Thread(target=warm_caches, args=(job,), daemon=True)
    WARMUP.thread.start()
    if not bpy.app.background:
        bpy.app.timers.register(_redraw_while_warming, first_interval=0.5)


def _redraw_while_warming():
    redraw_areas("PREFERENCES")
    return 0.5 if WARMUP.running else None


def pip_command(python: str, target: str, packages, wheel_folder: str = "") -> list[str]:
    """The pip command line, as a list (never through a shell)."""
    command = [python, "-m", "pip", "install", "--target", target, "--upgrade", "--no-input",
               "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off"]
    if wheel_folder:
        command += ["--no-index", "--find-links", wheel_folder]
    return command + list(packages)


def start_install(python: str, target: str, packages=PACKAGES, wheel_folder: str = "") -> None:
    if INSTALL.running:
        raise WorkerError("dependencies are already being installed")
    if wheel_folder and not os.path.isdir(wheel_folder):
        raise WorkerError(f"the offline packages folder does not exist: {wheel_folder}")
    os.makedirs(target, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_NO_CACHE_DIR="0")
    env.pop("PYTHONPATH", None)  # pip must not see the add-on's or the dependency folder's packages
    try:
        process = subprocess.Popen(pip_command(python, target, packages, wheel_folder), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                   encoding="utf-8", errors="replace")
    except OSError as error:
        raise WorkerError(f"cannot run pip with {python!r}: {error}") from error
    INSTALL.__init__()
    INSTALL.process, INSTALL.started, INSTALL.stage = process, time.monotonic(), "Starting pip"
    threading.Thread(target=pump, args=(process, INSTALL.messages, lambda code: {"type": "_exit", "code": code}),
                     daemon=True).start()


def finish_install(cancelled: bool = False) -> bool:
    """Stop waiting for pip (terminating it when cancelled) and set the result text."""
    process = INSTALL.process
    if cancelled:
        stop(process, grace=2.0)
        INSTALL.result, INSTALL.succeeded = "Install cancelled: run Install Dependencies again to finish it", False
    else:
        process.wait()
        deadline = time.monotonic() + 5.0
        while not INSTALL.read() and time.monotonic() < deadline:
            time.sleep(0.05)  # the reader thread passes on the last lines
        code = process.returncode
        seconds = time.monotonic() - INSTALL.started
        if code == 0:
            installed = next((line for line in reversed(INSTALL.lines) if line.startswith("Successfully installed")),
                             "Requirements already satisfied")
            INSTALL.result, INSTALL.succeeded = f"{installed} ({seconds:.0f} s)", True
        else:
            errors = [line for line in INSTALL.lines if line.startswith("ERROR")] or INSTALL.lines[-3:]
            INSTALL.result = f"pip failed (exit code {code}): " + " ".join(errors)[:400]
            INSTALL.succeeded = False
    INSTALL.process = None
    PROBE.report = None  # what is installed has changed
    return INSTALL.succeeded


def probe(python: str, extra_paths) -> dict:
    """Run core/service/environment.py in `python` (blocking) and return its report."""
    folder = tempfile.mkdtemp(prefix="neural_field_probe_")
    try:
        with open(os.path.join(folder, "probe.log"), "wb") as log:
            process = spawn(python, ENVIRONMENT_MODULE, [], folder, extra_paths, log, stdin=subprocess.DEVNULL)
            try:
                out, _ = process.communicate(timeout=PROBE_TIMEOUT)
            except subprocess.TimeoutExpired:
                stop(process, grace=1.0)
                raise WorkerError(f"{python} did not answer within {PROBE_TIMEOUT:.0f} s") from None
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        tail = log_tail(os.path.join(folder, "probe.log"), lines=3)
        raise WorkerError(f"{python} could not run the check (exit code {process.returncode}): {tail or 'no output'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def start_probe(python: str, extra_paths) -> None:
    """Probe on a thread; the preferences redraw when it is done."""
    if PROBE.running:
        return

    def run():
        try:
            PROBE.report, PROBE.error = probe(python, extra_paths), ""
        except (WorkerError, OSError, ValueError) as error:
            PROBE.report, PROBE.error = None, str(error)

    PROBE.python, PROBE.report, PROBE.error = python, None, ""
    PROBE.thread = threading.Thread(target=run, daemon=True)
    PROBE.thread.start()
    if not bpy.app.background:
        bpy.app.timers.register(_redraw_when_probed, first_interval=0.5)


def _redraw_when_probed():
    if PROBE.running:
        return 0.5
    redraw_areas("PREFERENCES")
    return None


def found_text() -> str:
    from ..core.service.environment import summary

    if PROBE.running:
        return "Checking the training Python..."
    if PROBE.error:
        return f"Check failed: {PROBE.error}"
    if PROBE.report is None:
        return ""
    return summary(PROBE.report)


def draw_status(layout, context) -> None:
    """The Found line and, while pip runs, its progress; the last install's result."""
    python = worker_python(context)
    if PROBE.report is None and not PROBE.running and not PROBE.error or PROBE.python != python:
        start_probe(python, worker_paths())  # first look at the preferences, or another Python chosen
    text = found_text()
    missing = bool(PROBE.report and PROBE.report.get("missing")) or bool(PROBE.error)
    layout.label(text=f"Found: {text}", icon="ERROR" if missing else ("TIME" if PROBE.running else "CHECKMARK"))
    if INSTALL.running:
        layout.progress(factor=INSTALL.progress, type="BAR", text=f"{INSTALL.stage}: {INSTALL.last_line[:90]}")
    elif INSTALL.result:
        layout.label(text=INSTALL.result, icon="CHECKMARK" if INSTALL.succeeded else "ERROR")
    if WARMUP.running:
        layout.progress(factor=WARMUP.progress, type="BAR", text="Compiling kernels (once per machine)")
    elif WARMUP.result:
        layout.label(text=WARMUP.result, icon="CHECKMARK" if WARMUP.succeeded else "ERROR")


class NEURAL_FIELD_OT_install_dependencies(bpy.types.Operator):
    """Install PyTorch, scikit-image and the other packages the training worker needs into the
    add-on's dependency folder, with Blender's own Python"""

    bl_idname = "neural_field.install_dependencies"
    bl_label = "Install Dependencies"

    packages: StringProperty(name="Packages", default="", options={"HIDDEN", "SKIP_SAVE"},
                             description="Space-separated requirements to install instead of the standard set")

    _timer = None

    def _start(self, context) -> bool:
        prefs = addon_preferences(context)
        wheels = bpy.path.abspath(prefs.wheel_folder) if prefs and prefs.wheel_folder else ""
        packages = self.packages.split() or PACKAGES
        try:
            start_install(worker_python(context), dependency_folder(), packages, wheels)
        except WorkerError as error:
            self.report({"ERROR"}, str(error))
            return False
        return True

    def _report_result(self, context) -> set:
        if INSTALL.succeeded:
            self.report({"INFO"}, INSTALL.result)
            if not bpy.app.background:
                start_probe(worker_python(context), worker_paths())  # show what is there now
                start_warmup(context)
            elif not self.packages and warm_caches(warmup_job(context)):  # the standard set: compile once now
                self.report({"INFO"}, WARMUP.result)
            return {"FINISHED"}
        self.report({"ERROR"}, INSTALL.result)
        return {"CANCELLED"}

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        try:
            while not INSTALL.read():
                time.sleep(0.1)
        except BaseException:
            finish_install(cancelled=True)
            raise
        finish_install()
        return self._report_result(context)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._end(context)
            finish_install(cancelled=True)
            self.report({"WARNING"}, INSTALL.result)
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        done = INSTALL.read()
        context.workspace.status_text_set(
            f"Neural Field: installing dependencies - {INSTALL.stage} ({time.monotonic() - INSTALL.started:.0f} s, "
            "Esc to cancel)")
        redraw_areas("PREFERENCES")
        if not done:
            return {"PASS_THROUGH"}
        self._end(context)
        finish_install()
        return self._report_result(context)

    def cancel(self, context):
        self._end(context)
        if INSTALL.running:
            finish_install(cancelled=True)

    def _end(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        context.workspace.status_text_set(None)
        redraw_areas("PREFERENCES")


class NEURAL_FIELD_OT_check_dependencies(bpy.types.Operator):
    """Look again at what the training Python has (PyTorch, CUDA and the GPU) and compile the kernels a fit needs"""

    bl_idname = "neural_field.check_dependencies"
    bl_label = "Check"

    def execute(self, context):
        python = worker_python(context)
        if not bpy.app.background:
            PROBE.python = ""
            start_probe(python, worker_paths())
            start_warmup(context)  # a Python without PyTorch says so in the warm-up's result
            return {"FINISHED"}
        # From a script: check now and report what was found.
        try:
            PROBE.report, PROBE.error, PROBE.python = probe(python, worker_paths()), "", python
        except WorkerError as error:
            PROBE.report, PROBE.error = None, str(error)
            self.report({"ERROR"}, f"Check failed: {error}")
            return {"CANCELLED"}
        missing = PROBE.report.get("missing")
        self.report({"WARNING"} if missing else {"INFO"}, found_text())
        if not missing:
            warm_caches(warmup_job(context))
            self.report({"INFO"} if WARMUP.succeeded else {"WARNING"}, WARMUP.result)
        return {"FINISHED"}
