"""Serving the networks' forward passes through OpenVINO, a CPU-native inference runtime.

Training, Grad-CAM and occlusion keep the torch networks (they need gradients or fold layers);
only inference-only forward passes are moved: the classifier's score/probability pass and the
lung segmenter's U-Net (also inside the lung-box framing). Nothing is downloaded: a torch module
is traced by ``openvino.convert_model`` on this machine and compiled for the CPU.

Interface
---------
``CompiledNet(module, input_shape, precision="f32")``
    One network compiled for the CPU with a dynamic batch dimension (static ``C, H, W``). It is an
    ``nn.Module`` used for inference only: ``net(x)`` maps a float ``(N, C, H, W)`` tensor to the
    module's output as a float32 tensor. A timm classifier is compiled together with its pooled
    penultimate features (one graph, two outputs), and then behaves like a timm model for the
    calls the library makes: ``net(x)`` gives the ``(N, 1)`` logits, ``net.run(x)`` gives
    ``(logits, pooled)`` in one call, ``net.forward_head(net.forward_features(x), pre_logits=True)``
    gives ``pooled`` (NB: ``forward_features`` returns the *pooled* features, not the feature
    maps) and ``net.get_classifier()`` is the torch head (``pooled -> logit``).
    ``net.precision`` is the precision actually used (``"bf16"`` falls back to ``"f32"`` on a CPU
    without bf16 support).

``accelerate(model, input_size, precision="f32", segmenter_precision=None)``
    A loaded classifier (a timm network, an :class:`~xray_xai.models.ensemble.Ensemble`, lung-box
    members in :class:`~xray_xai.models.framing.LungBoxFramed`) rebuilt from compiled parts with the
    same structure: an ``Ensemble`` of ``CompiledNet`` members, each lung-box member still wrapped in
    ``LungBoxFramed`` whose framer crops in numpy/torch as before but segments with the compiled
    U-Net (one framer shared by the lung-box members, as in the torch model). It therefore has the
    call signature and methods the ``Classifier`` uses (``model(x)``, ``member_logits``,
    ``forward_features``/``forward_head``, ``member_logits_from_features``, ``get_classifier``) and
    passes ``isinstance(model, Ensemble)``. It is for inference only: keep the torch model for the
    explaining network (Grad-CAM, occlusion).

``accelerate_segmenter(segmenter, precision="f32")``
    A :class:`~xray_xai.models.lungs.LungSegmenter` on the same card whose U-Net runs compiled.

``serve(model, card, segmenter=None)``
    What the ``Classifier`` should score with: ``accelerate(model, ...)`` (warmed up at batch 1)
    when the card's ``runtime`` section (or the ``XRAY_XAI_RUNTIME`` environment variable, e.g.
    ``openvino:bf16_lungs_f32`` or ``torch``) asks for OpenVINO and it can be used, else ``model``
    itself (with a warning when OpenVINO was asked for but cannot be used). Card section:
    ``{"engine": "openvino", "precision": "f32", "passing": ["f32"]}``: ``passing`` lists the
    serving precisions that passed ``benchmarks/runtime.py --accuracy``, and no other is ever
    served (f32 instead if it passed, else torch).

Serving precisions (``SERVING_PRECISIONS``), one name each in the card, ``XRAY_XAI_RUNTIME``,
``passing`` and the accuracy benchmark's rows (``ov_<name>``): ``f32`` and ``bf16`` compile every
network at that precision; ``bf16_lungs_f32`` compiles the classifier networks in bf16 and the lung
U-Net that frames the lung-box members in f32 (:func:`serving_precisions` splits a name). Where the
CPU has no bf16, each bf16 network runs in f32 (:func:`resolve_precision`).

``warm_cache(card_path)`` / ``python -m xray_xai.models.runtime [CARD]``
    Converts and compiles a checkpoint's networks, at the serving precision ``serve`` would use,
    into the cache ahead of the first start.

``accuracy_report(...)``
    The comparison of fp32 torch with each serving precision that decides which may be served
    (AUROC equal to 3 decimals, max |dP| <= 0.01 on the calibrated ensemble probability,
    identical decisions at the balanced threshold on >= 99.5% of films).

Integration into ``Classifier``: keep ``model`` (torch: the explainer and the maps come from it)
and score with ``serving = runtime.serve(model, card)``, set in ``__post_init__`` after the
explainer; ``probabilities`` and ``score`` call ``self.serving`` where they called ``self.model``.

On the shipped checkpoint (OpenVINO 2026.4.1) f32 matches fp32 torch to 4e-7 in P(pneumonia);
``bf16_lungs_f32`` keeps AUROC and every balanced decision and moves P by at most 0.0074, so it
passes too, while bf16 everywhere moves P by up to 0.016, over the 0.01 limit (its card:
``"passing": ["f32", "bf16_lungs_f32"]``). The card serves f32: on a CPU without AMX bf16 runs a
network only about twice as fast, and the occlusion map, the bulk of an analysis, runs through
torch either way. ``XRAY_XAI_RUNTIME=openvino:bf16_lungs_f32`` serves the combination.

Caches (cold start does not grow with use): the traced network is kept as OpenVINO IR under
``cache_dir()/ir`` keyed by its weights, architecture and the torch/OpenVINO versions, so a
restart skips tracing and converting each network (seconds each); the compiled blob is kept by
OpenVINO's own ``CACHE_DIR`` in ``cache_dir()`` (the CPU plugin's blob does not depend on the
precision hint: one per network). Default ``$XDG_CACHE_HOME/xray_xai/openvino`` (``~/.cache``
without it), overridden by ``XRAY_XAI_OV_CACHE``. The cache is never required: an unwritable
folder only disables caching, an entry missing any file is converted again, and one whose files
do not match the sha256 written with them, or that does not load, is removed (with a warning) and
the network converted again. Converting is the only step that calls OpenVINO's converter, which
sends usage telemetry (openvino-telemetry) unless opted out (``opt_in_out --opt_out``) or
``CI=true``; a warm cache skips it.

Threads: ``INFERENCE_NUM_THREADS`` is torch's thread count when a network is compiled, with the
``LATENCY`` performance hint (one stream). Each calling thread gets its own infer request, so the
compiled networks may be called from several threads at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .ensemble import Ensemble
from .framing import LungBoxFramed, LungBoxFramer
from .lungs import LungSegmenter

PRECISIONS = ("f32", "bf16")  # of one compiled network
SERVING_PRECISIONS = ("f32", "bf16", "bf16_lungs_f32")  # of a served classifier: see serving_precisions
CACHE_ENV = "XRAY_XAI_OV_CACHE"
RUNTIME_ENV = "XRAY_XAI_RUNTIME"  # "torch", "openvino" (f32) or "openvino:<one of SERVING_PRECISIONS>"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xray_xai" / "openvino"
IR_FORMAT = 2  # bump when the way networks are wrapped or converted changes
IR_SUFFIXES = (".bin", ".xml", ".sha256")  # the files of one cached network, in the order they are moved into place

_core = None
_core_lock = threading.Lock()


def available() -> bool:
    """Whether OpenVINO can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    """OpenVINO's version ("" when it is not installed)."""
    try:
        import openvino
    except ImportError:
        return ""
    return openvino.__version__.split("-")[0]


