"""The server's memory settings: threads that allocate at once share the malloc arenas allowed,
and the networks load and explain without Triton."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.tiny import make_tiny_checkpoint, synthetic_radiograph
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


NO_TRITON = textwrap.dedent(
    """
    import sys
    from xray_xai.memory import without_triton
    without_triton()
    import torch._dynamo, timm, pytorch_grad_cam  # each imports torch._dynamo, which looks for Triton
    from torch.utils._triton import has_triton_package
    from xray_xai.models.classifier import Classifier
    from xray_xai.pipeline import Pipeline
    assert not has_triton_package() and sys.modules["triton"] is None
    result = Pipeline(Classifier.load(sys.argv[1])).analyze(sys.argv[2])
    print(result.analysis.prediction.label, sorted(result.maps))
    """
)


@pytest.mark.slow
def test_the_pipeline_loads_and_explains_without_triton(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path, size=64)  # room for the fast preset's 48 px window
    film = tmp_path / "film.png"
    Image.fromarray(synthetic_radiograph(np.random.default_rng(0), 96, 96, 1)).save(film)
    done = subprocess.run([sys.executable, "-c", NO_TRITON, str(checkpoint), str(film)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] in ("NORMAL", "PNEUMONIA") and "'gradcam'" in done.stdout
