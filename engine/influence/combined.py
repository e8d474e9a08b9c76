"""`combined`: one label-error ranking from the training fit and validation-loss influence.

Measured (DESIGN.md, and bench/results/issue7.md): the plain final training loss (or margin)
finds uniform label noise best, validation-loss influence finds systematic (pair) noise best.
This method merges their normalised ranks. Every component is turned into a *suspicion* (higher =
more likely a label error) and then into a rank percentile p in (0, 1] (1 = most suspicious):

- the base (``base="margin"`` (default) or ``"loss"``): suspicion = -score (both baselines score
  a badly fitted given label negative);
- validation-loss influence (``influence``, comma-separated methods, default
  ``"hydra,sgd-influence"``): suspicion = -score (NEGATIVE = HARMFUL = suspicious);
- self-influence (``use_self=True``, off by default; the self query of each Hessian-free influence
  method): suspicion = +score. A mislabeled sample has a large POSITIVE self-influence (removing
  it raises its own loss: it is memorised), so the suspicious end is the positive end.

weight (``weight=``): the influence components' total share against the base. ``"auto"`` (the
default) is ``structure_weight``: of the training samples the final model mispredicts, the share
whose predicted class is the most common wrong class of their given label. Uniform noise spreads
mispredictions over all other classes (low weight: trust the fit), pair noise concentrates them
(high weight: trust influence).

rules (``rule=``):

- ``fisher`` (the default): weighted Fisher combination of the rank p-values,
  sum_c w_c (-log q_c) with q_c = 1 - p_c + 1/N the upper-tail rank p-value (1/N for the most
  suspicious sample): a sample flagged strongly by one component ranks high even if another is
  lukewarm, while agreement still counts;
- ``mean``: the weighted mean of the percentiles;
- ``stouffer``: sum_c w_c Phi^-1(p_c - 1/(2N)) (between mean and fisher);
- ``max``: the largest component percentile (flag what any component flags strongly);
- ``rrf``: reciprocal-rank fusion, sum_c 1 / (60 + rank_c) (rank 1 = most suspicious).

The defaults were chosen by measurement on digits and a Fashion-MNIST subset, uniform and pair
noise at 20% and 40% (bench/results/issue7.md): equal-weight merges lose to the plain loss on
uniform noise; self-influence lowers the AUROC under 40% noise; which influence estimator is
better depends on the training schedule (hydra with a constant learning rate, exact
sgd-influence with the cosine default), so both are merged.

Output: (N_train, 1) scores = -(merged suspicion), rescaled to [-1, 0]: NEGATIVE = SUSPICIOUS
(harmful), like every other method, so sorting ascending lists the likeliest label errors first.
The method ignores the query (uses_query=False): its components always use the validation query.
The components come from ``components`` (engine.influence.scorestore.ScoreStore.components): stored
in the run with their default options, else computed (and stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.config import ConfigError
from engine.influence.registry import Components, register_method
from engine.options import option
from engine.progress import Progress

if TYPE_CHECKING:
    from engine.influence.queries import Query
    from engine.loading import LoadedRun

__all__ = ["RULES", "combined_scores", "merge_suspicions", "percentiles", "structure_weight"]

RULES = ("fisher", "mean", "stouffer", "max", "rrf")


def percentiles(suspicion: np.ndarray) -> np.ndarray:
    """Rank percentiles (N,) in (0, 1] of a suspicion vector (N,): 1 = most suspicious; ties averaged."""
    # imported here: scipy.stats takes 1.5 s to import, on the app's first page otherwise
    from scipy.stats import rankdata

    s = np.asarray(suspicion, dtype=np.float64)
    return rankdata(s, method="average") / len(s)


def merge_suspicions(
    suspicions: list[np.ndarray], *, rule: str = "fisher", weights: list[float] | None = None
) -> np.ndarray:
    """Merge K suspicion vectors (each (N,), higher = more suspicious) into one (N,) in [0, 1].

    weights: (K,) non-negative component weights for fisher / mean / stouffer (default equal);
    max and rrf ignore them.
    """
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not suspicions:
        raise ConfigError("nothing to combine")
    p = np.stack([percentiles(s) for s in suspicions])  # (K, N)
    n = p.shape[1]
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(p),) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"need {len(p)} non-negative weights with a positive sum, got {weights}")
    w = (w / w.sum())[:, None]
    if rule == "fisher":
        out = (-np.log(1.0 - p + 1.0 / n) * w).sum(axis=0)
    elif rule == "mean":
        out = (p * w).sum(axis=0)
    elif rule == "stouffer":
        from scipy.stats import norm

        out = (norm.ppf(p - 0.5 / n) * w).sum(axis=0)
    elif rule == "max":
        # ties on the max broken by the mean, so the order is total where the data allow it
        out = p.max(axis=0) + p.mean(axis=0) / (n + 1)
    else:
        ranks = n + 1 - p * n  # 1 = most suspicious
        out = (1.0 / (60.0 + ranks)).sum(axis=0)
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros(n)


def structure_weight(loaded: LoadedRun, *, batch_size: int = 4096) -> float:
    """How systematic the label confusion looks, in [0, 1]: the influence share of ``weight="auto"``.

    Over the training samples the final model mispredicts, count given label -> predicted label;
    the weight is sum_c max_j C[c, j] / sum C (the share of mispredictions that fall on the most
    common wrong class of their given label). Uniform noise spreads over the other classes (low
    weight: the training loss is the better signal); pair noise concentrates (high weight: the
    model half-memorises the flipped pairs and validation-loss influence is the better signal).
    1.0 for two classes; 0.0 when nothing is mispredicted.
    """
    import torch
    from torch.func import functional_call

    p = loaded.problem
    with torch.no_grad():
        pred = torch.cat(
            [
                functional_call(p.model, loaded.final_theta, (p.x[i : i + batch_size],))
                for i in range(0, p.x.shape[0], batch_size)
            ]
        )
    y = p.y.cpu().numpy()
    if pred.shape[1] == 1:
        return 1.0
    hat = pred.argmax(1).cpu().numpy()
    wrong = hat != y
    if not wrong.any():
        return 0.0
    k = int(max(y.max(), hat.max())) + 1
    c = np.zeros((k, k))
    np.add.at(c, (y[wrong], hat[wrong]), 1.0)
    return float(c.max(axis=1).sum() / c.sum())


@dataclass(frozen=True)
class CombinedOptions:
    """Options of the combined label-error ranking (the module docstring)."""

    influence: str = option(
        "hydra,sgd-influence",
        help="validation-loss influence methods merged, comma-separated ('' or 'none': none)",
    )
    rule: str = option("fisher", choices=RULES, help="how ranks merge: " + " | ".join(RULES))
    use_self: bool = option(False, help="also merge each influence method's self-influence")
    use_loss: bool = option(True, help="merge the base (training fit) ranking")
    weight: float | str | None = option(
        "auto", help="the influence share against the base: 'auto', a number in [0, 1], or None"
    )
    base: str = option("margin", choices=("margin", "loss"), help="the training-fit ranking")


@register_method(
    "combined",
    description="Label-error ranking: weighted Fisher merge of the margin and validation-loss "
    "influence ranks (hydra + sgd-influence; negative = suspicious)",
    options=CombinedOptions(),
    uses_query=False,
    composite=True,
)
def combined_scores(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    components: Components,
    influence: str = "hydra,sgd-influence",
    rule: str = "fisher",
    use_self: bool = False,
    use_loss: bool = True,
    weight: float | str | None = "auto",
    base: str = "margin",
) -> np.ndarray:
    """(N_train, 1) merged label-error scores in [-1, 0]; -1 = the most suspicious sample.

    components(method, query kind, progress) -> (N_train,): another method's scores (given by the
    score store).

    influence: the method(s) for validation-loss influence, comma-separated ("" or "none" leaves
    it out); use_self adds the self-influence of each (Hessian-free methods only); use_loss the
    training loss. weight: the influence components' total share against the loss (split evenly
    among them): a number in [0, 1], "auto" (structure_weight: how systematic the confusion
    looks), or None for equal weights of all components.
    """
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    names = [m.strip() for m in (influence or "").split(",") if m.strip() not in ("", "none")]
    if "combined" in names:
        raise ConfigError("combined cannot use itself as its influence component")
    if use_self and not names:
        raise ConfigError("use_self needs an influence method (hydra or tracin)")
    infl: list[np.ndarray] = []
    # the validation half a recommendation scores on (engine.recommend), else the whole split
    val = query.kind if query.kind in ("val-a", "val-b") else "val"
    for m in names:
        infl.append(-components(m, val, progress))
        if use_self:
            infl.append(components(m, "self", progress))
    if base not in ("loss", "margin"):
        raise ConfigError(f"base must be loss or margin, got {base!r}")
    base_s = [-components(base, "val", progress)] if use_loss else []
    if not base_s and not infl:
        raise ConfigError("combined needs at least one component (loss, influence)")
    weights: list[float] | None = None
    if base_s and infl and weight is not None:
        if weight == "auto":
            w = structure_weight(loaded)
        elif isinstance(weight, int | float) and not isinstance(weight, bool) and 0 <= weight <= 1:
            w = float(weight)
        else:
            raise ConfigError(f"weight must be 'auto', a number in [0, 1] or None, got {weight!r}")
        weights = [1.0 - w] + [w / len(infl)] * len(infl)
        if w in (0.0, 1.0):  # one side only: drop the zero-weight components
            keep = [i for i, x in enumerate(weights) if x > 0]
            comps = [(base_s + infl)[i] for i in keep]
            return -merge_suspicions(comps, rule=rule, weights=[weights[i] for i in keep])[:, None]
    return -merge_suspicions(base_s + infl, rule=rule, weights=weights)[:, None]
