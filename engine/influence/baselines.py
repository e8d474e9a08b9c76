"""Query-free baselines (Hara et al. Sec. 7.2 and the label-error tools users know).

Every baseline returns (N_train, 1) in the training split's order and ignores the query; all
follow the same orientation as the influence scores so rankings are comparable: the MORE
NEGATIVE, the more suspicious / harmful.

- loss: -l(z_k; theta_T).
- margin: the logit margin of the given label, z_y - max_{j != y} z_j ((2y - 1) z for a
  binary model): low or negative margin = suspicious.
- random: seeded standard normal scores (a control).
- isolation-forest: sklearn IsolationForest on the penultimate features at theta_T;
  decision_function, negative for outliers.
- autoencoder: -(reconstruction error) of a small MLP autoencoder trained on the raw training
  images.
- confident-learning: cleanlab label-quality scores from K-fold out-of-fold probabilities (the
  run's own model config and SGD hyperparameters, refit per fold from fresh seeded weights),
  minus one: in [-1, 0], low label quality = negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.func import functional_call

from engine.config import ConfigError
from engine.influence.itlm import fit_subset, training_losses
from engine.influence.queries import Query
from engine.influence.registry import register_method
from engine.models import probabilities
from engine.options import option
from engine.problem import penultimate_features
from engine.progress import Progress
from engine.trajectory import Params

if TYPE_CHECKING:
    from engine.loading import LoadedRun


@torch.no_grad()
def _train_logits(loaded: LoadedRun, theta: Params, *, batch_size: int = 4096) -> torch.Tensor:
    p = loaded.problem
    out = [
        functional_call(p.model, theta, (p.x[i : i + batch_size],))
        for i in range(0, p.x.shape[0], batch_size)
    ]
    return torch.cat(out)


@register_method(
    "loss", description="Minus the training loss at the final weights", uses_query=False
)
def loss_scores(loaded: LoadedRun, query: Query, *, progress: Progress | None = None) -> np.ndarray:
    """(N_train, 1) = -l(z_k; theta_T): high loss = most negative."""
    return -training_losses(loaded, loaded.final_theta)[:, None]


def logit_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Margin (N,) of the given label: z_y - max_{j != y} z_j; binary (K = 1): (2y - 1) z."""
    if logits.shape[1] == 1:
        return (2 * labels.to(logits.dtype) - 1) * logits[:, 0]
    zy = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
    return zy - other


@register_method(
    "margin", description="Logit margin of the given label at the final weights", uses_query=False
)
def margin_scores(
    loaded: LoadedRun, query: Query, *, progress: Progress | None = None
) -> np.ndarray:
    """(N_train, 1) = logit margin of the given label: low (negative when misclassified) = harmful."""
    logits = _train_logits(loaded, loaded.final_theta)
    return logit_margin(logits, loaded.problem.y).double().cpu().numpy()[:, None]


@dataclass(frozen=True)
class SeedOptions:
    seed: int = option(0, help="random seed")


@dataclass(frozen=True)
class IsolationForestOptions:
    seed: int = option(0, help="random seed")
    n_estimators: int = option(200, help="trees in the forest")


@dataclass(frozen=True)
class AutoencoderOptions:
    seed: int = option(0, help="random seed")
    hidden: int = option(64, help="width of the hidden layers")
    code: int = option(16, help="width of the code")
    epochs: int = option(50, help="training epochs")
    batch_size: int = option(128, help="batch size")
    lr: float = option(1e-3, help="Adam's learning rate")


@dataclass(frozen=True)
class ConfidentLearningOptions:
    folds: int = option(5, help="cross-validation folds for the out-of-fold probabilities")
    seed: int = option(0, help="fold assignment and training seed")
    epochs: int | None = option(None, help="epochs per fold model (default: the run's)")


@register_method(
    "random", description="Seeded random scores (a control)", options=SeedOptions(),
    uses_query=False,
)  # fmt: skip
def random_scores(
    loaded: LoadedRun, query: Query, *, progress: Progress | None = None, seed: int = 0
) -> np.ndarray:
    """(N_train, 1) standard normal draws from numpy's generator seeded with `seed`."""
    return np.random.default_rng(seed).standard_normal((loaded.problem.x.shape[0], 1))


@register_method(
    "isolation-forest",
    description="Isolation forest on penultimate features (outliers negative)",
    options=IsolationForestOptions(),
    uses_query=False,
)
def isolation_forest_scores(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    seed: int = 0,
    n_estimators: int = 200,
) -> np.ndarray:
    """(N_train, 1) = IsolationForest.decision_function of the penultimate features (< 0 = outlier)."""
    from sklearn.ensemble import IsolationForest

    feats = penultimate_features(loaded.problem, loaded.final_theta).double().cpu().numpy()
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(feats)
    return np.asarray(forest.decision_function(feats), dtype=np.float64)[:, None]


