"""CPU latency of the shipped networks under torch and OpenVINO, and the accuracy of each serving precision.

    python benchmarks/runtime.py [--repeats 20] [--threads 2] [--batches 1 3 32]
    python benchmarks/runtime.py --accuracy --data ../shared/data/chest_xray

Default mode: median milliseconds per call, runtime x batch size, for
  - ``ensemble``: the classifier's scoring pass as ``Classifier.score`` makes it (pooled features of
    the 3 networks, the lung-box members' segmentation and crops included, member logits), on
    the films of examples/ (repeated up to the batch size; each repeat adds a tiny offset so the
    framer's one-batch cache never answers);
  - ``classifier``: one member network (resnet10t, 224 px), logits and pooled features;
  - ``lungs``: the lung segmenter's U-Net (128 px).
Runtimes: torch fp32 contiguous (weights and input batch; the library's own crops and segmenter
input stay channels_last), torch fp32 channels_last (as the app serves today), torch bf16
autocast channels_last, and OpenVINO at each precision (``ov_f32``, ``ov_bf16``; f32 where the CPU
has no bf16), the ensemble also at the serving precision ``ov_bf16_lungs_f32`` (classifier networks
bf16, lung U-Net f32). All run in one process with ``--threads`` torch/OpenVINO threads, interleaved
within each repeat so that background load hits them alike. Last stdout line: one JSON object,
ensemble figures at the top level (``torch_fp32_b1_ms`` = contiguous, ``torch_fp32_cl_b1_ms``,
``torch_bf16_cl_b1_ms``, ``ov_f32_b1_ms``, ``ov_bf16_b1_ms``, ``ov_bf16_lungs_f32_b1_ms`` ...;
``speedup_bN`` = torch fp32 channels_last / OpenVINO f32, ``speedup_bf16_bN`` and
``speedup_bf16_lungs_f32_bN`` the same over the other two) and every network under ``networks``.

``--accuracy``: fp32 torch against OpenVINO at each serving precision (rows ``ov_`` + the name a
card uses: ``runtime.SERVING_PRECISIONS``) on the checkpoint's validation films (its patients in
``DATA/train``) and ``DATA/shift_dev``: AUROC equal to 3 decimals, max |dP| <= 0.01 on the
calibrated ensemble P(pneumonia), identical decisions at the balanced threshold on >= 99.5% of
films. A precision that fails any criterion on any split is reported as failing and must not be
served. Last stdout line: one JSON object; ``passing`` lists the passing rows, ``card_passing``
the same as the card's ``runtime.passing`` names them (without ``ov_``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from xray_xai.checkpoint import DEFAULT_CHECKPOINT
from xray_xai.data import list_samples, validation_samples
from xray_xai.models import runtime
from xray_xai.models.classifier import Classifier
from xray_xai.models.ensemble import Ensemble, members
from xray_xai.models.features import penultimate_features
from xray_xai.models.framing import LungBoxFramed
from xray_xai.preprocess import read_dataset_image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROW = "ov_"  # a runtime row's name: ROW + a serving precision (runtime.SERVING_PRECISIONS)


def serving_runtimes(model: torch.nn.Module, size: int, threads: int) -> dict[str, torch.nn.Module]:
    """``{"ov_" + name: model compiled at that serving precision}`` for each name a card may serve."""
    return {
        ROW + name: runtime.accelerate(model, size, *runtime.serving_precisions(name), threads=threads)
        for name in runtime.SERVING_PRECISIONS
    }


def framed_segmenter(model: torch.nn.Module):
    """The lung segmenter of the first lung-box member (None without one)."""
    for member in members(model):
        if isinstance(member, LungBoxFramed):
            return member.segmenter
    return None


def contiguous_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (and of its framer's segmenter) with contiguous weights."""
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    seen = set()
    for member in members(model):
        if isinstance(member, LungBoxFramed) and id(member.framer) not in seen:
            seen.add(id(member.framer))
            member.segmenter.model.to(memory_format=torch.contiguous_format)
    return model


