"""Latency of one similar-case query against the committed index (no forward pass: the pipeline
reuses the prediction's features), and of decoding the neighbours' thumbnails for the gallery.

    python benchmarks/similar.py [--queries 500]

Queries are random feature vectors at the index films' scale (mean + scale * noise): the
search costs the same for any vector of that width. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from xray_xai.models.similar import DEFAULT_INDEX, K, SimilarIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--index", default=str(DEFAULT_INDEX))
    args = parser.parse_args()
    start = time.perf_counter()
    index = SimilarIndex.load(args.index)
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    features = index.space.mean + index.space.scale * rng.standard_normal(
        (args.queries, index.space.mean.shape[0])
    ).astype(np.float32)
    index.search(features[0])  # warm-up
    search, thumbs = [], []
    for query in features:
        start = time.perf_counter()
        cases = index.search(query, K)
        search.append(time.perf_counter() - start)
        start = time.perf_counter()
        for case in cases:
            index.thumbnail(case.id)
        thumbs.append(time.perf_counter() - start)
    ms = lambda xs, q: round(1000 * float(np.percentile(xs, q)), 3)  # noqa: E731
    print(
        f"{len(index)} films x {index.card.dims} axes: search p50 {ms(search, 50)} ms (p95 {ms(search, 95)} ms); "
        f"{K} thumbnails p50 {ms(thumbs, 50)} ms; index load {load_s:.2f} s"
    )
    print(
        json.dumps(
            {
                "films": len(index),
                "dims": index.card.dims,
                "k": K,
                "queries": args.queries,
                "search_p50_ms": ms(search, 50),
                "search_p95_ms": ms(search, 95),
                "thumbnails_p50_ms": ms(thumbs, 50),
                "load_s": round(load_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
