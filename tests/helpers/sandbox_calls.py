"""Calls for the sandbox tests, importable by the child process (it does not re-run the test
module): ones that return, stream, hang, crash, raise or allocate."""
from __future__ import annotations

import ctypes
import os
import signal
import time

import numpy as np

from pipeline.source.sandbox import Extend


def add(a, b):
    return a + b


def pid():
    return os.getpid()


def count(n, pause_s=0.0):
    for k in range(n):
        if pause_s:
            time.sleep(pause_s)
        yield k


def hang():
    time.sleep(3600)


def hang_after(n):
    for k in range(n):
        yield k
    time.sleep(3600)


def slow_with_extension(seconds):
    yield Extend(seconds)  # what a call does once it knows how much media it will read
    time.sleep(seconds * 0.5)
    yield "done"


def segfault():
    ctypes.string_at(0)  # reads address 0: SIGSEGV in native code


def die(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)


def fail(message):
    raise ValueError(message)


def allocate(mb):
    a = np.ones(mb * 1024 * 1024, np.uint8)
    return int(a.sum() // (1024 * 1024))
