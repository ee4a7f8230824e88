"""Draw docs/guide/stroke-digits.png: the ``stroke-digits`` preset beside scikit-learn's digits.

Row 1: each class's glyph as the world draws it without noise or distractors; row 2: one
default sample per class (noise and two distractor strokes); row 3: scikit-learn's 8 x 8 digits
0-9 for comparison.  Run from the checkout: ``python tools/stroke_digits_figure.py [OUT]``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from sparsecnn.features import preset
from sparsecnn.io import write_bytes

SEED = 0


def first_of_each_class(images: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    return [images[np.flatnonzero(labels == digit)[0]] for digit in range(10)]


def figure_png() -> bytes:
    clean = preset("stroke-digits", seed=SEED, noise=0.0, distractors=0).sample(200, seed=SEED)
    noisy = preset("stroke-digits", seed=SEED).sample(200, seed=SEED)
    digits = load_digits()
    rows = [("stroke-digits\n(clean)", first_of_each_class(clean.images[:, 0].numpy(),
                                                         clean.labels.numpy())),
            ("stroke-digits\n(sample)", first_of_each_class(noisy.images[:, 0].numpy(),
                                                          noisy.labels.numpy())),
            ("scikit-learn\ndigits", first_of_each_class(digits.images, digits.target))]
    figure, axes = plt.subplots(3, 10, figsize=(11, 3.7))
    for row, (title, images) in enumerate(rows):
        for digit, image in enumerate(images):
            axis = axes[row, digit]
            axis.imshow(image, cmap="gray_r", interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(str(digit))
        axes[row, 0].set_ylabel(title, fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs/guide/stroke-digits.png"
    write_bytes(out, figure_png())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