@register_method(
    "autoencoder",
    description="Minus the reconstruction error of a small MLP autoencoder on the raw images",
    options=AutoencoderOptions(),
    uses_query=False,
)
def autoencoder_scores(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    seed: int = 0,
    hidden: int = 64,
    code: int = 16,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> np.ndarray:
    """(N_train, 1) = -(mean squared reconstruction error) of each training image.

    A (D -> hidden -> code -> hidden -> D) ReLU autoencoder, sigmoid output, trained with Adam
    on the flattened training images (float32, seeded, no labels used).
    """
    x = loaded.problem.x.all().reshape(loaded.problem.x.shape[0], -1).float()
    d = x.shape[1]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(d, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, code),
        torch.nn.ReLU(),
        torch.nn.Linear(code, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, d),
        torch.nn.Sigmoid(),
    ).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = x.shape[0]
    for e in range(epochs):
        perm = torch.randperm(n, generator=gen).to(x.device)
        for i in range(0, n, batch_size):
            xb = x[perm[i : i + batch_size]]
            loss = ((net(xb) - xb) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if progress is not None:
            progress(e + 1, epochs, float(loss))
    with torch.no_grad():
        err = torch.cat(
            [((net(x[i : i + 4096]) - x[i : i + 4096]) ** 2).mean(1) for i in range(0, n, 4096)]
        )
    return -err.double().cpu().numpy()[:, None]


def out_of_fold_probabilities(
    loaded: LoadedRun,
    *,
    folds: int = 5,
    seed: int = 0,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Out-of-fold predicted probabilities (N_train, C): each fold predicted by a model of the
    run's config trained (run's SGD hyperparameters, fresh weights seeded by seed + fold) on the
    other folds."""
    from engine.problem import build_problem

    n = loaded.problem.x.shape[0]
    if not (2 <= folds <= n):
        raise ConfigError(f"confident-learning needs 2 <= folds <= {n}, got {folds}")
    y = loaded.problem.y.cpu().numpy()
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if counts[counts > 0].min() < folds:
        from sklearn.model_selection import KFold

        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)  # type: ignore[assignment]
    probs = np.zeros((n, max(loaded.bundle.n_classes, 2)))
    cfg = loaded.cfg
    for f, (tr, te) in enumerate(splitter.split(np.zeros(n), y)):
        cfg_f = type(cfg).from_dict({**cfg.to_dict(), "seed": cfg.seed * 1000 + seed * 100 + f + 1})
        _, theta0 = build_problem(loaded.bundle, cfg_f)
        theta = fit_subset(loaded, tr, epochs=epochs, seed=cfg_f.seed, theta0=theta0)
        with torch.no_grad():
            te_t = torch.as_tensor(te).to(loaded.problem.x.device)
            logits = functional_call(loaded.problem.model, theta, (loaded.problem.x[te_t],))
            probs[te] = probabilities(logits).double().cpu().numpy()
        if progress is not None:
            progress(f + 1, folds, None)
    return probs


@register_method(
    "confident-learning",
    description="cleanlab label-quality scores from K-fold out-of-fold probabilities (low quality negative)",
    options=ConfidentLearningOptions(),
    uses_query=False,
)
def confident_learning_scores(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    folds: int = 5,
    seed: int = 0,
    epochs: int | None = None,
) -> np.ndarray:
    """(N_train, 1) = cleanlab.rank.get_label_quality_scores(labels, out-of-fold probs) - 1."""
    from cleanlab.rank import get_label_quality_scores

    probs = out_of_fold_probabilities(
        loaded, folds=folds, seed=seed, epochs=epochs, progress=progress
    )
    labels = loaded.problem.y.cpu().numpy()
    return (np.asarray(get_label_quality_scores(labels, probs), dtype=np.float64) - 1.0)[:, None]


def confident_learning_issues(
    loaded: LoadedRun, *, folds: int = 5, seed: int = 0, epochs: int | None = None
) -> list[str]:
    """Sample ids cleanlab's find_label_issues flags, most severe first."""
    from cleanlab.filter import find_label_issues

    probs = out_of_fold_probabilities(loaded, folds=folds, seed=seed, epochs=epochs)
    labels = loaded.problem.y.cpu().numpy()
    idx = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    ids = loaded.bundle.train.ids
    return [ids[int(i)] for i in idx]
