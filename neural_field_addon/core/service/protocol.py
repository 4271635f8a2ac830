"""The JSON-lines stream the worker and the preview server speak on stdout: one object per line,
with a "type". Nothing else may reach that stream, so the channel keeps the real stdout for
itself and sends everything else that prints (libraries, warnings) to stderr."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

# How often a long-lived process checks that the process which started it is still there.
PARENT_POLL_SECONDS = 1.0


class Channel:
    """The protocol stream: the real stdout, kept away from everything else that prints."""

    def __init__(self):
        self._stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout = sys.stderr

    def send(self, kind: str, **payload) -> None:
        self._stream.write(json.dumps({"type": kind, **payload}) + "\n")
        self._stream.flush()


def exit_with_parent() -> None:
    """Exit when the process that started this one is gone (its parent's pid changes), so a
    long-lived worker never outlives Blender, even one that crashed: the pipe alone may stay open
    (a grandchild holding it)."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def read_requests(stream):
    """The JSON objects of a request stream (stdin), one a line; a line that is not one comes as
    {"type": "invalid", "line": ...}, for the reader to refuse. Ends when the stream closes."""
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        yield request if isinstance(request, dict) else {"type": "invalid", "line": line[:200]}
