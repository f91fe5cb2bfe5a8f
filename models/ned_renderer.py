"""NED's Head2Head-style neural renderer and its discriminators, state-dict compatible with NED.

Checkpoints of NED (``foivospar/NED``, renderer/) load with ``strict=True``: the meta-renderer and
the actor renderers are folders with ``latest_net_G.pth`` (:class:`NedGenerator`),
``latest_net_D.pth`` (image discriminator) and ``latest_net_Dm.pth`` (mouth discriminator), both
:class:`MultiscaleDiscriminator`. Key names are NED's, including its quirks:

* every norm is ``InstanceNorm2d(affine=False, track_running_stats=True)``, so each norm has
  ``running_mean``/``running_var``/``num_batches_tracked`` buffers; NED never calls ``eval()``, so it
  always normalises with the instance statistics — :class:`InstanceNormNed` does the same in any mode;
* each residual block registers its layer stack twice (``resnetblock_sequential`` and ``conv_block``,
  the same module), so both key sets are present in the files.

Tensor conventions (per frame, H = W = 256 for the published weights):
conditioning = NMFC (3) + eye gaze (3) + detailed shape (3), all RGB in [0, 1], plus the face mask
(1) in {0, 1} → 10 channels; images (real, generated, previous outputs) are RGB in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

COND_NC = 9  # NMFC + eye gaze + detailed shape
FRAME_NC = COND_NC + 1  # + mask
OUTPUT_NC = 3
N_FRAMES_G = 3  # current frame + 2 previous ones
ROI_SIZE = 72  # mouth crop at 256²
LOAD_SIZE = 256


class InstanceNormNed(nn.InstanceNorm2d):
    """NED's norm: running-stat buffers exist (for the checkpoint keys) but instance stats are always used."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=False, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, eps=self.eps)


