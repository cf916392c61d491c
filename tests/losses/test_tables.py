"""The tables ``ovaib_jax.losses`` states about its objectives (which take a PRNG key,
which hyper-parameters the scorer shares, the temperature) agree with the signatures, so
the trainer and the evaluators never need to read a signature."""

from __future__ import annotations

import inspect

import pytest

from ovaib_jax import losses


def _params(fn):
    return inspect.signature(fn).parameters


@pytest.mark.parametrize("name", losses.names())
def test_tables_match_signatures(name):
    fn, scorer = losses.get(name), losses.get_scorer(name)
    assert ("key" in _params(fn)) == (name in losses.TAKES_KEY)
    shared = {k for k in _params(scorer) if k in _params(fn) and k not in ("queries", "cands")}
    assert shared == set(losses.SCORER_HPARAMS.get(name, ()))
    assert losses.TEMPERATURE[name] in _params(fn)


@pytest.mark.parametrize("name, tau, want", [("ova_ib", 0.25, {"tau": 0.25}),
                                             ("symile", 0.25, {"logit_scale": 4.0})])  # fmt: skip
def test_temperature_round_trip(name, tau, want):
    assert losses.temperature_kwargs(name, tau) == want
    assert losses.temperature_of(name, want) == pytest.approx(tau)
