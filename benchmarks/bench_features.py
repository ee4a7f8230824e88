"""Feature-world speed: vectorized generation and the constructed network, each beside a naive
per-image NumPy loop in the same run.

Run:  .venv/bin/python benchmarks/bench_features.py [--n 20000] [--workers 2]

Generation includes the reference-matcher check (template occurrences and object search) in
both implementations; the naive generator pastes, checks and resamples one image at a time.
The naive network evaluates the B.3 network one image at a time with NumPy sliding windows.
Both implementations are checked to agree (labels of the naive check, predictions).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from sparsecnn.features import FeatureWorld, construct, preset


def naive_generate(world: FeatureWorld, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One image at a time: draw, paste, exact-match every window, search objects, resample."""
    rng = np.random.default_rng(seed)
    k = world.feature_size
    height, width = world.image_size
    out_h, out_w = world.window_domain
    delta = world.displacement[0]
    images, labels = [], []
    while len(images) < n:
        index = int(rng.integers(world.n_objects))
        obj = world.objects[index]
        low = world._tables.anchor_low[index]
        high = world._tables.anchor_high[index]
        anchor = (int(rng.integers(low[0], high[0] + 1)), int(rng.integers(low[1], high[1] + 1)))
        placed = []
        for child, (dy, dx) in obj:
            placed.append((child, anchor[0] + dy + int(rng.integers(-delta, delta + 1)),
                           anchor[1] + dx + int(rng.integers(-delta, delta + 1))))
        for _ in range(int(rng.integers(0, world.distractors + 1))):
            for _ in range(8):
                y, x = int(rng.integers(out_h)), int(rng.integers(out_w))
                if all(abs(y - py) >= k + 1 or abs(x - px) >= k + 1 for _, py, px in placed):
                    placed.append((int(rng.integers(world.n_features)), y, x))
                    break
        clean = np.zeros((height, width))
        for j, y, x in placed:
            clean[y:y + k, x:x + k] = world.templates[j]
        found = set()
        for y in range(out_h):
            for x in range(out_w):
                window = clean[y:y + k, x:x + k]
                for j in range(world.n_features):
                    if np.array_equal(window, world.templates[j]):
                        found.add((j, y, x))
        if found != set(placed):
            continue
        classes = set()
        for o, configuration in enumerate(world.objects):
            first_child, first_offset = configuration[0]
            for j, y, x in found:
                if j != first_child:
                    continue
                for uy in range(y - first_offset[0] - delta, y - first_offset[0] + delta + 1):
                    for ux in range(x - first_offset[1] - delta, x - first_offset[1] + delta + 1):
                        if all(any(c == jj and abs(yy - uy - oy) <= delta
                                   and abs(xx - ux - ox) <= delta for jj, yy, xx in found)
                               for c, (oy, ox) in configuration):
                            classes.add(int(world.object_classes[o]))
        if classes != {int(world.object_classes[index])}:
            continue
        noisy = np.clip(clean + rng.uniform(-world.noise, world.noise, clean.shape), 0, 1)
        images.append(noisy.astype(np.float32))
        labels.append(int(world.object_classes[index]))
    return np.stack(images), np.array(labels)


def naive_network(world: FeatureWorld, images: np.ndarray) -> np.ndarray:
    """The B.3 network one image at a time with NumPy (binary templates, two levels)."""
    k = world.feature_size
    kernels = (2 * world.templates - 1).reshape(world.n_features, -1)
    ones = world.templates.reshape(world.n_features, -1).sum(1)
    slack = k * k * world.noise
    low, high = ones - 1 + slack, ones - slack
    delta = world.displacement[0]
    predictions = []
    for image in images:
        windows = sliding_window_view(image.astype(np.float64), (k, k)).reshape(
            image.shape[0] - k + 1, image.shape[1] - k + 1, -1)
        scores = windows @ kernels.T
        h = (np.maximum(scores - low, 0) - np.maximum(scores - high, 0)) / (high - low)
        padded = np.pad(h, ((delta, delta), (delta, delta), (0, 0)))
        pooled = sliding_window_view(padded, (2 * delta + 1, 2 * delta + 1), axis=(0, 1)).max(
            axis=(-2, -1))
        logits = np.zeros(world.n_classes)
        for o, configuration in enumerate(world.objects):
            span_y = max(oy for _, (oy, _) in configuration)
            span_x = max(ox for _, (_, ox) in configuration)
            total = sum(pooled[oy:pooled.shape[0] - span_y + oy, ox:pooled.shape[1] - span_x + ox,
                               c] for c, (oy, ox) in configuration)
            logits[world.object_classes[o]] += np.maximum(total - (len(configuration) - 1),
                                                          0).max()
        predictions.append(int(logits.argmax()))
    return np.array(predictions)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images for the vectorized runs")
    parser.add_argument("--naive-n", type=int, default=100, help="images for the naive loops")
    parser.add_argument("--workers", type=int, default=2, help="generation threads")
    args = parser.parse_args()
    rows = []
    for size in (32, 64):
        world = preset("default", image_size=size)
        world.sample(BLOCK := 512, seed=99, workers=args.workers)  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        sample = world.sample(args.n, seed=1, workers=args.workers)
        fast = rate(len(sample), time.perf_counter() - start)
        per_cpu_second = rate(len(sample), time.process_time() - cpu)
        start = time.perf_counter()
        naive_images, naive_labels = naive_generate(world, args.naive_n, seed=1)
        slow = rate(len(naive_images), time.perf_counter() - start)
        present = world.reference_labels(np.round(naive_images))
        assert np.array_equal(present.argmax(1), naive_labels)
        rows.append((f"generate {size}x{size} (with reference check)", fast, slow,
                     per_cpu_second))

        network = construct(world, dtype=torch.float32)
        images = sample.images[:min(args.n, 8192)]
        with torch.no_grad():
            network(images[:BLOCK])
            start, cpu = time.perf_counter(), time.process_time()
            predictions = torch.cat([network(images[i:i + 1024]).argmax(1)
                                     for i in range(0, len(images), 1024)])
            fast_net = rate(len(images), time.perf_counter() - start)
            net_per_cpu_second = rate(len(images), time.process_time() - cpu)
        start = time.perf_counter()
        naive_predictions = naive_network(world, images[:args.naive_n, 0].numpy())
        slow_net = rate(args.naive_n, time.perf_counter() - start)
        assert np.array_equal(naive_predictions, predictions[:args.naive_n].numpy())
        assert torch.equal(predictions, sample.labels[:len(images)])
        rows.append((f"constructed network {size}x{size} (float32)", fast_net, slow_net,
                     net_per_cpu_second))
    print(f"torch threads: {torch.get_num_threads()}, generation workers: {args.workers}")
    print("img/s are wall-clock; 'per CPU-s' divides by the process CPU time (all threads), "
          "which is what a shared machine leaves comparable")
    print(f"{'task':46s} {'vectorized img/s':>17s} {'per CPU-s':>10s} {'naive img/s':>12s} "
          f"{'ratio':>7s}")
    for name, fast_rate, slow_rate, cpu_rate in rows:
        print(f"{name:46s} {fast_rate:17,.0f} {cpu_rate:10,.0f} {slow_rate:12,.1f} "
              f"{fast_rate / slow_rate:6.0f}x")


if __name__ == "__main__":
    main()
