"""The server's malloc arena limit: threads that allocate at once share the arenas allowed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from xray_xai.memory import limit_malloc_arenas

# Eight threads allocate and free many small blocks at once; glibc's malloc_stats() then prints
# one "Arena N:" block per arena to stderr.
SCRIPT = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys, threading
    from xray_xai.memory import limit_malloc_arenas
    if sys.argv[1] == "limit":
        assert limit_malloc_arenas(1)
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    start = threading.Barrier(8)
    def work():
        start.wait()
        held = [libc.malloc(4096) for _ in range(20000)]
        for block in held:
            libc.free(block)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    libc.malloc_stats()
    """
)


def arenas_used(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_threads_share_the_one_arena_allowed():
    assert arenas_used("none") > 1  # without the limit, contention gives threads arenas of their own
    assert arenas_used("limit") == 1


def test_at_least_one_arena():
    with pytest.raises(ValueError, match="at least one arena"):
        limit_malloc_arenas(0)
