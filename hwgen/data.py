"""The bundled data set: scikit-learn's handwritten digits (8×8, values 0..16, 1,797 images).

The split is fixed (stratified, seed 0, 20 % test) so every stage of hwgen sees the same
test images.  Float images are scaled to [0, 1] by dividing by 16.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SEED = 0
TEST_FRACTION = 0.2
PIXEL_MAX = 16.0


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``; x is float32 ``(N, 1, 8, 8)`` in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / PIXEL_MAX)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y)
    for a in (x_tr, x_te, y_tr, y_te):
        a.setflags(write=False)
    return x_tr, y_tr, x_te, y_te


CLASSES = [str(i) for i in range(10)]
