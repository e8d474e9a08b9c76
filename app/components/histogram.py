"""Score distributions as pre-binned bars: the browser gets 60 counts per method, not every score.

A plotly histogram of raw values ships all N of them (51,000 floats per method at full
Fashion-MNIST) and bins them in the browser; here numpy bins them on shared edges, so overlaid
methods stay comparable and the figure stays a few kilobytes whatever N is.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

__all__ = ["histogram_figure"]


def histogram_figure(series: Mapping[str, np.ndarray], *, bins: int = 60) -> go.Figure:
    """Overlaid histograms of each named array (N,) on `bins` shared bins, with a dashed line at 0.

    Bars: x = bin centre, y = count, width = bin width; non-finite values are left out.
    """
    fig = go.Figure()
    values = [np.asarray(x, dtype=np.float64) for x in series.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    if finite.size:
        edges = np.histogram_bin_edges(finite, bins=bins)
        centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        for name, v in zip(series, values, strict=True):
            counts, _ = np.histogram(v[np.isfinite(v)], bins=edges)
            fig.add_bar(x=centres, y=counts, width=widths, name=name, opacity=0.6)
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    fig.update_layout(
        barmode="overlay", bargap=0, xaxis_title="score (negative = harmful)",
        yaxis_title="training images", height=360, margin=dict(l=10, r=10, t=30, b=10),
    )  # fmt: skip
    return fig
