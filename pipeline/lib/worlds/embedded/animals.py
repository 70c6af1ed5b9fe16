"""Animals: the Animal-MNIST silhouettes (PyPI `animal-mnist`, MIT), read out of the installed package."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
from PIL import Image

from pipeline.lib.worlds.embedded.common import ImageSet, article, package_dir

# Label order: the package's description lists "Bear, Bird, Cat, Cow, Dog, Elephant, Giraffe, Horse,
# Sheep, Zebra"; labels 0-9 are in that (alphabetical) order, confirmed by looking at the images
# (0 bears, 1 birds, 5 trunks, 6 long necks, 9 stripes).
ANIMALS: tuple[str, ...] = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The data are pickled ndarrays: allow exactly what rebuilding one needs, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}:
            try:
                from numpy._core.multiarray import _reconstruct  # numpy 2 (numpy.core is a warning shim)
            except ImportError:  # pragma: no cover - numpy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from animal_mnist data")


def _read_animal_array(name: str) -> np.ndarray:
    with gzip.open(package_dir("animal_mnist") / "data" / "Animal_MNIST" / name, "rb") as f:
        return np.asarray(_NumpyOnlyUnpickler(f).load())


def load_animal_mnist(size: int = 32) -> ImageSet:
    """The 10,000 Animal-MNIST silhouettes (10 classes × 1,000; white animal on black), grey
    28 px → `size` px (bilinear) → RGB, in the package's order."""
    data = _read_animal_array("animal_data_version_3.gz").astype(np.uint8)
    labels = _read_animal_array("animal_label_version_3.gz").astype(np.int64)
    if data.shape[1:] != (28, 28) or len(data) != len(labels):
        raise ValueError(f"unexpected Animal-MNIST arrays: data {data.shape}, labels {labels.shape}")
    if size == 28:
        grey = data
    else:
        grey = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR)) for x in data])
    images = np.repeat(grey[..., None], 3, axis=-1)
    captions = [[f"a silhouette of {article(ANIMALS[y])} {ANIMALS[y]}",
                 f"a black and white picture of {article(ANIMALS[y])} {ANIMALS[y]}"] for y in labels]
    return ImageSet(images, labels, list(ANIMALS), captions)

