"""`combined`: one label-error ranking from the training loss and validation-loss influence.

Measured (DESIGN.md, and bench/results/issue7.md): the plain final training loss finds uniform
label noise best, validation-loss influence finds systematic (pair) noise best. This method merges
their normalised ranks. Every component is turned into a *suspicion* (higher = more likely a
label error) and then into a rank percentile in (0, 1]:

- ``loss``: suspicion = -score (score = minus the training loss, so high loss = suspicious);
- validation-loss influence (``influence``, default hydra): suspicion = -score (NEGATIVE =
  HARMFUL = suspicious);
- self-influence (``use_self=True``; the self query of the same Hessian-free method): suspicion
  = +score. A mislabeled sample has a large POSITIVE self-influence (removing it raises its own
  loss: it is memorised), so the suspicious end is the positive end.

rules (``rule=``):

- ``fisher`` (the default): Fisher's combination of the rank p-values,
  sum_c -log(q_c) with q_c = 1 - p_c + 1/N the upper-tail rank p-value (1/N for the most
  suspicious sample): a sample flagged strongly by one component ranks high even if the other
  is lukewarm, while agreement of both still counts;
- ``mean``: the mean of the component percentiles;
- ``stouffer``: sum_c Phi^-1(p_c - 1/(2N)) (between mean and fisher);
- ``max``: the largest component percentile (flag what any component flags strongly);
- ``rrf``: reciprocal-rank fusion, sum_c 1 / (60 + rank_c) (rank 1 = most suspicious).

The default (fisher of loss and hydra validation influence, no self-influence) was chosen by
measurement on digits and a Fashion-MNIST subset, uniform and pair noise at 20% and 40%
(bench/results/issue7.md): the mean of percentiles loses to the plain loss on uniform noise, and
adding self-influence lowers the AUROC under 40% noise.

Output: (N_train, 1) scores = -(merged suspicion), rescaled to [-1, 0]: NEGATIVE = SUSPICIOUS
(harmful), like every other method, so sorting ascending lists the likeliest label errors first.
The method ignores the query (uses_query=False): its components always use the validation query.
Components already stored in the run with their default options are reused, else computed (and
stored) through engine.influence.api.compute_influence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import rankdata

from engine.config import ConfigError
from engine.influence.registry import Progress, get_method, register_method, run_method

if TYPE_CHECKING:
    from engine.influence.queries import Query
    from engine.train import LoadedRun

__all__ = ["RULES", "combined_scores", "merge_suspicions", "percentiles"]

RULES = ("fisher", "mean", "stouffer", "max", "rrf")


def percentiles(suspicion: np.ndarray) -> np.ndarray:
    """Rank percentiles (N,) in (0, 1] of a suspicion vector (N,): 1 = most suspicious; ties averaged."""
    s = np.asarray(suspicion, dtype=np.float64)
    return rankdata(s, method="average") / len(s)


def merge_suspicions(suspicions: list[np.ndarray], *, rule: str = "fisher") -> np.ndarray:
    """Merge K suspicion vectors (each (N,), higher = more suspicious) into one (N,) in [0, 1]."""
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not suspicions:
        raise ConfigError("nothing to combine")
    p = np.stack([percentiles(s) for s in suspicions])  # (K, N)
    n = p.shape[1]
    if rule == "fisher":
        out = -np.log(1.0 - p + 1.0 / n).sum(axis=0)
    elif rule == "mean":
        out = p.mean(axis=0)
    elif rule == "stouffer":
        from scipy.stats import norm

        out = norm.ppf(p - 0.5 / n).sum(axis=0)
    elif rule == "max":
        # ties on the max broken by the mean, so the order is total where the data allow it
        out = p.max(axis=0) + p.mean(axis=0) / (n + 1)
    else:
        ranks = n + 1 - p * n  # 1 = most suspicious
        out = (1.0 / (60.0 + ranks)).sum(axis=0)
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros(n)


def _component(loaded: LoadedRun, method: str, query: str, progress: Progress | None) -> np.ndarray:
    """Scores (N,) of a component: stored (default options, this run) or computed and stored."""
    from engine.influence.queries import Query
    from engine.influence.store import read_scores
    from engine.runs import RunError

    spec = get_method(method)
    q = Query.parse(query)
    try:
        frame, params = read_scores(loaded.run.path, method, q)
        if params.get("options") == {**spec.defaults}:
            return frame["score"].to_numpy(np.float64)
    except (RunError, KeyError):
        pass
    try:
        from engine.influence.api import compute_influence

        frame = compute_influence(loaded.run.path, method, query=q, progress=progress)
        return frame["score"].to_numpy(np.float64)
    except RunError:  # stored with other options: compute without replacing them
        return run_method(method, loaded, q, progress=progress)[:, 0]


@register_method(
    "combined",
    description="Label-error ranking: merged rank percentiles of the training loss and "
    "validation-loss influence (negative = suspicious)",
    uses_query=False,
    influence="hydra",
    rule="fisher",
    use_self=False,
)
def combined_scores(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    influence: str = "hydra",
    rule: str = "fisher",
    use_self: bool = False,
    use_loss: bool = True,
) -> np.ndarray:
    """(N_train, 1) merged label-error scores in [-1, 0]; -1 = the most suspicious sample.

    influence: the method for validation-loss influence ("" or "none" leaves it out); use_self
    adds the self-influence of `influence` (Hessian-free methods only); use_loss the training loss.
    """
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    suspicions: list[np.ndarray] = []
    if use_loss:
        suspicions.append(-_component(loaded, "loss", "val", progress))
    if influence and influence != "none":
        if influence == "combined":
            raise ConfigError("combined cannot use itself as its influence component")
        suspicions.append(-_component(loaded, influence, "val", progress))
        if use_self:
            suspicions.append(_component(loaded, influence, "self", progress))
    elif use_self:
        raise ConfigError("use_self needs an influence method (hydra or tracin)")
    if not suspicions:
        raise ConfigError("combined needs at least one component (loss, influence)")
    return -merge_suspicions(suspicions, rule=rule)[:, None]
