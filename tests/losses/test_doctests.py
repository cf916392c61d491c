"""The examples in the objectives' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["heads", "ova", "pairwise", "scores", "symile", "volume"])
def test_docstring_examples(name):
    module = importlib.import_module(f"ovaib_jax.losses.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
