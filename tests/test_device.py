"""--device: every bad value is a one-line SpfemError, not a torch traceback."""

from __future__ import annotations

import pytest
import torch

from spfem_cli.device import autocast_dtype, pick_device
from spfem_cli.errors import SpfemError


def test_auto_and_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype(torch.device("cpu")) is None


@pytest.mark.parametrize("name, message", [("gpu0", "unknown device"), ("cuda:99", "GPU"), ("meta", "not supported")])
def test_bad_devices_say_what_to_use(name, message):
    with pytest.raises(SpfemError, match=message):
        pick_device(name)