def scoring(model: torch.nn.Module):
    """``Classifier.score``'s network part: (member logits, pooled features) of a batch."""

    def score(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = penultimate_features(model, x)
        if isinstance(model, Ensemble):
            return model.member_logits_from_features(features), features
        return model.get_classifier()(features), features

    return score


def with_autocast(fn):
    def run(x: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(x)

    return run


def pooled_call(net: torch.nn.Module):
    """A torch classifier network's (logits, pooled features), like a compiled one's ``run``."""
    head = runtime.PooledHead(net).eval()
    return head


def example_films() -> list[np.ndarray]:
    return [read_dataset_image(path) for path in sorted(EXAMPLES.glob("*/*.jpeg"))]


def repeated(tensors: list[torch.Tensor], batch: int) -> torch.Tensor:
    return torch.cat([tensors[i % len(tensors)] for i in range(batch)])


def build_targets(classifier: Classifier, threads: int) -> tuple[dict, dict]:
    """``{target: {runtime: callable}}`` and ``{target: per-film input tensors}``."""
    model = classifier.model
    contiguous = contiguous_copy(model)
    segmenter = framed_segmenter(model)
    if segmenter is None:
        raise SystemExit("The checkpoint has no lung-box member: there is no lung segmenter to time.")
    net_cl = members(model)[0]
    net_cont = members(contiguous)[0]
    unet_cont = framed_segmenter(contiguous).model
    size = classifier.input_size
    seg = segmenter.card.input_size
    targets = {
        "classifier": {
            "torch_fp32": pooled_call(net_cont),
            "torch_fp32_cl": pooled_call(net_cl),
            "torch_bf16_cl": with_autocast(pooled_call(net_cl)),
            **{ROW + p: runtime.CompiledNet(net_cl, (1, size, size), p, threads).run for p in runtime.PRECISIONS},
        },
        "lungs": {
            "torch_fp32": unet_cont,
            "torch_fp32_cl": segmenter.model,
            "torch_bf16_cl": with_autocast(segmenter.model),
            **{ROW + p: runtime.CompiledNet(segmenter.model, (1, seg, seg), p, threads) for p in runtime.PRECISIONS},
        },
        "ensemble": {
            "torch_fp32": scoring(contiguous),
            "torch_fp32_cl": scoring(model),
            "torch_bf16_cl": with_autocast(scoring(model)),
            **{name: scoring(served) for name, served in serving_runtimes(model, size, threads).items()},
        },
    }
    films = example_films()
    inputs = {
        "ensemble": [classifier.prepare(f) for f in films],
        "classifier": [classifier.prepare(f) for f in films],
        "lungs": [segmenter.prepare(f) for f in films],
    }
    return targets, inputs


def layout(x: torch.Tensor, name: str) -> torch.Tensor:
    return x.contiguous() if name == "torch_fp32" else x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def time_targets(targets: dict, inputs: dict, batches: list[int], repeats: int, warmup: int = 2) -> dict:
    """``{target: {runtime: {batch: median ms}}}``."""
    times = {t: {r: {b: [] for b in batches} for r in runs} for t, runs in targets.items()}
    for target, runs in targets.items():
        for batch in batches:
            base = repeated(inputs[target], batch)
            for name, fn in runs.items():
                for _ in range(warmup):
                    fn(layout(base, name))
            for r in range(repeats):
                x = base + 1e-5 * (r + 1)  # a new batch each repeat: the framer caches only the last one
                for name, fn in runs.items():
                    xi = layout(x, name)
                    start = time.perf_counter()
                    fn(xi)
                    times[target][name][batch].append(1000 * (time.perf_counter() - start))
            done = ", ".join(f"{name} {statistics.median(times[target][name][batch]):.1f}" for name in runs)
            print(f"  {target} batch {batch} (median ms): {done}", flush=True)
    return {
        t: {r: {b: statistics.median(v) for b, v in per.items()} for r, per in runs.items()}
        for t, runs in times.items()
    }


def print_table(medians: dict, batches: list[int]) -> None:
    header = (
        f"{'network':<11} {'runtime':<17}"
        + "".join(f"{'b' + str(b) + ' ms':>11}" for b in batches)
        + "".join(f"{'b' + str(b) + ' ms/film':>14}" for b in batches if b > 1)
    )
    print(header)
    print("-" * len(header))
    for target, runs in medians.items():
        for name, per in runs.items():
            row = f"{target:<11} {name:<17}" + "".join(f"{per[b]:>11.1f}" for b in batches)
            row += "".join(f"{per[b] / b:>14.2f}" for b in batches if b > 1)
            print(row)


def benchmark(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    classifier = Classifier.load(args.checkpoint)
    print(
        f"OpenVINO {runtime.version()}, bf16 on this CPU: {runtime.supports_bf16()}, torch {torch.__version__}, "
        f"{args.threads} threads, median of {args.repeats}",
        flush=True,
    )
    targets, inputs = build_targets(classifier, args.threads)
    medians = time_targets(targets, inputs, args.batches, args.repeats, args.warmup)
    print("PROVISIONAL unless run on an idle machine")
    print_table(medians, args.batches)
    ensemble = medians["ensemble"]
    summary: dict = {f"{name}_b{b}_ms": round(per[b], 2) for name, per in ensemble.items() for b in args.batches}
    for b in args.batches:
        for name in runtime.SERVING_PRECISIONS:  # speedup_bN over OpenVINO f32, speedup_<name>_bN over the others
            key = f"speedup_b{b}" if name == "f32" else f"speedup_{name}_b{b}"
            summary[key] = round(ensemble["torch_fp32_cl"][b] / ensemble[ROW + name][b], 3)
    summary["networks"] = {
        t: {f"{name}_b{b}_ms": round(per[b], 2) for name, per in runs.items() for b in args.batches}
        for t, runs in medians.items()
        if t != "ensemble"
    }
    summary.update(
        openvino=runtime.version(), bf16_supported=runtime.supports_bf16(), threads=args.threads, repeats=args.repeats
    )
    print(json.dumps(summary))


# --- accuracy -----------------------------------------------------------------------------------


def film_batches(classifier: Classifier, paths: list[Path], batch_size: int) -> list[torch.Tensor]:
    batches = []
    for start in range(0, len(paths), batch_size):
        batches.append(
            torch.cat([classifier.prepare(read_dataset_image(p)) for p in paths[start : start + batch_size]])
        )
    return batches


def accuracy(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    classifier = Classifier.load(args.checkpoint)
    card = classifier.card
    data = Path(args.data)
    val = validation_samples(list_samples(data / "train"), args.checkpoint)
    shift = list_samples(data / "shift_dev")
    splits = {}
    for name, samples in (("val", val), ("shift_dev", shift)):
        print(f"loading {len(samples)} {name} films", flush=True)
        splits[name] = (
            film_batches(classifier, [s.path for s in samples], args.batch_size),
            np.array([s.label for s in samples]),
        )
    runtimes = serving_runtimes(classifier.model, classifier.input_size, args.threads)
    actual = {
        name: sorted({m.net.precision if isinstance(m, LungBoxFramed) else m.precision for m in members(model)})
        for name, model in runtimes.items()
    }
    threshold = float(card.operating_points["balanced"]["threshold"])
    print("scoring (torch fp32 first, then each runtime)", flush=True)
    report = runtime.accuracy_report(classifier.model, runtimes, splits, card.temperature, threshold)
    print(
        f"\nOpenVINO {runtime.version()}; bf16 on this CPU: {runtime.supports_bf16()}; "
        f"balanced threshold {threshold:.4f}; "
        f"temperature {card.temperature:.4f}; criteria: AUROC equal to {runtime.AUROC_DECIMALS} decimals, "
        f"max |dP| <= {runtime.MAX_ABS_DP}, same decisions >= {runtime.MIN_SAME_DECISIONS:.1%}"
    )
    header = (
        f"{'runtime':<19} {'split':<10} {'n':>5} {'AUROC torch':>12} {'AUROC rt':>9} {'max|dP|':>9} {'mean|dP|':>9} "
        f"{'same dec':>9} {'differ':>7}  result"
    )
    print(header)
    print("-" * len(header))
    for name, result in report.items():
        for split in splits:
            r = result[split]
            failed = [k for k, ok in r["checks"].items() if not ok]
            print(
                f"{name:<19} {split:<10} {r['n']:>5} {r['auroc_torch']:>12.4f} {r['auroc']:>9.4f} "
                f"{r['max_abs_dp']:>9.5f} "
                f"{r['mean_abs_dp']:>9.5f} {r['same_decisions']:>9.2%} {r['different_decisions']:>7}  "
                + ("pass" if r["passes"] else "FAIL: " + ", ".join(failed))
            )
    passing = [name for name, result in report.items() if result["passes"]]
    card_passing = [name.removeprefix(ROW) for name in passing]
    print("passing: " + (", ".join(passing) if passing else "none") + "; a failing precision must not be served")
    print(f'the card\'s runtime: "passing": {json.dumps(card_passing)}')
    print(
        json.dumps(
            {
                "openvino": runtime.version(),
                "bf16_supported": runtime.supports_bf16(),
                "threshold": threshold,
                "temperature": card.temperature,
                "precisions": actual,
                "runtimes": report,
                "passing": passing,
                "card_passing": card_passing,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per runtime and batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 3, 32])
    parser.add_argument(
        "--accuracy", action="store_true", help="compare each runtime precision with fp32 torch instead of timing"
    )
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/chest_xray"), help="chest_xray folder (--accuracy)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="films per forward pass (--accuracy)")
    args = parser.parse_args()
    accuracy(args) if args.accuracy else benchmark(args)


if __name__ == "__main__":
    main()