class ResnetBlock(nn.Module):
    """x + [pad-conv3-IN-ReLU-pad-conv3-IN](x); the stack is registered under two names as in NED."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        stack = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNormNed(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNormNed(dim),
        )
        self.resnetblock_sequential = stack
        self.conv_block = stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _encoder(in_nc: int, ngf: int, n_down: int, n_blocks: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_nc, ngf, 7), InstanceNormNed(ngf), nn.ReLU(True)]
    for i in range(n_down):
        mult = 2 ** i
        layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), InstanceNormNed(ngf * mult * 2),
                   nn.ReLU(True)]
    layers += [ResnetBlock(ngf * 2 ** n_down) for _ in range(n_blocks)]
    return nn.Sequential(*layers)


class NedGenerator(nn.Module):
    """G(conditioning of frames t-2..t, generated frames t-2..t-1) → frame t (paper §3.3 of NED / Head2Head).

    Two encoders — conditioning (``model_down_seg``) and previous outputs (``model_down_img``) — are
    summed, then residual blocks, transposed convolutions and a 7×7 conv with tanh; the result is masked
    (outside the face: -1, i.e. black).
    """

    def __init__(self, cond_nc: int = COND_NC, output_nc: int = OUTPUT_NC, n_frames: int = N_FRAMES_G,
                 ngf: int = 64, n_downsampling: int = 3, n_blocks: int = 9) -> None:
        super().__init__()
        self.n_frames = n_frames
        self.cond_nc = cond_nc
        self.output_nc = output_nc
        enc_blocks = n_blocks - n_blocks // 2
        self.model_down_seg = _encoder(cond_nc * n_frames, ngf, n_downsampling, enc_blocks)
        self.model_down_img = _encoder(output_nc * (n_frames - 1), ngf, n_downsampling, enc_blocks)
        width = ngf * 2 ** n_downsampling
        self.model_res_img = nn.Sequential(*[ResnetBlock(width) for _ in range(n_blocks // 2)])
        up: list[nn.Module] = []
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            up += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                   InstanceNormNed(ngf * mult // 2), nn.ReLU(True)]
        self.model_up_img = nn.Sequential(*up)
        self.model_final_img = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh())

    def split_conditioning(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×(n_frames·10)×H×W (NED layout, mask last per frame) → (B×(n_frames·9)×H×W, mask of frame t B×1×H×W)."""
        chunks = torch.chunk(cond, self.n_frames, dim=1)
        return torch.cat([c[:, :-1] for c in chunks], 1), cond[:, -1:]

    def encode_conditioning(self, cond: torch.Tensor) -> torch.Tensor:
        """The part of G that does not see previous outputs: can run batched over many frames."""
        return self.model_down_seg(cond)

    def decode(self, cond_feat: torch.Tensor, prev: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sum the two encodings, decode, mask. ``prev``: B×(2·3)×H×W in [-1, 1] (zeros at a sequence start)."""
        feat = cond_feat + self.model_down_img(prev)
        img = self.model_final_img(self.model_up_img(self.model_res_img(feat)))
        return img * mask - (1 - mask)

    def forward(self, cond: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """``cond``: B×(3·10)×H×W, frames oldest→current; ``prev``: B×6×H×W; returns B×3×H×W in [-1, 1] RGB."""
        cond9, mask = self.split_conditioning(cond)
        return self.decode(self.encode_conditioning(cond9), prev, mask)


def patchgan_layers(input_nc: int, ndf: int = 64, n_layers: int = 3) -> list[nn.Sequential]:
    """pix2pixHD PatchGAN with intermediate features (``getIntermFeat=True``): the stages ``model0..model{n+1}``."""
    kw, padw = 4, 2
    seq: list[list[nn.Module]] = [[nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]]
    nf = ndf
    for _ in range(1, n_layers):
        nf_prev, nf = nf, min(nf * 2, 512)
        seq.append([nn.Conv2d(nf_prev, nf, kw, stride=2, padding=padw), InstanceNormNed(nf), nn.LeakyReLU(0.2, True)])
    nf_prev, nf = nf, min(nf * 2, 512)
    seq.append([nn.Conv2d(nf_prev, nf, kw, stride=1, padding=padw), InstanceNormNed(nf), nn.LeakyReLU(0.2, True)])
    seq.append([nn.Conv2d(nf, 1, kw, stride=1, padding=padw)])
    return [nn.Sequential(*s) for s in seq]


class MultiscaleDiscriminator(nn.Module):
    """Two-scale PatchGAN D(conditioning, image) (NED: num_D = 2, n_layers = 3, ndf = 64).

    Keys ``scale{i}_layer{j}.*``; as in NED, ``scale{num_D-1}`` sees the full resolution and ``scale0``
    the coarsest. Returns per scale the list of layer outputs (last = patch logits).
    """

    def __init__(self, cond_nc: int = COND_NC, output_nc: int = OUTPUT_NC, ndf: int = 64, n_layers: int = 3,
                 num_d: int = 2) -> None:
        super().__init__()
        self.num_d, self.n_layers = num_d, n_layers
        self.cond_nc, self.output_nc = cond_nc, output_nc
        for i in range(num_d):
            layers = patchgan_layers(cond_nc + output_nc, min(64, ndf * 2 ** (num_d - 1 - i)), n_layers)
            for j, layer in enumerate(layers):
                setattr(self, f"scale{i}_layer{j}", layer)
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, cond: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        """``cond``: B×≥9×H×W (channels beyond 9, e.g. the mask, are ignored as in NED); ``image``: B×3×H×W [-1, 1]."""
        x = torch.cat([cond[:, :self.cond_nc], image], 1)
        result = []
        for i in range(self.num_d):
            feats = []
            h = x
            for j in range(self.n_layers + 2):
                h = getattr(self, f"scale{self.num_d - 1 - i}_layer{j}")(h)
                feats.append(h)
            result.append(feats)
            if i != self.num_d - 1:
                x = self.downsample(x)
        return result


def lsgan_loss(preds: list[list[torch.Tensor]], target_real: bool) -> torch.Tensor:
    """LSGAN (NED ``gan_mode='ls'``): Σ over scales of MSE(last output, 1 or 0)."""
    total = preds[0][-1].new_zeros(())
    for scale in preds:
        logits = scale[-1].float()
        total = total + F.mse_loss(logits, torch.full_like(logits, 1.0 if target_real else 0.0))
    return total


def feature_matching_loss(pred_fake: list[list[torch.Tensor]], pred_real: list[list[torch.Tensor]],
                          n_layers: int = 3, lambda_feat: float = 10.0) -> torch.Tensor:
    """pix2pixHD feature matching: Σ_scales Σ_layers (4/(n_layers+1))·(1/num_D)·L1(fake, real.detach())·λ."""
    num_d = len(pred_fake)
    w = 4.0 / (n_layers + 1) / num_d * lambda_feat
    total = pred_fake[0][-1].new_zeros(())
    for fake_s, real_s in zip(pred_fake, pred_real, strict=True):
        for a, b in zip(fake_s[:-1], real_s[:-1], strict=True):
            total = total + w * F.l1_loss(a.float(), b.detach().float())
    return total


def roi_size_for(height: int) -> int:
    """Mouth crop side: 72 at NED's 256², scaled (even) for other sizes."""
    return max(8, int(round(ROI_SIZE * height / LOAD_SIZE / 2)) * 2)


def crop_rois(images: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops of side ``size`` around (x, y) ``centers`` (B×2), shifted to stay inside (NED ``fit_ROI_in_frame``)."""
    _, _, h, w = images.shape
    half = size // 2
    out = []
    for img, (cx, cy) in zip(images, centers.tolist(), strict=True):
        cx = int(min(max(int(cx), half), w - half))
        cy = int(min(max(int(cy), half), h - half))
        out.append(img[:, cy - half:cy + half, cx - half:cx + half])
    return torch.stack(out)


def read_ned_state(path) -> dict[str, torch.Tensor]:
    """The state dict of one NED ``*_net_{G,D,Dm}.pth`` file (a ``module.`` DataParallel prefix is stripped)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_ned_state(module: nn.Module, path) -> nn.Module:
    """Load one NED ``*_net_{G,D,Dm}.pth`` file strictly."""
    module.load_state_dict(read_ned_state(path), strict=True)
    return module


def generator_config(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """``NedGenerator`` arguments read off a generator state dict.

    Why: a renderer folder may come from NED (ngf 64, 9 blocks) or from a smaller ``spfem train-renderer``
    configuration, and NED's ``opt.txt`` is not always shipped with the weights; the tensor shapes always are.
    """
    try:
        first_seg, first_img = state["model_down_seg.1.weight"], state["model_down_img.1.weight"]
    except KeyError as exc:
        raise ValueError(f"not a NED generator state dict (no {exc.args[0]})") from None
    n_frames = first_img.shape[1] // OUTPUT_NC + 1
    n_down = sum(1 for k, v in state.items() if k.startswith("model_up_img.") and k.endswith(".weight") and v.ndim == 4)
    enc_blocks = {k.split(".")[1] for k in state if k.startswith("model_down_seg.") and ".conv_block." in k}
    res_blocks = {k.split(".")[1] for k in state if k.startswith("model_res_img.")}
    return {"cond_nc": first_seg.shape[1] // n_frames, "output_nc": state["model_final_img.1.weight"].shape[0],
            "n_frames": n_frames, "ngf": first_seg.shape[0], "n_downsampling": n_down,
            "n_blocks": len(enc_blocks) + len(res_blocks)}


def load_ned_generator(path) -> NedGenerator:
    """A NED generator file (``*_net_G.pth``) as a module of the configuration it was trained with."""
    state = read_ned_state(path)
    generator = NedGenerator(**generator_config(state))
    generator.load_state_dict(state, strict=True)
    return generator


def find_ned_file(path, key: str = "G"):
    """NED checkpoint file of network ``key`` (G, D, Dm) in a folder or next to a given file.

    NED names files ``<epoch>_net_<key>.pth``: ``latest`` for actor renderers, ``15`` for the published
    meta-renderer (README: ``--which_epoch 15``). A folder prefers ``latest``, else the highest epoch; a
    given ``<label>_net_G.pth`` file selects the siblings with the same label. Returns None when absent.
    """
    from pathlib import Path

    path = Path(path)
    if path.is_file():
        label = path.name.split("_net_")[0] if "_net_" in path.name else None
        if key == "G" or label is None:
            return path if key == "G" else None
        sibling = path.with_name(f"{label}_net_{key}.pth")
        return sibling if sibling.is_file() else None
    if not path.is_dir():
        return None
    latest = path / f"latest_net_{key}.pth"
    if latest.is_file():
        return latest
    numbered = [p for p in path.glob(f"*_net_{key}.pth") if p.name.split("_net_")[0].isdigit()]
    return max(numbered, key=lambda p: int(p.name.split("_net_")[0])) if numbered else None