def core():
    """The process's one ``openvino.Core``."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
        return _core


def cache_dir() -> Path:
    """Where converted and compiled networks are cached (``XRAY_XAI_OV_CACHE`` or the default)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 on this CPU."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def serving_precisions(name: str) -> tuple[str, str]:
    """``(classifier networks, lung U-Net)`` precisions of a serving precision name, the one name
    a card's ``runtime``, ``XRAY_XAI_RUNTIME`` and the accuracy benchmark's rows (``"ov_" + name``)
    use: ``"bf16_lungs_f32"`` gives ``("bf16", "f32")``, a plain ``"f32"`` or ``"bf16"`` both the same."""
    if name not in SERVING_PRECISIONS:
        raise ValueError(f"unknown serving precision {name!r}; choose one of {', '.join(SERVING_PRECISIONS)}")
    networks, _, lungs = name.partition("_lungs_")
    return networks, lungs or networks


def resolve_precision(precision: str) -> str:
    """``precision`` if this CPU runs it, else ``"f32"`` (with a warning)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not supports_bf16():
        warnings.warn("This CPU has no bf16 support in OpenVINO: running in f32 instead.", RuntimeWarning, stacklevel=2)
        return "f32"
    return precision


def compile_config(precision: str, threads: int | None = None, cache: Path | None = None) -> dict[str, Any]:
    """OpenVINO CPU properties for one network (``precision`` already resolved)."""
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": precision,  # set even for f32: some CPUs default to bf16
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
    }
    if cache is not None:
        config["CACHE_DIR"] = str(cache)
    return config


class PooledHead(nn.Module):
    """A timm classifier returning ``(logits, pooled penultimate features)`` from one forward pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return self.net.get_classifier()(pooled), pooled


