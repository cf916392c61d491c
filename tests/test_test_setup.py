"""tests/conftest.py's quick-compile XLA flags: an unknown flag is detected in a child
process (XLA aborts on one), and the accepted flags reach this process and the training
subprocesses."""

import os

import pytest

from tests import conftest
from tests.train_helpers import one_real_device, subprocess_env


def test_an_unknown_xla_flag_is_detected_without_aborting_this_process():
    assert not conftest._xla_accepts("--xla_ovaib_no_such_flag=1")
    assert conftest._xla_accepts("--xla_force_host_platform_device_count=2")


def test_quick_compile_flags_reach_this_process_and_subprocesses():
    if os.environ.get("OVAIB_TEST_REAL_DEVICES", "") not in ("", "0"):
        pytest.skip("no test flags with the real devices")
    flags = os.environ["OVAIB_TEST_XLA_FLAGS"]
    assert flags in ("", conftest._QUICK_COMPILE_FLAGS)
    assert (flags != "") == conftest._xla_accepts(conftest._QUICK_COMPILE_FLAGS)
    env = {}
    one_real_device(env)
    for flag in flags.split():
        assert flag in os.environ["XLA_FLAGS"].split()
        assert flag in subprocess_env(devices=2)["XLA_FLAGS"].split()
        assert env["XLA_FLAGS"].split() == flags.split()
    assert "--xla_force_host_platform_device_count=2" in subprocess_env(devices=2)["XLA_FLAGS"]
