"""Analyses built on the influence scores: label-error clustering (HYDRA Table 4) and the
agreement of fast estimators with exact SGD-Influence (HYDRA Figs. 3-5)."""
