"""Images/s of the Fashion-MNIST study's models: one training step and evaluation under PGD.

Run::

    python benchmarks/bench_throughput.py [--quick] [--batches 5] [--pgd-steps 20]

Each model is built by :func:`sparsecnn.training.build_model` exactly as a training run builds
it (``TrainingConfig`` defaults: two hidden 3x3 layers of 32 and 64 channels, strides 1 and
2, padding 1, a linear head, float32) on 1x28x28 inputs (Fashion-MNIST's geometry), batch
128, 10 classes:

* ``cnn``: plain convolutions + ReLU (``n_iter = 0``);
* ``sparse`` ISTA ``k = 2`` and ``k = 4``: layered inference, k ISTA steps per layer;
* ``sparse`` LCA ``k = 4``;
* ``ml_ista`` ``T = 3``: three unfoldings of the joint multi-layer ISTA.

Training: images/s of one AdamW step (forward, cross-entropy, backward, update) on a seeded
random batch in ``[0, 1]`` (the cost does not depend on the pixel values), best of
``--batches`` steps after one untimed step.  Evaluation under attack: images/s of
:func:`sparsecnn.robustness.attacks.pgd` (L-inf, ``eps = 0.1``, ``--pgd-steps`` steps, each a
forward and backward to the input) followed by the forward pass that classifies the attacked
batch, best of ``--batches // 2 + 1`` batches after one untimed batch.  Threads: ``--threads``
torch threads; ``OMP_WAIT_POLICY`` as inherited (printed).  The last column divides by the
plain CNN's rate: a study's budget scales with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from sparsecnn.robustness.attacks import pgd
from sparsecnn.training import TrainingConfig, build_model

MODELS = (("cnn k=0", {"model": "cnn"}),
          ("sparse ISTA k=2", {"model": "sparse", "n_iter": 2, "method": "ista"}),
          ("sparse ISTA k=4", {"model": "sparse", "n_iter": 4, "method": "ista"}),
          ("sparse LCA k=4", {"model": "sparse", "n_iter": 4, "method": "lca"}),
          ("ml_ista T=3", {"model": "ml_ista", "n_iter": 3}))
IMAGE_SHAPE = (1, 28, 28)
N_CLASSES = 10
EPSILON = 0.1


def best_seconds(step, repeats: int) -> float:
    step()  # untimed: first-call allocations, Lipschitz caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 timed step, PGD with 3 steps")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=5, help="timed training steps")
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    batches, pgd_steps = (1, 3) if args.quick else (args.batches, args.pgd_steps)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.rand(args.batch, *IMAGE_SHAPE, generator=generator)
    labels = torch.randint(0, N_CLASSES, (args.batch,), generator=generator)
    print(f"batch {args.batch}, {IMAGE_SHAPE}, {args.threads} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, PGD L-inf eps {EPSILON} with "
          f"{pgd_steps} steps; best of {batches} training steps", file=sys.stderr, flush=True)

    rows = []
    for name, options in MODELS:
        config = TrainingConfig(seed=args.seed, **options)
        model = build_model(config, IMAGE_SHAPE, N_CLASSES)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)

        def train_step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()

        def attacked_evaluation(model=model) -> None:
            adversarial = pgd(model, images, labels, EPSILON, steps=pgd_steps)
            with torch.no_grad():
                model(adversarial).argmax(1)

        model.train()
        train = args.batch / best_seconds(train_step, batches)
        print(f"  {name:<18} training  {train:8.0f} images/s", file=sys.stderr, flush=True)
        model.eval()
        attack = args.batch / best_seconds(attacked_evaluation, batches // 2 + 1)
        print(f"  {name:<18} under PGD {attack:8.1f} images/s", file=sys.stderr, flush=True)
        rows.append((name, train, attack))

    base_train, base_attack = rows[0][1], rows[0][2]
    print(f"{'model':<18} {'train img/s':>12} {'PGD-' + str(pgd_steps) + ' eval img/s':>18} "
          f"{'train / cnn':>12} {'PGD / cnn':>10}")
    for name, train, attack in rows:
        print(f"{name:<18} {train:>12,.0f} {attack:>18,.1f} {train / base_train:>12.3f} "
              f"{attack / base_attack:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
