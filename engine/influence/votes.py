"""``attack-votes``: find a backdoor's poisoned training images from the attacks that succeed.

Needs a backdoored run (``DataSpec.backdoor``; engine.data.backdoor) and no knowledge of which
training ids are poisoned. Steps:

1. The successful attacks: the watermarked test-2 images the final model sends to the target
   class b (the images whose misclassification the poisoned data causes).
2. Per-test-sample influence of a Hessian-free adjoint method (``base``: hydra or tracin):
   scores S (N, A) = F u_a, F (N, D) the trajectory features phi_k (engine.influence.featurestore;
   exact when ``dim`` >= P, else projected), u_a the gradient of attack a's loss (true label) at
   the final weights. S[k, a] < 0: removing k lowers attack a's loss (k pushes it to b).
3. Votes: each successful attack votes for its single most harmful training sample (argmin_k
   S[k, a]); v_k = the fraction of the votes sample k received (sum 1).
4. ``rank="similarity"`` (default): the vote-weighted centroid c = sum_k v_k phi_k / |phi_k| and
   score_k = -cos(phi_k, c). The top voted images are poisoned, but a few of them take all the
   votes; the other poisoned images share their direction in feature space (same trigger, same
   wrong label) while the genuine b images, which also push watermarked images towards b, do
   not. ``rank="votes"``: score_k = mean over attacks of k's rank in S[:, a] (1 = most
   harmful), normalised to [0, 1]; ``rank="sum"``: score_k = sum_a S[k, a] (the attack query
   restricted to the successful attacks).

Returns (N_train, 1). Sign: NEGATIVE = more suspicious (harmful), as everywhere; the similarity
and votes scores are unitless rankings, not estimated loss changes. The method ignores the query
argument (uses_query=False): its query is always the run's own successful attacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.config import ConfigError
from engine.influence.featurestore import hessian_free_settings, project_phi
from engine.influence.projection import make_projector
from engine.influence.queries import Query, flat_query_gradients
from engine.influence.registry import register_method
from engine.options import option
from engine.progress import Progress

if TYPE_CHECKING:
    from engine.loading import LoadedRun

RANKS = ("similarity", "votes", "sum")
EXACT_LIMIT = 50_000_000  # N * P float64 entries kept exactly (400 MB); above: projected to dim


def successful_attacks(loaded: LoadedRun) -> list[str]:
    """The test-2 ids ("<test id>+wm") the run's final weights predict as the backdoor target."""
    from engine.models import predict
    from engine.problem import split_logits

    b = loaded.bundle
    if b.attack is None or b.attack_target is None:
        raise ConfigError("attack-votes needs a backdoored run (train with --backdoor a:b)")
    with torch.no_grad():
        pred = predict(split_logits(loaded.problem, loaded.final_theta, b.attack))
    tgt = int(b.attack_target)
    return [i for i, p in zip(b.attack.ids, pred.cpu().tolist(), strict=True) if p == tgt]


def attack_features(
    loaded: LoadedRun,
    test_ids: list[str],
    *,
    base: str = "hydra",
    dim: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(F (N, D) features phi_k (projected when D < P), S (N, A) per-test-sample scores F R u_a).

    dim=None: exact (D = P) when N * P <= EXACT_LIMIT, else 2048.
    """
    curvature, last_epochs = hessian_free_settings(base)
    n = loaded.problem.x.shape[0]
    p = sum(t.numel() for t in loaded.final_theta.values())
    d = dim if dim is not None else (p if n * p <= EXACT_LIMIT else 2048)
    projector = make_projector(p, int(d), seed=seed)
    feats = project_phi(
        loaded, projector, curvature=curvature, last_epochs=last_epochs, progress=progress
    ).astype(np.float64)
    u = flat_query_gradients(loaded, Query("test", tuple(test_ids)), loaded.final_theta).detach()
    ru = projector.project(u.T.to(torch.float64)).T.cpu().numpy()  # (D, A)
    return feats, feats @ ru


def vote_scores(feats: np.ndarray, s: np.ndarray, *, rank: str = "similarity") -> np.ndarray:
    """Suspicion scores (N,) from features (N, D) and per-attack scores (N, A); negative = harmful."""
    if rank not in RANKS:
        raise ConfigError(f"rank must be one of {', '.join(RANKS)}, got {rank!r}")
    n, a = s.shape
    if rank == "sum":
        return s.sum(axis=1)
    if rank == "votes":
        ranks = np.argsort(np.argsort(s, axis=0, kind="stable"), axis=0) + 1  # 1 = most harmful
        return ranks.mean(axis=1) / n
    votes = np.bincount(np.argmin(s, axis=0), minlength=n).astype(np.float64) / a
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-300)
    centroid = votes @ unit
    return -(unit @ centroid) / max(float(np.linalg.norm(centroid)), 1e-300)


@dataclass(frozen=True)
class AttackVotesOptions:
    base: str = option("hydra", help="the Hessian-free method whose trajectory features vote")
    rank: str = option("similarity", choices=RANKS, help="how votes become a ranking")
    dim: int | None = option(None, help="projection dimension of the features (None: exact)")
    seed: int = option(0, help="projection seed")


@register_method(
    "attack-votes",
    description=(
        "Backdoored runs: each successful attack (watermarked test image sent to the target) votes "
        "for its top harmful training sample (hydra); rank by feature similarity to the voted ones"
    ),
    options=AttackVotesOptions(),
    uses_query=False,
)
def attack_votes(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    base: str = "hydra",
    rank: str = "similarity",
    dim: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Scores (N_train, 1), negative = suspicious; see the module docstring. `query` is ignored."""
    if rank not in RANKS:
        raise ConfigError(f"rank must be one of {', '.join(RANKS)}, got {rank!r}")
    ids = successful_attacks(loaded)
    if not ids:
        raise ConfigError("no watermarked test image is sent to the target: no attack to trace")
    feats, s = attack_features(loaded, ids, base=base, dim=dim, seed=seed, progress=progress)
    return vote_scores(feats, s, rank=rank)[:, None]
