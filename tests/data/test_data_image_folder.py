"""Image folders: PNGs written here from known arrays come back exactly, classes are sorted by
name, the split is stratified and seeded, and damage is an error naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import error_pattern, write_png

from sparsecnn.data import DataFileError, load_dataset, load_image_folder


def _write_two_classes(root: Path, n_per_class: int = 5, shape: tuple[int, ...] = (6, 5)
                       ) -> dict[bytes, int]:
    """``cat/`` and ``ant/`` (ant sorts first: label 0), random 8-bit images; returns
    ``{pixel bytes: label}``."""
    rng = np.random.default_rng(0)
    written = {}
    for label, name in ((1, "cat"), (0, "ant")):
        for i in range(n_per_class):
            image = rng.integers(0, 256, size=shape, dtype=np.uint8)
            write_png(root / name / f"{i:02d}.png", image)
            written[image.tobytes()] = label
    (root / "ant" / "notes.txt").write_text("not an image, ignored")
    (root / ".hidden").mkdir()
    return written


def test_image_folder_round_trip(tmp_path: Path) -> None:
    written = _write_two_classes(tmp_path / "pets")
    split = load_image_folder(tmp_path / "pets", test_fraction=0.4, seed=3)
    assert split.name == "pets" and split.n_classes == 2
    assert split.train_images.shape == (6, 1, 6, 5) and split.test_images.shape == (4, 1, 6, 5)
    assert torch.bincount(split.train_labels).tolist() == [3, 3]
    assert torch.bincount(split.test_labels).tolist() == [2, 2]
    images = torch.cat([split.train_images, split.test_images])
    labels = torch.cat([split.train_labels, split.test_labels]).tolist()
    pixels = (images * 255).round().to(torch.uint8)[:, 0].numpy()
    assert images.dtype == torch.float32
    torch.testing.assert_close(images, torch.from_numpy(pixels[:, None]).float() / 255,
                               rtol=0, atol=0)
    # every written image comes back once, with the label of its sorted class folder
    assert {image.tobytes(): label for image, label in zip(pixels, labels, strict=True)} == written
    again = load_image_folder(tmp_path / "pets", test_fraction=0.4, seed=3)
    assert torch.equal(again.train_images, split.train_images)
    other = load_image_folder(tmp_path / "pets", test_fraction=0.4, seed=4)
    assert not torch.equal(other.train_labels, split.train_labels) or not torch.equal(
        other.train_images, split.train_images)
    assert load_dataset(tmp_path / "pets").train_images.shape == (8, 1, 6, 5)  # 0.2 held out


def test_rgb_and_16_bit_images(tmp_path: Path) -> None:
    rgb = np.zeros((4, 3, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    for name in ("a", "b"):
        for i in range(2):
            write_png(tmp_path / "rgb" / name / f"{i}.png", rgb)
    split = load_image_folder(tmp_path / "rgb", test_fraction=0.5)
    assert split.train_images.shape == (2, 3, 4, 3)  # channels first
    assert (split.train_images[:, :, 1, 2] * 255).round().tolist() == [[10, 20, 30]] * 2
    deep = np.full((3, 3), 1000, dtype=np.uint16)
    for name in ("a", "b"):
        for i in range(2):
            write_png(tmp_path / "deep" / name / f"{i}.png", deep)
    split = load_image_folder(tmp_path / "deep", test_fraction=0.5, dtype=torch.float64)
    assert float(split.train_images.max()) == 1000 / 65535


def test_jpeg_images(tmp_path: Path) -> None:
    image = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    for name in ("x", "y"):
        for i in range(2):
            write_png(tmp_path / "j" / name / f"{i}.JPG", image)  # the suffix picks JPEG
    split = load_image_folder(tmp_path / "j", test_fraction=0.5)
    assert split.train_images.shape == (2, 1, 16, 16)
    np.testing.assert_allclose(split.train_images[0, 0].numpy() * 255, image, atol=8)


def test_subsets_read_only_what_they_keep(tmp_path: Path) -> None:
    _write_two_classes(tmp_path / "pets", n_per_class=10)
    split = load_image_folder(tmp_path / "pets", test_fraction=0.5, n_train=4, n_test=2)
    assert torch.bincount(split.train_labels).tolist() == [2, 2]
    assert torch.bincount(split.test_labels).tolist() == [1, 1]
    broken = tmp_path / "pets" / "cat" / "zz.png"
    broken.write_bytes(b"not a png")
    kept = load_image_folder(tmp_path / "pets", test_fraction=0.5, n_train=1, n_test=1)
    assert kept.train_images.shape[0] == 1  # the broken file was not chosen, so not read


def test_damaged_image_folders(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    root.mkdir()
    with pytest.raises(DataFileError, match=error_pattern(
            root, "empty image folder: no class sub-folders (an image folder holds one "
                  "sub-folder of PNG/JPEG images per class)")):
        load_image_folder(root)
    _write_two_classes(root, n_per_class=2)
    (root / "dog").mkdir()
    (root / "dog" / "readme.txt").write_text("no images")
    with pytest.raises(DataFileError, match=error_pattern(
            root / "dog", "empty class folder: no .png, .jpg or .jpeg images")):
        load_image_folder(root)
    (root / "dog" / "readme.txt").unlink()
    (root / "dog").rmdir()

    broken = root / "cat" / "zz.png"
    broken.write_bytes(b"GIF89a, not a PNG")
    with pytest.raises(DataFileError, match=error_pattern(
            broken, "unreadable image: not a PNG or JPEG file (it does not start with their "
                    "signature bytes)")):
        load_image_folder(root, test_fraction=0.5)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but damaged after the signature")
    with pytest.raises(DataFileError, match=f"^{re.escape(f'{broken}: unreadable image (')}"
                                            r"\w+: [^\n]*\)$"):  # the decoder's own first line
        load_image_folder(root, test_fraction=0.5)
    broken.unlink()

    first = root / "ant" / "00.png"
    wrong_size = write_png(root / "cat" / "zz.png", np.zeros((7, 5), dtype=np.uint8))
    with pytest.raises(DataFileError, match=error_pattern(
            wrong_size, f"image is 7x5 grayscale 8-bit, but {first} is 6x5 grayscale 8-bit: "
                        "every image must have the same size and mode")):
        load_image_folder(root, test_fraction=0.5)

    wrong_mode = write_png(root / "cat" / "zz.png", np.zeros((6, 5, 3), dtype=np.uint8))
    with pytest.raises(DataFileError, match=error_pattern(
            wrong_mode, f"image is 6x5 RGB 8-bit, but {first} is 6x5 grayscale 8-bit: every "
                        "image must have the same size and mode")):
        load_image_folder(root, test_fraction=0.5)

    with pytest.raises(DataFileError, match=error_pattern(tmp_path / "nowhere", "not a directory")):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\); got 1\.0"):
        load_image_folder(root, test_fraction=1.0)
