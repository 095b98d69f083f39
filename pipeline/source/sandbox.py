"""Per-source media work in a child process, with a time limit.

FFmpeg decodes whatever a crawl holds, in native code: a file can make it loop, block on a read
that never returns (a stalled network mount or object store) or crash the process, and the
kernel's OOM killer takes the process holding the most memory, the one decoding. Run in the
worker itself, any of these would hang or kill a Ray worker and with it the task of every source
it serves. So each media-touching call (hash and probe, scene scan and planning, the clip cut)
runs in a child process, and its parent only waits: a call past its time limit is killed and
becomes ``timeout: ...``, a child that dies becomes ``crashed: ...``, and the source gets an error
row while the job goes on. Both are marked to be retried by a rerun (the cause may be the machine,
not the file).

Children come from a ``multiprocessing`` forkserver: forking Ray's multithreaded worker itself
is unsafe, and spawning a fresh interpreter per call costs a second of imports. The server is
started once per worker process with the media libraries imported, and each call forks a
child from it in a few milliseconds. A child dies with the server, and the server exits when
its worker does, so no orphan keeps decoding after a killed worker.
"""
from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
import traceback
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from typing import Any, Callable, Iterator, Optional

from pydantic import Field

from schemas.base import Strict

log = logging.getLogger(__name__)


class SandboxConfig(Strict):
    # Off runs every call in the worker itself (debugging with pdb, profiling); nothing then
    # stops a hung decode or survives a crashed one.
    enabled: bool = True
    # Limits are for hangs, not for slowness: generous enough that no healthy file on a busy
    # machine reaches them. The fixed part covers a child's start, opening a container on a
    # remote store, probing, and a store's first-byte latency.
    base_s: float = Field(60.0, gt=0)
    # Seconds allowed per second of the media a call decodes (the scene scan and audio decode
    # of a whole source, or the decode and encode of a segment's clips). Decoding 1080p runs at
    # several times real time on one core and the cut encodes at most 1280 px, so 4 s per second
    # is about ten times a healthy call on a shared core.
    per_media_s: float = Field(4.0, gt=0)
    # Hashing reads the whole file: allowed to take as long as reading at this rate (MB/s).
    # Object stores and network disks give tens to hundreds; 2 only fails a stalled read.
    min_read_mb_s: float = Field(2.0, gt=0)
    # Address-space cap of a child in MB (RLIMIT_AS); null leaves it to the machine. A file
    # that declares giant frames then fails its allocation inside the child (an error row)
    # instead of drawing the OOM killer onto the whole node. Address space counts reservations,
    # not use (decoder threads reserve arenas and stacks), so keep it well above real needs.
    max_memory_mb: Optional[int] = Field(None, ge=256)


class Extend:
    """Yielded by a streamed call to give itself more time: ``seconds`` more than its limit."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)


class SandboxFailure(RuntimeError):
    """A call that did not finish: ``reason`` is the ledger text; ``retry`` marks causes a rerun
    may not meet again (a time limit, a dead child)."""

    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


# Imported by the forkserver before it forks any child, so a call starts with them loaded.
_PRELOAD = ["numpy", "av", "scipy.fft", "scenedetect", "scenedetect.detectors", "scenedetect.backends.pyav",
            "pipeline.source.split"]
_lock = threading.Lock()
_ctx = None


def _context():
    global _ctx
    with _lock:
        if _ctx is None:
            import multiprocessing as mp

            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _ctx = ctx
        return _ctx


class _Popen(popen_forkserver.Popen):
    """A forkserver launch that does not re-run the parent's main module in the child.

    multiprocessing re-executes ``__main__`` in every child so that objects defined there can be
    unpickled. Here the parent is a Ray worker (whose main imports all of Ray), a CLI or a test
    runner, and everything a child runs lives in importable modules: re-running the main would
    cost each call a second and run whatever a host script does at import. This is
    ``popen_forkserver.Popen._launch`` with the two main-module entries left out."""

    def _launch(self, process_obj):
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_name", None)
        prep_data.pop("init_main_from_path", None)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _Process(context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj):
        return _Popen(process_obj)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent (the forkserver) exits."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent was already gone before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _child(conn, fn: Callable, args: tuple, stream: bool, max_memory_mb: Optional[int]) -> None:
    _die_with_parent()
    if max_memory_mb:
        import resource

        limit = int(max_memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        out = fn(*args)
        if stream:
            for x in out:
                conn.send(("item", x))
        else:
            conn.send(("item", out))
        conn.send(("done", None))
    except BaseException as e:  # the parent re-raises it, so a call fails as it would in-process
        tb = traceback.format_exc()
        try:
            conn.send(("raise", e, tb))
        except Exception:  # an exception that does not pickle goes back as text
            try:
                conn.send(("raise", RuntimeError(f"{type(e).__name__}: {e}"), tb))
            except Exception:
                pass
    finally:
        conn.close()


def run(fn: Callable, args: tuple, limit_s: float, what: str, cfg: SandboxConfig) -> Any:
    """``fn(*args)`` in a child; raises :class:`SandboxFailure` when it does not return."""
    out = list(stream(fn, args, limit_s, what, cfg, _single=True))
    if not out:  # not reached: a child that finishes has sent its result
        raise SandboxFailure(f"crashed: {what}: no result came back", retry=True)
    return out[0]


def stream(fn: Callable, args: tuple, limit_s: float, what: str, cfg: SandboxConfig,
           _single: bool = False) -> Iterator[Any]:
    """The items of the generator ``fn(*args)``, produced in a child and yielded here as they
    come. The limit counts the time spent waiting for the child only, so a consumer that takes
    its time between items (the in-process runner runs every stage on each) does not use it up.
    After the items received, raises :class:`SandboxFailure` if the child did not finish, or
    what ``fn`` raised. An :class:`Extend` item is not yielded: it adds its seconds to the limit
    (the child learnt how much media the call will read)."""
    if not cfg.enabled:
        if _single:
            yield fn(*args)
        else:
            yield from (x for x in fn(*args) if not isinstance(x, Extend))
        return
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = _Process(target=_child, args=(send, fn, args, not _single, cfg.max_memory_mb), daemon=True)
    proc.start()
    send.close()
    waited = 0.0
    try:
        while True:
            t0 = time.monotonic()
            ready = recv.poll(max(0.0, limit_s - waited))
            waited += time.monotonic() - t0
            if not ready:
                _kill(proc)
                raise SandboxFailure(f"timeout: {what} did not finish within {limit_s:.0f} s (ingest.sandbox limits); "
                                     "the child process was killed", retry=True)
            try:
                msg = recv.recv()
            except (EOFError, OSError):
                proc.join(5)
                raise SandboxFailure(f"crashed: {what}: {_death(proc.exitcode)}", retry=True) from None
            if msg[0] == "item":
                if isinstance(msg[1], Extend):
                    limit_s += msg[1].seconds
                    continue
                yield msg[1]
            elif msg[0] == "done":
                return
            else:
                log.debug("%s raised in its child:\n%s", what, msg[2])
                raise msg[1]
    finally:
        recv.close()
        if proc.is_alive():
            _kill(proc)
        else:
            proc.join(5)


def _kill(proc) -> None:
    try:
        proc.kill()
    except (OSError, AttributeError):
        pass
    proc.join(10)


def _death(code: Optional[int]) -> str:
    if code is None:
        return "the child process stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = " (killed: out of memory, or by an operator)" if -code == signal.SIGKILL else ""
        return f"the child process died of {name}{why}"
    return f"the child process exited with status {code} before returning"
