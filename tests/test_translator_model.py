"""NED translator networks: exact NED checkpoint layout (key names + shapes), strict loading, shapes."""

from __future__ import annotations

import torch

from models.ned_translator import (
    NET_NAMES,
    NedTranslator,
    TranslatorConfig,
    he_init,
    infer_config,
    load_translator,
)


def _lstm(prefix: str, inp: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """torch.nn.LSTM(inp, hidden, 2, bidirectional=True) parameter names and shapes."""
    out = {}
    for layer, layer_in in ((0, inp), (1, 2 * hidden)):
        for sfx in ("", "_reverse"):
            out[f"{prefix}.weight_ih_l{layer}{sfx}"] = (4 * hidden, layer_in)
            out[f"{prefix}.weight_hh_l{layer}{sfx}"] = (4 * hidden, hidden)
            out[f"{prefix}.bias_ih_l{layer}{sfx}"] = (4 * hidden,)
            out[f"{prefix}.bias_hh_l{layer}{sfx}"] = (4 * hidden,)
    return out


def _linears(spec: dict[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for name, (o, i) in spec.items():
        out[f"{name}.weight"] = (o, i)
        out[f"{name}.bias"] = (o,)
    return out


def ned_manifest() -> dict[str, dict[str, tuple[int, ...]]]:
    """Written from foivospar/NED manipulator/models/networks.py (num_exp_coeffs 51, style 16, latent 4,
    hidden 64, 7 emotions): the layout of NED's published ``*_nets*.pth``."""
    trunk = {"seq1.0": (512, 51), "seq1.2": (256, 512), "seq2.0": (128, 256), "seq2.2": (64, 128)}
    return {
        "generator": {**_linears({"seq1.0": (512, 67), "seq1.2": (512, 512), "seq2.0": (1024, 1024),
                                  "seq2.2": (1024, 1024), "seq2.4": (51, 1024)}), **_lstm("LSTM", 512, 512)},
        "mapping_network": _linears({"shared.0": (64, 4), "shared.2": (64, 64), "shared.4": (64, 64),
                                     **{f"unshared.{k}.0": (64, 64) for k in range(7)},
                                     **{f"unshared.{k}.2": (16, 64) for k in range(7)}}),
        "style_encoder": {**_linears({**trunk, "seq2.4": (16, 64)}), **_lstm("LSTM", 256, 128)},
        "discriminator": {**_linears({**trunk, "seq2.4": (7, 64)}), **_lstm("LSTM", 256, 128)},
    }


def test_default_config_matches_ned_manifest_exactly():
    model = NedTranslator()
    manifest = ned_manifest()
    for name in NET_NAMES:
        got = {k: tuple(v.shape) for k, v in getattr(model, name).state_dict().items()}
        assert got == manifest[name], name


def test_ned_layout_checkpoint_loads_strict(tmp_path):
    torch.manual_seed(0)
    ckpt = {net: {k: torch.randn(shape) for k, shape in keys.items()} for net, keys in ned_manifest().items()}
    path = tmp_path / "20_nets_finetuned.pth"
    torch.save(ckpt, path)
    model = load_translator(path, with_discriminator=True)
    assert model.cfg == TranslatorConfig()
    for net, sd in ckpt.items():
        for k, v in getattr(model, net).state_dict().items():
            assert torch.equal(v, sd[k]), (net, k)
    # NED's test-time dicts may lack the discriminator; DataParallel copies carry "module."
    no_d = {net: {f"module.{k}": v for k, v in sd.items()} for net, sd in ckpt.items() if net != "discriminator"}
    torch.save(no_d, path)
    model = load_translator(path)
    assert model.discriminator is None
    assert torch.equal(model.generator.seq2[4].weight, ckpt["generator"]["seq2.4.weight"])


def test_forward_shapes_and_he_init():
    cfg = TranslatorConfig(gen_hidden=32, enc_lstm=16)
    model = NedTranslator(cfg)
    model.apply(he_init)
    assert torch.count_nonzero(model.generator.seq1[0].bias) == 0
    x = torch.randn(3, 10, 51)
    y = torch.tensor([0, 4, 6])
    s = model.mapping_network(torch.randn(3, 4), y)
    assert s.shape == (3, 16)
    assert model.generator(x, s).shape == (3, 10, 51)
    assert model.style_encoder(x).shape == (3, 16)
    assert model.discriminator(x, y).shape == (3,)
    assert infer_config(model.ned_state_dict()) == cfg


def test_mapping_network_selects_the_head_of_each_label():
    model = NedTranslator(TranslatorConfig(gen_hidden=8, enc_lstm=8))
    z = torch.randn(1, 4).expand(7, -1)
    s = model.mapping_network(z, torch.arange(7))
    for k in range(7):
        h = model.mapping_network.shared(z[:1])
        assert torch.allclose(s[k], model.mapping_network.unshared[k](h)[0])
