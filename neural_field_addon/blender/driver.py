"""The job driver shared by the operators that run the worker: the one running job and its
progress (STATE), the modal/blocking operator base, the progress and failure texts, and the
poll that allows one job at a time.

From the UI (invoke) an operator is modal: a timer drains the worker's messages, progress shows
in the status bar and the panel, ESC or the panel's Cancel stops the worker. From scripts and
`blender -b` (execute) the same job runs blocking and the operator returns FINISHED or CANCELLED.
Either way the result is applied to the scene only once the worker has succeeded, so a failed or
cancelled job leaves the scene untouched.
"""

from __future__ import annotations

import os
import time

import bpy

from . import jobs, storage
from .jobs import WorkerError, WorkerJob
from .redraw import redraw_areas
from .worker_env import job_options, warm_settings, worker_environment, worker_paths, worker_python

PHASE_LABELS = {
    "groundtruth": "Computing ground truth",
    "train": "Training",
    "reconstruct": "Fitting the code",
    "extract": "Extracting surface",
    "evaluate": "Measuring fidelity",
    "bake": "Baking the texture",
}


def prewarm(context=None) -> None:
    """Start the warm worker in the background, if the preferences keep one and it is not running
    (the panel is drawn, the add-on enabled)."""
    settings = warm_settings(context)
    if settings is not None:
        jobs.prewarm(worker_python(context), worker_paths(), **settings, environment=worker_environment())


def new_job(context) -> WorkerJob:
    """A job for the worker the preferences describe: its Python and paths, the job options, the
    warm worker's settings and the kernel caches."""
    return WorkerJob(python=worker_python(context), extra_paths=worker_paths(), options=job_options(context),
                     warm=warm_settings(context), environment=worker_environment())


class InputError(Exception):
    """Bad input found before any job starts; the message is reported as it is."""


def make_task(task_class, what: str, **fields):
    """A task of core/service/tasks.py; what it refuses (a ValueError: an unknown choice, an
    occupancy field with a level offset, ...) is bad input, reported as `what: problem` before
    any job starts."""
    try:
        return task_class(**fields)
    except ValueError as error:
        raise InputError(f"{what}: {error}") from error


class JobState:
    """The one running job, in Python memory: never saved in the .blend and not touched by undo,
    so a crash, a save during a fit or Ctrl+Z cannot leave a stale 'running' flag behind."""

    def __init__(self):
        self.job: WorkerJob | None = None
        self.progress = 0.0
        self.status = ""
        self.cancel_requested = False
        # The training losses of the last job, per task: [(step, loss)], kept after it ends for
        # the loss-curve picture.
        self.losses: dict[int, list] = {}
        self.total_steps = 0
        self.curve_path = ""
        self._curve_drawn = 0.0

    @property
    def running(self) -> bool:
        return self.job is not None

    def begin(self, job: WorkerJob) -> None:
        self.job, self.progress, self.status, self.cancel_requested = job, 0.0, "Starting worker", False
        self.losses, self.total_steps, self._curve_drawn = {}, 0, 0.0

    def end(self) -> None:
        if self.job is not None:
            self.job.cleanup()
            self.draw_curve(force=True)
        self.job, self.progress, self.status, self.cancel_requested = None, 0.0, "", False

    def add_loss(self, message: dict) -> None:
        if "loss" not in message or message.get("phase") not in ("train", "reconstruct"):
            return
        self.losses.setdefault(message.get("task") or 0, []).append((message.get("step", 0), message["loss"]))
        self.total_steps = max(self.total_steps, message.get("steps", 0))
        self.draw_curve()

    def draw_curve(self, force: bool = False) -> None:
        """Redraw the loss-curve PNG, at most once a second while training."""
        if not self.losses or (not force and time.monotonic() - self._curve_drawn < 1.0):
            return
        from ..core.io.images import write_png
        from ..core.io.plot import loss_curve

        self._curve_drawn = time.monotonic()
        path = os.path.join(storage.user_folder("progress"), "loss_curve.png")
        try:
            write_png(path, loss_curve([self.losses[task] for task in sorted(self.losses)], self.total_steps))
        except OSError as error:
            print(f"Neural Field: could not write the loss curve: {error}")
            return
        self.curve_path = path

    @property
    def last_loss(self) -> float | None:
        latest = [curve[-1][1] for curve in self.losses.values() if curve]
        return latest[-1] if latest else None


STATE = JobState()


def idle(operator_class) -> bool:
    """Poll of the operators that start a job: one job at a time."""
    if STATE.running:
        operator_class.poll_message_set("A Neural Field job is running")
        return False
    return True


