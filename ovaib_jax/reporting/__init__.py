"""Sweep reports: markdown/JSON tables over objectives and seeds (:mod:`.report`) and PNG
figures (:mod:`.plots`), read from the run records of :mod:`ovaib_jax.records`."""

from ovaib_jax.reporting.plots import sweep_figures
from ovaib_jax.reporting.report import RunRecord, markdown_table, sweep_report

__all__ = ["RunRecord", "markdown_table", "sweep_figures", "sweep_report"]
