"""Process memory of the server: fewer glibc malloc arenas, and no GPU compiler.

glibc gives each thread that meets contention on the heap an arena of its own (up to 8 per core),
and an arena keeps the pages it has once held. A Gradio server answers from a pool of worker
threads, each of which, in turn, runs the networks and frees their activations (hundreds of MB
for an occlusion batch), so every worker ends up holding its own copy of that peak. Limiting the
arenas makes the workers reuse the same freed pages: under ``benchmarks/load.py`` (16 clients)
the peak RSS falls from 2.2-2.4 GB to about 1.8 GB (docs/benchmarks.md). The setting
(``mallopt(M_ARENA_MAX)``) is what the ``MALLOC_ARENA_MAX`` environment variable sets, applied from
inside the process so that it holds wherever the app is started; it applies to arenas created
afterwards, so call it before the server starts its threads.

Triton: torch's CUDA wheels depend on it, and ``torch._dynamo`` (imported by torchvision, which
timm and pytorch-grad-cam import) loads it whenever it is installed, mapping its 70 MB LLVM
library into a server that never compiles a GPU kernel. :func:`without_triton` marks it absent
before those imports (torch then reports no Triton, as on a machine without it): about 0.1 GB
less RSS once the networks are loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8  # glibc's malloc.h
SERVER_ARENAS = 1  # one model worker runs at a time, so the arenas of others only hold pages


def limit_malloc_arenas(arenas: int = SERVER_ARENAS) -> bool:
    """Allow at most ``arenas`` malloc arenas in this process; False where the C library is not
    glibc (nothing to limit there)."""
    if arenas < 1:
        raise ValueError(f"at least one arena is needed, got {arenas}")
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def without_triton() -> None:
    """Keep Triton (a GPU kernel compiler) out of this process: ``import triton`` raises ImportError
    from now on. Call it before importing torch; a no-op where it is already loaded."""
    sys.modules.setdefault("triton", None)