def progress_text(message: dict, task_count: int) -> tuple[float, str]:
    """A progress message as the job's done fraction and the status line."""
    task = message.get("task") or 0
    phase = message.get("phase", "")
    label = PHASE_LABELS.get(phase, phase)
    fraction = 0.0
    if phase in ("train", "reconstruct"):
        step, steps = message.get("step", 0), max(1, message.get("steps", 1))
        fraction = step / steps
        label += (
            f" {step}/{steps}, loss {message.get('loss', 0.0):.2e}, "
            f"{message.get('elapsed', 0.0):.0f} s elapsed, {message.get('remaining', 0.0):.0f} s left"
        )
    elif phase == "extract" and message.get("steps", 0) > 1:
        fraction = message.get("step", 0) / message["steps"]
        label += f" {100 * fraction:.0f}%"
    elif phase in ("extract", "evaluate"):
        fraction = 1.0
    if task_count > 1:
        label = f"[{task + 1}/{task_count}] {label}"
    return (task + fraction) / max(1, task_count), label


def failure_text(errors, names) -> str:
    """The worker's error messages, each after the name of the task it is about (`names[task]`)."""
    parts = []
    for error in errors:
        task = error.get("task")
        where = f"{names[task]}: " if task is not None and task < len(names) else ""
        parts.append(where + error.get("message", "unknown error"))
    return "; ".join(parts)


class WorkerOperator:
    """Shared modal/blocking driver of an operator that runs a worker job. Subclasses (with
    bpy.types.Operator) implement fill_job() and apply()."""

    _timer = None
    _workspace = None

    # --- to implement -------------------------------------------------------------------
    def fill_job(self, context, job: WorkerJob) -> None:
        """Check the input (raise InputError), add the job's tasks and input files, and keep a
        copy of the settings that apply() will record (they may change while the job runs)."""
        raise NotImplementedError

    def apply(self, context, job: WorkerJob, results: dict, errors: list) -> set:
        """Turn the worker's results ({task: result message}) into the scene's objects; report
        the errors. Returns the operator's result."""
        raise NotImplementedError

    # --- driving ------------------------------------------------------------------------
    def _start(self, context) -> bool:
        if STATE.running:
            self.report({"ERROR"}, "A Neural Field job is already running; cancel it or wait")
            return False
        job = new_job(context)
        try:
            self.fill_job(context, job)
            job.start()
        except (InputError, WorkerError) as error:
            job.cleanup()
            self.report({"ERROR"}, str(error))
            return False
        except Exception as error:  # noqa: BLE001 - never leave a traceback and a job folder behind
            job.cleanup()
            self.report({"ERROR"}, f"Neural Field could not start: {type(error).__name__}: {error}")
            return False
        STATE.begin(job)
        self._results, self._errors = {}, []
        return True

    def _handle(self, messages) -> None:
        for message in messages:
            kind = message.get("type")
            if kind == "progress":
                STATE.progress, STATE.status = progress_text(message, len(STATE.job.tasks))
                STATE.add_loss(message)
            elif kind == "result":
                self._results[message["task"]] = message
            elif kind == "error":
                self._errors.append(message)
            elif kind == "warning":
                self.report({"WARNING"}, message.get("message", ""))

    def _finish(self, context) -> set:
        job = STATE.job
        try:
            return self.apply(context, job, self._results, self._errors)
        finally:
            STATE.end()

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        last_print, last_status = 0.0, ""
        try:
            while not STATE.job.done:
                self._handle(STATE.job.wait_messages(timeout=0.25))
                if STATE.cancel_requested:  # neural_field.cancel from another thread or a timer
                    STATE.end()
                    self.report({"WARNING"}, "Neural Field job cancelled; the scene is unchanged")
                    return {"CANCELLED"}
                if STATE.status != last_status and time.monotonic() - last_print > 2.0:
                    print(f"Neural Field: {STATE.status}", flush=True)
                    last_print, last_status = time.monotonic(), STATE.status
        except BaseException:
            # Interrupted (Ctrl+C in a script): stop the worker and leave the scene as it was.
            STATE.end()
            raise
        return self._finish(context)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        self._workspace = context.workspace
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        try:
            if (event.type == "ESC" and event.value == "PRESS") or STATE.cancel_requested:
                self.cancel(context)
                self.report({"WARNING"}, "Neural Field job cancelled; the scene is unchanged")
                return {"CANCELLED"}
            if event.type == "TIMER":
                self._handle(STATE.job.poll())
                if self._workspace is not None:
                    self._workspace.status_text_set(f"Neural Field: {STATE.status}  (Esc to cancel)")
                redraw_areas("VIEW_3D")
                if STATE.job.done:
                    self._stop_modal(context)
                    return self._finish(context)
            return {"PASS_THROUGH"}
        except Exception as error:  # noqa: BLE001 - a modal handler must never stay half-alive
            self.cancel(context)
            self.report({"ERROR"}, f"Neural Field job failed: {type(error).__name__}: {error}")
            return {"CANCELLED"}

    def cancel(self, context):
        """Called by Blender when it drops the modal operator (new file, quit), and on Esc."""
        self._stop_modal(context)
        STATE.end()

    def _stop_modal(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if self._workspace is not None:
            self._workspace.status_text_set(None)
            self._workspace = None
        redraw_areas("VIEW_3D")
