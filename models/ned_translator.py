"""NED expression translator ("manipulator"): a StarGAN-v2-style network on expression sequences.

Input sequences are windows ``B×T×51`` (T = 10 in NED) of DECA/FLAME parameters: channel 0 is the
jaw opening (first jaw axis-angle component, radians), channels 1..50 the FLAME expression
coefficients. Style codes are ``B×16``. Module and parameter names follow
``foivospar/NED manipulator/models/networks.py`` so that NED's published checkpoints
(``{epoch:02d}_nets[_finetuned].pth``: a dict ``{"generator", "mapping_network", "style_encoder",
"discriminator"} -> state_dict``) load with ``strict=True``.

Sizes come from :class:`TranslatorConfig`; the defaults are NED's exact sizes. Smaller configs exist
only so tests and CPU experiments stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

NET_NAMES: tuple[str, ...] = ("generator", "mapping_network", "style_encoder", "discriminator")


@dataclass(frozen=True)
class TranslatorConfig:
    """Network sizes. Defaults = NED (``base_options.py``: latent 4, hidden 64, style 16, 7 emotions)."""

    num_coeffs: int = 51        # jaw opening + 50 FLAME expression coefficients
    style_dim: int = 16
    latent_dim: int = 4
    mapping_hidden: int = 64
    n_emotions: int = 7         # EMOTIONS order of spfem_cli.emotions
    gen_hidden: int = 512       # G: Linear(67,512)-Linear(512,512), BiLSTM(512); head width = 2*gen_hidden
    enc_lstm: int = 128         # E/D: Linear(51,4h)-Linear(4h,2h), BiLSTM(2h->h), Linear(2h,h)-Linear(h,h/2)

    def to_dict(self) -> dict:
        return asdict(self)


def _bilstm(inp: int, hidden: int) -> nn.LSTM:
    return nn.LSTM(inp, hidden, 2, batch_first=True, bidirectional=True)


class MappingNetwork(nn.Module):
    """F(z, y): latent ``B×latent_dim`` and emotion index ``B`` -> style ``B×style_dim``."""

    def __init__(self, cfg: TranslatorConfig = TranslatorConfig()) -> None:
        super().__init__()
        h = cfg.mapping_hidden
        self.shared = nn.Sequential(nn.Linear(cfg.latent_dim, h), nn.ReLU(),
                                    nn.Linear(h, h), nn.ReLU(),
                                    nn.Linear(h, h), nn.ReLU())
        self.unshared = nn.ModuleList(
            nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, cfg.style_dim)) for _ in range(cfg.n_emotions))

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.shared(z)
        out = torch.stack([head(h) for head in self.unshared], dim=1)  # B×n_emotions×style
        return out[torch.arange(y.shape[0], device=y.device), y]


class Generator(nn.Module):
    """G(x, s): window ``B×T×51`` + style ``B×style`` -> absolute translated window ``B×T×51``."""

    def __init__(self, cfg: TranslatorConfig = TranslatorConfig()) -> None:
        super().__init__()
        h, c = cfg.gen_hidden, cfg.num_coeffs
        self.seq1 = nn.Sequential(nn.Linear(c + cfg.style_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.LSTM = _bilstm(h, h)
        self.seq2 = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.ReLU(), nn.Linear(2 * h, 2 * h), nn.ReLU(),
                                  nn.Linear(2 * h, c))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        s = s[:, None, :].expand(-1, x.shape[1], -1)
        out, _ = self.LSTM(self.seq1(torch.cat([x, s], dim=2)))
        return self.seq2(out)


class _SeqTrunk(nn.Module):
    """Shared layout of E and D: MLP -> 2-layer BiLSTM -> per-frame MLP head (``out`` features)."""

    def __init__(self, cfg: TranslatorConfig, out: int) -> None:
        super().__init__()
        h, c = cfg.enc_lstm, cfg.num_coeffs
        self.seq1 = nn.Sequential(nn.Linear(c, 4 * h), nn.ReLU(), nn.Linear(4 * h, 2 * h), nn.ReLU())
        self.LSTM = _bilstm(2 * h, h)
        self.seq2 = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, h // 2), nn.ReLU(), nn.Linear(h // 2, out))

    def per_frame(self, x: Tensor) -> Tensor:
        out, _ = self.LSTM(self.seq1(x))
        return self.seq2(out)


class StyleEncoder(_SeqTrunk):
    """E(x): window ``B×T×51`` -> style ``B×style`` (mean over time of per-frame codes)."""

    def __init__(self, cfg: TranslatorConfig = TranslatorConfig()) -> None:
        super().__init__(cfg, cfg.style_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.per_frame(x).mean(dim=1)


class Discriminator(_SeqTrunk):
    """D(x, y): window ``B×T×51`` and emotion index ``B`` -> real/fake logit ``B`` of that emotion."""

    def __init__(self, cfg: TranslatorConfig = TranslatorConfig()) -> None:
        super().__init__(cfg, cfg.n_emotions)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        out = self.per_frame(x).mean(dim=1)
        return out[torch.arange(y.shape[0], device=y.device), y]


class NedTranslator(nn.Module):
    """The four NED networks under NED's checkpoint names; ``discriminator`` only when training."""

    def __init__(self, cfg: TranslatorConfig = TranslatorConfig(), *, with_discriminator: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.mapping_network = MappingNetwork(cfg)
        self.style_encoder = StyleEncoder(cfg)
        self.discriminator = Discriminator(cfg) if with_discriminator else None

    def nets(self) -> dict[str, nn.Module]:
        """Name -> module, in NED's checkpoint vocabulary."""
        return {n: m for n in NET_NAMES if (m := getattr(self, n)) is not None}

    def ned_state_dict(self) -> dict[str, dict[str, Tensor]]:
        """NED's checkpoint layout: one state dict per network."""
        return {n: m.state_dict() for n, m in self.nets().items()}

    def load_ned_state_dict(self, ckpt: Mapping[str, Mapping[str, Tensor]], *, strict: bool = True) -> None:
        """Load NED's per-network dict; a missing discriminator is fine (NED's test-time checkpoints)."""
        for name, module in self.nets().items():
            if name not in ckpt:
                if name == "discriminator" or not strict:
                    continue
                raise KeyError(f"checkpoint has no '{name}' (found: {', '.join(ckpt)})")
            module.load_state_dict(_strip_module_prefix(ckpt[name]), strict=strict)


def _strip_module_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """DataParallel-saved dicts carry ``module.``; NED saves without it, but users' copies may not."""
    return {k.removeprefix("module."): v for k, v in sd.items()}


def he_init(module: nn.Module) -> None:
    """NED's Kaiming init for Linear layers (fan_in, ReLU gain, zero bias); LSTMs keep torch's init."""
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def infer_config(ckpt: Mapping[str, Mapping[str, Tensor]]) -> TranslatorConfig:
    """Read the sizes back from a NED-layout checkpoint, so our own small checkpoints load too."""
    g, f, e = ckpt["generator"], ckpt["mapping_network"], ckpt["style_encoder"]
    g, f, e = _strip_module_prefix(g), _strip_module_prefix(f), _strip_module_prefix(e)
    num_coeffs = g["seq2.4.weight"].shape[0]
    return TranslatorConfig(
        num_coeffs=num_coeffs,
        style_dim=g["seq1.0.weight"].shape[1] - num_coeffs,
        latent_dim=f["shared.0.weight"].shape[1],
        mapping_hidden=f["shared.0.weight"].shape[0],
        n_emotions=len({k.split(".")[1] for k in f if k.startswith("unshared.")}),
        gen_hidden=g["seq1.0.weight"].shape[0],
        enc_lstm=e["LSTM.weight_hh_l0"].shape[1],
    )


def load_translator(path: str | Path, *, map_location: str | torch.device = "cpu",
                    with_discriminator: bool = False) -> NedTranslator:
    """Build a translator from a NED-layout checkpoint file (``{name: state_dict}``), sizes inferred."""
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("nets"), Mapping):  # our trainer's resume file
        ckpt = ckpt["nets"]
    if not isinstance(ckpt, Mapping) or "generator" not in ckpt:
        raise ValueError(f"{path} is not a NED translator checkpoint (expected keys {', '.join(NET_NAMES)})")
    model = NedTranslator(infer_config(ckpt), with_discriminator=with_discriminator and "discriminator" in ckpt)
    model.load_ned_state_dict(ckpt)
    return model
