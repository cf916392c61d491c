"""Test set-up: 8 fake CPU devices for the sharding tests (must precede the first jax import).

``OVAIB_TEST_REAL_DEVICES=1`` leaves the devices as they are (no fake CPU devices, no
forced CPU platform): benchmarks/accelerator_check.py runs the sharding tests so on a GPU
or TPU host.
"""

import os

if os.environ.get("OVAIB_TEST_REAL_DEVICES", "") in ("", "0"):
    _FLAG = "--xla_force_host_platform_device_count=8"
    if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
