"""Queries: the scalar functions f(theta) whose change the scores estimate.

A Query has Q columns; ``query_losses(loaded, query, theta)`` returns the Q losses (Q,) as a
differentiable function of theta, and ``flat_query_gradients`` returns U = grad f (P, Q) with the
parameters flattened in ``theta``'s key order.

kinds:
- ``val``: mean validation loss (Q = 1). The default.
- ``val-a`` / ``val-b``: the mean loss of one fixed half of the validation split (``val_halves``),
  so a selection can be made on one half and judged on the other (engine.recommend).
- ``class``: the summed test loss of each test class (Q = n_classes), for the inter-class matrix.
- ``test``: the loss of each listed test sample (Q = len(test_ids)).
- ``self``: each training sample's own loss (Q = N_train, diagonal only: see the estimators).
- ``attack``: mean loss of the backdoor's test-2 images (watermarked, true labels; Q = 1): "what
  makes the model obey the trigger" (poisoned images raise it: negative scores). Backdoored runs.

``test:ID`` also accepts test-2 ids ("<test id>+wm") of a backdoored run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch.func import functional_call

from engine.config import ConfigError
from engine.models import per_sample_loss
from engine.trajectory import Params

if TYPE_CHECKING:
    from engine.loading import LoadedRun

QUERY_KINDS = ("val", "val-a", "val-b", "class", "test", "self", "attack")
MEAN_KINDS = ("val", "val-a", "val-b", "attack")  # query losses that are means, not sums


def val_halves(n_val: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint halves (A, B) of the validation indices 0..n_val-1, int64, each sorted.

    A seeded permutation (torch.Generator seeded with 7_211 + seed), A the first ceil(n/2).
    """
    g = torch.Generator().manual_seed(7_211 + int(seed))
    perm = torch.randperm(n_val, generator=g)
    a = (n_val + 1) // 2
    return perm[:a].sort().values, perm[a:].sort().values


@dataclass(frozen=True)
class Query:
    kind: str = "val"
    test_ids: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> Query:
        """'val' | 'class' | 'self' | 'attack' | 'test:ID[,ID...]'."""
        kind, _, arg = text.partition(":")
        if kind not in QUERY_KINDS:
            raise ConfigError(
                f"query must be val, val-a, val-b, class, self, attack or test:ID, got {text!r}",
                param="query",
            )
        if kind == "test":
            ids = tuple(i for i in arg.split(",") if i)
            if not ids:
                raise ConfigError("query test:ID needs at least one test sample id", param="query")
            return cls("test", ids)
        if arg:
            raise ConfigError(f"query {kind} takes no argument, got {text!r}", param="query")
        return cls(kind)

    @property
    def tag(self) -> str:
        """A file-name-safe name for this query ('val', 'class', 'self', 'test-<n>-<hash>')."""
        if self.kind != "test":
            return self.kind
        import hashlib

        h = hashlib.sha1(",".join(self.test_ids).encode()).hexdigest()[:10]
        return f"test-{len(self.test_ids)}-{h}"

    def column_names(self, loaded: LoadedRun) -> list[str]:
        if self.kind in MEAN_KINDS:
            return ["score"]
        if self.kind == "class":
            return [f"class:{c}" for c in loaded.bundle.class_names]
        if self.kind == "test":
            return [f"test:{i}" for i in self.test_ids]
        return ["score"]


def query_inputs(
    loaded: LoadedRun, query: Query
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (M, C, H, W), y (M,), column (M,)) : the samples a query sums over and their column.

    Column q's query loss is sum over samples with column == q of weight * loss, where the weight
    is 1/M for 'val', 'val-a', 'val-b' and 'attack' (means) and 1 otherwise (sums).
    """
    p = loaded.problem
    dtype, dev = p.x.dtype, p.x.device
    b = loaded.bundle
    if query.kind == "val":
        s = b.val
        col = torch.zeros(len(s), dtype=torch.long)
    elif query.kind in ("val-a", "val-b"):
        half = val_halves(len(b.val), seed=loaded.cfg.seed)[query.kind == "val-b"]
        x = b.val.x(dtype)[half].to(dev)
        return x, b.val.labels[half].to(dev), torch.zeros(len(half), dtype=torch.long, device=dev)
    elif query.kind == "class":
        s = b.test
        col = s.labels.clone()
    elif query.kind == "attack":
        if b.attack is None:
            raise ConfigError("the attack query needs a backdoored run (train with --backdoor a:b)")
        s = b.attack
        col = torch.zeros(len(s), dtype=torch.long)
    elif query.kind == "test":
        pool = [b.test] + ([b.attack] if b.attack is not None else [])
        inputs = torch.cat([p.x(dtype) for p in pool])
        labels = torch.cat([p.labels for p in pool])
        pos = {sid: i for i, sid in enumerate(i for p in pool for i in p.ids)}
        missing = [i for i in query.test_ids if i not in pos]
        if missing:
            raise ConfigError(f"unknown test sample id(s): {', '.join(missing[:5])}")
        idx = torch.tensor([pos[i] for i in query.test_ids], dtype=torch.long)
        x = inputs[idx].to(dev)
        return x, labels[idx].to(dev), torch.arange(len(idx), device=dev)
    else:
        raise ConfigError("the self query has no fixed inputs; estimators handle it per sample")
    return s.x(dtype).to(dev), s.labels.to(dev), col.to(dev)


def n_columns(loaded: LoadedRun, query: Query) -> int:
    return len(query.column_names(loaded)) if query.kind != "self" else len(loaded.bundle.train)


def query_losses(
    loaded: LoadedRun, query: Query, theta: Params, *, batch_size: int = 4096
) -> torch.Tensor:
    """The Q query losses (Q,) at `theta`, differentiable with respect to theta."""
    x, y, col = query_inputs(loaded, query)
    q = n_columns(loaded, query)
    scale = 1.0 / x.shape[0] if query.kind in MEAN_KINDS else 1.0
    total = torch.zeros(q, dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        losses = per_sample_loss(
            functional_call(loaded.problem.model, theta, (x[i : i + batch_size],)),
            y[i : i + batch_size],
        )
        total = total.index_add(0, col[i : i + batch_size], losses * scale)
    return total


def flat(theta: Params) -> torch.Tensor:
    """Concatenate parameters in key order into a vector (P,)."""
    return torch.cat([t.reshape(-1) for t in theta.values()])


def flat_query_gradients(loaded: LoadedRun, query: Query, theta: Params) -> torch.Tensor:
    """U = d f_q / d theta for every query column, shape (P, Q)."""
    leaves = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
    losses = query_losses(loaded, query, leaves)
    cols = []
    for q in range(losses.shape[0]):
        g = torch.autograd.grad(
            losses[q], list(leaves.values()), retain_graph=q + 1 < losses.shape[0]
        )
        cols.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(cols, dim=1)
