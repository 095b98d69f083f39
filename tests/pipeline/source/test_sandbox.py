"""The per-source sandbox: calls run in a child process, return or stream as they would in
process, and a hang, a native crash or a kill becomes a clear failure instead of a hung or dead
worker."""
from __future__ import annotations

import os
import time

import pytest

from pipeline.source.clips import SeekMissed
from pipeline.source.sandbox import SandboxConfig, SandboxFailure, run, stream
from tests.helpers import sandbox_calls as calls

CFG = SandboxConfig()


def test_a_call_runs_in_another_process_and_returns_its_value():
    assert run(calls.add, (2, 3), 30, "add", CFG) == 5
    assert run(calls.pid, (), 30, "pid", CFG) != os.getpid()
    assert run(calls.pid, (), 30, "pid", SandboxConfig(enabled=False)) == os.getpid()


def test_items_stream_back_in_order():
    assert list(stream(calls.count, (5,), 30, "count", CFG)) == [0, 1, 2, 3, 4]


def test_a_hang_is_killed_at_the_limit_with_a_timeout_reason():
    t = time.monotonic()
    with pytest.raises(SandboxFailure) as e:
        run(calls.hang, (), 1.5, "the scene scan", CFG)
    assert 1.4 < time.monotonic() - t < 15
    assert e.value.retry and e.value.reason.startswith("timeout: the scene scan did not finish within 2 s")


def test_items_before_a_hang_are_kept():
    got = []
    with pytest.raises(SandboxFailure, match="^timeout"):
        for x in stream(calls.hang_after, (3,), 1.5, "plan", CFG):
            got.append(x)
    assert got == [0, 1, 2]


def test_the_limit_counts_only_the_wait_for_the_child():
    # the consumer sleeps 0.6 s per item (the in-process runner running stages); 5 items take
    # 3 s of wall time but the child itself needs almost none of the 1.5 s limit
    got = []
    for x in stream(calls.count, (5,), 1.5, "count", CFG):
        time.sleep(0.6)
        got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_extend_gives_a_call_the_time_it_announces():
    assert list(stream(calls.slow_with_extension, (2.0,), 0.5, "slow", CFG)) == ["done"]


@pytest.mark.parametrize("fn,signame", [(calls.segfault, "SIGSEGV"), (calls.die, "SIGKILL")])
def test_a_dead_child_is_a_crash_naming_the_signal(fn, signame):
    with pytest.raises(SandboxFailure) as e:
        run(fn, (), 30, "the clip cut", CFG)
    assert e.value.retry
    assert e.value.reason.startswith(f"crashed: the clip cut: the child process died of {signame}")


def test_exceptions_come_back_as_themselves():
    with pytest.raises(ValueError, match="bad file"):
        run(calls.fail, ("bad file",), 30, "x", CFG)
    with pytest.raises(SeekMissed):
        run(_seek_missed, (), 30, "x", CFG)


def _seek_missed():
    raise SeekMissed("landed late")


def test_a_memory_cap_fails_a_giant_allocation_inside_the_child():
    with pytest.raises(MemoryError):
        run(calls.allocate, (4096,), 60, "alloc", SandboxConfig(max_memory_mb=1024))
    assert run(calls.allocate, (64,), 60, "alloc", SandboxConfig(max_memory_mb=1024)) == 64