def _is_timm_classifier(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("forward_features", "forward_head", "get_classifier"))


def _fingerprint(module: nn.Module, input_shape: Sequence[int]) -> str:
    """Key of a converted network: its architecture, weights, input shape and the converter's versions."""
    digest = hashlib.sha256()
    digest.update(
        f"{IR_FORMAT}|{version()}|{torch.__version__}|{tuple(input_shape)}|{type(module).__qualname__}|{module!r}".encode()
    )
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _convert(module: nn.Module, input_shape: Sequence[int]):
    """The OpenVINO model of ``module`` with a dynamic batch dimension.

    Traced here without torch's trace check (which would run the network twice more) and then
    converted; the batch dimension is made dynamic afterwards (the tests check batches 1 and 5)."""
    import openvino

    example = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation notice
        traced = torch.jit.trace(module, example, check_trace=False)
        model = openvino.convert_model(traced, example_input=example)
    model.reshape([-1, *input_shape])
    return model


def _ir_path(module: nn.Module, input_shape: Sequence[int], cache: Path) -> Path:
    """Where the IR ``.xml`` of ``module`` is cached (its ``.bin`` and ``.sha256`` beside it)."""
    return cache / "ir" / f"{_fingerprint(module, input_shape)[:32]}.xml"


def ir_digest(xml: Path) -> str:
    """sha256 of a saved IR: of its ``.xml`` and ``.bin`` files' own sha256."""
    digest = hashlib.sha256()
    for path in (xml, xml.with_suffix(".bin")):
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def _ensure_ir(module: nn.Module, input_shape: Sequence[int], xml: Path) -> None:
    """Convert ``module`` into its cached IR (``xml`` from :func:`_ir_path`) unless every file is there.

    Written to a temporary folder with its digest and moved into place digest last, so a
    concurrent reader sees an entry only once it is complete."""
    import openvino

    if all(xml.with_suffix(suffix).is_file() for suffix in IR_SUFFIXES):
        return
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=xml.parent, prefix=".tmp-"))
    try:
        openvino.save_model(_convert(module, input_shape), str(tmp / "model.xml"), compress_to_fp16=False)
        (tmp / "model.sha256").write_text(ir_digest(tmp / "model.xml"))
        for suffix in IR_SUFFIXES:
            os.replace((tmp / "model").with_suffix(suffix), xml.with_suffix(suffix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(xml: Path) -> None:
    """Remove a cached IR (best effort: a folder that cannot be written keeps it)."""
    for suffix in IR_SUFFIXES:
        with contextlib.suppress(OSError):
            xml.with_suffix(suffix).unlink(missing_ok=True)


class CompiledNet(nn.Module):
    """A torch network compiled by OpenVINO for inference on the CPU (see the module docstring).

    ``module``: an eval-mode torch network (a timm classifier gets its pooled features as a second
    output); ``input_shape``: ``(C, H, W)``, the batch dimension is dynamic; ``precision``:
    ``"f32"`` or ``"bf16"`` (``"f32"`` where the CPU has no bf16); ``threads``: default torch's
    count; ``cache``: cache folder, default :func:`cache_dir` (``False``: no cache).
    """

    def __init__(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        precision: str = "f32",
        threads: int | None = None,
        cache: Path | str | bool | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.precision = resolve_precision(precision)
        self.threads = int(threads or torch.get_num_threads())
        self.pooled = _is_timm_classifier(module)
        self.head = module.get_classifier() if self.pooled else None  # torch head: pooled -> logits
        graph = PooledHead(module).eval() if self.pooled else module.eval()
        folder = None if cache is False else Path(cache) if cache not in (None, True) else cache_dir()
        if folder is not None and not _writable(folder):
            warnings.warn(
                f"OpenVINO cache folder {folder} is not writable: compiling without a cache.",
                RuntimeWarning,
                stacklevel=2,
            )
            folder = None
        self.cache = folder
        self._compiled = self._from_cache(graph, folder) if folder is not None else None
        if self._compiled is None:
            config = compile_config(self.precision, self.threads)
            self._compiled = core().compile_model(_convert(graph, self.input_shape), "CPU", config)
        self._outputs = len(self._compiled.outputs)
        self._local = threading.local()

    def _from_cache(self, graph: nn.Module, folder: Path):
        """``graph`` compiled from its IR in ``folder`` (converted and cached the first time), or
        None, with a warning, when the IR's files do not match their digest or do not compile
        (the entry is then removed, so the next start converts it again)."""
        xml = _ir_path(graph, self.input_shape, folder)
        try:
            _ensure_ir(graph, self.input_shape, xml)
            if ir_digest(xml) == xml.with_suffix(".sha256").read_text().strip():
                return core().compile_model(str(xml), "CPU", compile_config(self.precision, self.threads, folder))
            problem = "its files do not match their sha256"
        except (OSError, RuntimeError) as error:
            problem = (str(error).strip().splitlines() or [type(error).__name__])[-1][:200]
        warnings.warn(
            f"The cached OpenVINO network {xml.name} cannot be used ({problem}): converting it again.",
            RuntimeWarning,
            stacklevel=3,
        )
        _discard(xml)
        return None

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every output of the compiled graph for a ``(N, C, H, W)`` batch, as float32 tensors
        (``(logits, pooled)`` for a timm classifier)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected a (N, {', '.join(map(str, self.input_shape))}) batch, got {tuple(x.shape)}")
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        request = self._request()
        request.infer({0: array})
        return tuple(
            torch.from_numpy(np.array(request.get_output_tensor(i).data, dtype=np.float32))
            for i in range(self._outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The POOLED penultimate features (unlike timm's feature maps); ``forward_head`` accepts them."""
        self._need_pooled()
        return self.run(x)[1]

    def forward_head(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        self._need_pooled()
        return pooled if pre_logits else self.head(pooled)

    def get_classifier(self) -> nn.Module:
        self._need_pooled()
        return self.head

    def _need_pooled(self) -> None:
        if not self.pooled:
            raise TypeError("this compiled network is not a timm classifier: it has no pooled features")

    def train(self, mode: bool = True) -> CompiledNet:
        if mode:
            raise RuntimeError("a compiled network is for inference only")
        return super().train(False)

    def extra_repr(self) -> str:
        shape, precision = self.input_shape, self.precision
        return f"input_shape={shape}, precision={precision!r}, threads={self.threads}, pooled={self.pooled}"


def accelerate_segmenter(
    segmenter: LungSegmenter, precision: str = "f32", threads: int | None = None, cache: Path | str | bool | None = None
) -> LungSegmenter:
    """A lung segmenter on the same card whose U-Net runs compiled (the original is not changed)."""
    size = segmenter.card.input_size
    return LungSegmenter(CompiledNet(segmenter.model, (1, size, size), precision, threads, cache), segmenter.card)


def accelerate(
    model: nn.Module,
    input_size: int,
    precision: str = "f32",
    segmenter_precision: str | None = None,
    threads: int | None = None,
    cache: Path | str | bool | None = None,
    segmenter: LungSegmenter | None = None,
) -> nn.Module:
    """The classifier ``model`` rebuilt from compiled networks, with the same structure and calls
    (see the module docstring). ``segmenter_precision``: the lung U-Net's (default ``precision``);
    ``segmenter``: an already accelerated lung segmenter to frame with (e.g. the app's own, from
    :func:`accelerate_segmenter`), used only if its card has the framing segmenter's weights."""
    framers: dict[int, LungBoxFramer] = {}

    def compiled(member: nn.Module) -> nn.Module:
        if isinstance(member, LungBoxFramed):
            framer = member.framer
            if id(framer) not in framers:  # the lung-box members share one framer, as in the torch model
                if segmenter is not None and segmenter.card.sha256 == framer.segmenter.card.sha256:
                    lungs = segmenter
                else:
                    lungs = accelerate_segmenter(framer.segmenter, segmenter_precision or precision, threads, cache)
                framers[id(framer)] = LungBoxFramer(lungs, framer.mean, framer.std, framer.margin)
            return LungBoxFramed(compiled(member.net), framers[id(framer)])
        return CompiledNet(member, (1, input_size, input_size), precision, threads, cache)

    if isinstance(model, Ensemble):
        return Ensemble([compiled(member) for member in model.members]).eval()
    return compiled(model).eval()


def requested(card_runtime: dict | None) -> tuple[str, str]:
    """``(engine, serving precision)`` asked for by ``XRAY_XAI_RUNTIME`` if set, else by a card's ``runtime``."""
    spec = os.environ.get(RUNTIME_ENV, "").strip().lower()
    if spec:
        engine, _, precision = spec.partition(":")
        return engine, precision or "f32"
    card_runtime = card_runtime or {}
    return str(card_runtime.get("engine", "torch")).lower(), str(card_runtime.get("precision", "f32")).lower()


def served_precision(card_runtime: dict | None) -> str | None:
    """The serving precision OpenVINO is to compile for a card's ``runtime`` (see :func:`requested`),
    or None for torch. Its ``passing`` (the names that passed the accuracy check) vetoes any other
    name, even one asked for by the environment: f32 is served instead if it passed, else torch."""
    engine, precision = requested(card_runtime)
    if engine != "openvino":
        return None
    passing = (card_runtime or {}).get("passing")
    if passing is None or precision in passing:
        return precision
    fallback = "f32" if "f32" in passing else None
    warnings.warn(
        f"OpenVINO {precision} failed the model card's accuracy check: serving with "
        f"{'OpenVINO f32' if fallback else 'torch'}.",
        RuntimeWarning,
        stacklevel=3,
    )
    return fallback


def serve(model: nn.Module, card, segmenter: LungSegmenter | None = None) -> nn.Module:
    """The model a ``Classifier`` should score with (see the module docstring): compiled at the
    card's :func:`served_precision` when asked for and possible, else ``model`` unchanged.
    ``segmenter``: an accelerated lung segmenter to share (see :func:`accelerate`)."""
    if model is None:
        return model
    precision = served_precision(getattr(card, "runtime", None))
    if precision is None:
        return model
    if not available():
        warnings.warn(
            "The model card asks for OpenVINO, which is not installed: serving with torch.",
            RuntimeWarning,
            stacklevel=2,
        )
        return model
    try:
        networks, lungs = serving_precisions(precision)
        served = accelerate(model, card.input_size, networks, lungs, segmenter=segmenter)
        with torch.inference_mode():  # the first call of a compiled network prepares its kernels
            served(torch.zeros(1, 1, card.input_size, card.input_size))
        return served
    except Exception as error:  # a runtime that cannot compile must not take the app down
        warnings.warn(
            f"OpenVINO could not compile the classifier ({error}): serving with torch.", RuntimeWarning, stacklevel=2
        )
        return model


def describe(model: nn.Module) -> str:
    """The runtime serving ``model``, for a report: "OpenVINO 2026.4.1 f32", "OpenVINO 2026.4.1 bf16
    (lung U-Net f32)" when the framing U-Net runs at another precision, or "PyTorch 2.x fp32"."""
    networks = sorted({m.precision for m in model.modules() if isinstance(m, CompiledNet)})
    if not networks:
        return f"PyTorch {torch.__version__.split('+')[0]} fp32"
    lungs = served_segmenter(model)
    differs = lungs is not None and [lungs.model.precision] != networks
    return f"OpenVINO {version()} {'/'.join(networks)}" + (f" (lung U-Net {lungs.model.precision})" if differs else "")


def served_segmenter(model: nn.Module) -> LungSegmenter | None:
    """The compiled lung segmenter that frames the lung-box members of a served model, if any."""
    for member in model.modules():
        if isinstance(member, LungBoxFramed) and isinstance(member.segmenter.model, CompiledNet):
            return member.segmenter
    return None


def warm_cache(card_path: str | Path | None = None) -> tuple[str, float] | None:
    """Convert and compile a checkpoint's networks into the cache (e.g. while building an image, so
    the first start of the app reads them back instead of converting), at the serving precision
    :func:`serve` would use: ``(that name, seconds)``, or None when the card is served by torch.
    One precision is enough: the IR is keyed by the weights and the compiled blob does not depend
    on the precision hint, so every serving precision then starts from the cache."""
    import time

    from ..checkpoint import DEFAULT_CHECKPOINT
    from .factory import load_checkpoint

    model, card, _ = load_checkpoint(card_path or DEFAULT_CHECKPOINT)
    precision = served_precision(card.runtime)
    if precision is None:
        return None
    start = time.perf_counter()
    accelerate(model, card.input_size, *serving_precisions(precision))
    return precision, time.perf_counter() - start


if __name__ == "__main__":  # python -m xray_xai.models.runtime [CARD]: fill the cache for a checkpoint
    import sys

    warmed = warm_cache(sys.argv[1] if len(sys.argv) > 1 else None)
    if warmed is None:
        print(f"the card is served by torch ({RUNTIME_ENV}=openvino:<precision> to warm OpenVINO's cache)")
    else:
        print(f"OpenVINO {warmed[0]}: {warmed[1]:.1f} s -> {cache_dir()}")


# --- accuracy of a runtime against fp32 torch -------------------------------------------------

AUROC_DECIMALS = 3
MAX_ABS_DP = 0.01
MIN_SAME_DECISIONS = 0.995


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """How far calibrated ensemble probabilities of a runtime (``candidate``) are from fp32 torch
    (``reference``) on films with ``labels``, and whether that passes the serving criteria."""
    from sklearn.metrics import roc_auc_score

    reference, candidate, labels = (np.asarray(a, dtype=np.float64) for a in (reference, candidate, labels))
    both = len(np.unique(labels)) == 2
    auroc_ref = float(roc_auc_score(labels, reference)) if both else float("nan")
    auroc = float(roc_auc_score(labels, candidate)) if both else float("nan")
    max_dp = float(np.abs(candidate - reference).max()) if len(reference) else 0.0
    same = float(np.mean((candidate >= threshold) == (reference >= threshold))) if len(reference) else 1.0
    checks = {
        "auroc_3dp": (not both) or round(auroc, AUROC_DECIMALS) == round(auroc_ref, AUROC_DECIMALS),
        "max_dp": max_dp <= MAX_ABS_DP,
        "decisions": same >= MIN_SAME_DECISIONS,
    }
    return {
        "n": int(len(reference)),
        "auroc_torch": auroc_ref,
        "auroc": auroc,
        "max_abs_dp": max_dp,
        "mean_abs_dp": float(np.abs(candidate - reference).mean()) if len(reference) else 0.0,
        "same_decisions": same,
        "different_decisions": int(round((1 - same) * len(reference))),
        "checks": checks,
        "passes": all(checks.values()),
    }


@torch.inference_mode()
def ensemble_probabilities(model: nn.Module, batches, temperature: float) -> np.ndarray:
    """Calibrated ensemble P(pneumonia) of ``model`` over an iterable of input batches."""
    return np.concatenate(
        [torch.sigmoid(model(batch).reshape(-1).float() / temperature).double().numpy() for batch in batches]
    )


def accuracy_report(
    torch_model: nn.Module,
    runtimes: dict[str, nn.Module],
    splits: dict[str, tuple[Sequence[torch.Tensor], np.ndarray]],
    temperature: float,
    threshold: float,
) -> dict[str, Any]:
    """``{runtime: {split: compare(...)} | {"passes": bool}}`` for input batches and labels per split."""
    report: dict[str, Any] = {}
    references = {
        name: ensemble_probabilities(torch_model, batches, temperature) for name, (batches, _) in splits.items()
    }
    for runtime_name, model in runtimes.items():
        per_split = {
            name: compare(references[name], ensemble_probabilities(model, batches, temperature), labels, threshold)
            for name, (batches, labels) in splits.items()
        }
        report[runtime_name] = {**per_split, "passes": all(result["passes"] for result in per_split.values())}
    return report
