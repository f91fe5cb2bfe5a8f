"""One --device option for every command: auto | cpu | cuda[:N]."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """Resolve a device name; 'auto' takes the GPU when one is visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from spfem_cli.errors import SpfemError

    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpfemError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpfemError(f"--device {name} asked for, but no CUDA GPU is visible (use --device cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SpfemError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    if device.type not in ("cpu", "cuda"):
        raise SpfemError(f"--device {name} is not supported here: use auto, cpu, cuda or cuda:N")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, fp16 otherwise; None on CPU (no autocast)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
