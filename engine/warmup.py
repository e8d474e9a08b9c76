"""What the app's pages read from a finished run, computed once when training ends.

The galleries need every image's prediction at the final weights (engine.export.run_predictions)
and the Embedding map its PCA map (engine.embedding, PCA of the penultimate features). Both are
cached in the run and depend only on its final weights, images and labels. Computed lazily they
made the first visit of Harmful images take 9.0 s and of Embedding map 6.1 s on the 51k
Fashion-MNIST run; computed here, at the end of `retracer train` / `resume` and of the app's
training job, the pages only read them.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["warm_run"]


def warm_run(run_dir: str | Path) -> dict[str, float]:
    """Compute and cache the run's predictions and PCA map; {"predictions": s, "pca": s} taken.

    A failure here never fails the training that came before it: the pages compute what is
    missing when they need it (the same functions), so an unwritable run loses only the caching.
    """
    from engine.embedding import compute_embedding, has_embedding
    from engine.export import run_predictions

    took: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        run_predictions(run_dir)
        took["predictions"] = time.perf_counter() - t0
        if not has_embedding(run_dir, "pca"):
            t1 = time.perf_counter()
            compute_embedding(run_dir, method="pca")
            took["pca"] = time.perf_counter() - t1
    except Exception:  # a cache only: the pages compute it again and show any error
        pass
    return took
