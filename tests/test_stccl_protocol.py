"""STCCL and NED training as published (issue 14, items 9–12): each test rebuilds what the reference code
(jianmanlincjx/ASCCL, jianmanlincjx/STCCL, foivospar/NED) computes from its formulas and compares spfem to it.

* 9  renderer term scale: the reference metric returns 0.3·Σ over stages, the renderer hook adds it with weight 1;
* 10 the published STCCL checkpoint (the release's state-dict layouts) imports into the metric file;
* 11 reproduction switches: DAAS as released, the 9-frame window, temporal positions with replacement;
* 12 NED's face mask: the FSGAN U-Net run without ``eval()`` (BatchNorm on each image's own statistics).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from models.stccl import STCCL, STCCLConfig, sample_centres
from spfem_cli.app import app

SAMPLES = (4, 4, 2, 2)
SHAPES = ((64, 12), (128, 8), (256, 6), (512, 4))       # (C, H = W) per stage, small maps


def _help(command: str) -> str:
    """``spfem COMMAND --help`` as plain words (rich's box borders and line wrapping removed)."""
    out = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())


def _metric(**kw) -> STCCL:
    torch.manual_seed(0)
    return STCCL(STCCLConfig(arch="r18", input_size=64, samples=SAMPLES, **kw)).eval()


def _features(seed: int, b: int = 2, grad: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(2 * torch.randn(b, c, s, s, generator=gen)).requires_grad_(grad) for c, s in SHAPES]


# --------------------------------------------------------------------------- the reference's formulas
def ref_normalize(x: torch.Tensor) -> torch.Tensor:
    """base_model.Normalize(2) over dim 1: x / (‖x‖₂ + 1e-7)."""
    return x / (x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7)


def ref_patch_nce(f_q: torch.Tensor, f_k: torch.Tensor, weight_pos: torch.Tensor | float,
                  tau: float = 0.07) -> torch.Tensor:
    """The release's PatchNCELoss (B×C×S): CE over [positive, negatives with the diagonal at −inf], mean-reduced,
    then multiplied by ``weight_pos`` and averaged (``torch.mean(CE(pred, 0) * weight_pos)``)."""
    b, _, s = f_q.shape
    f_k = f_k.detach()
    l_pos = (f_k * f_q).sum(dim=1)[:, :, None]
    l_neg = torch.bmm(f_q.transpose(1, 2), f_k)
    l_neg = l_neg.masked_fill(torch.eye(s, dtype=torch.bool)[None], -float("inf"))
    logits = torch.cat((l_pos, l_neg), dim=2) / tau
    ce = F.cross_entropy(logits.flatten(0, 1), torch.zeros(b * s, dtype=torch.long))
    return torch.mean(ce * weight_pos)


def ref_mlp(x: torch.Tensor, first: torch.nn.Linear, second: torch.nn.Linear) -> torch.Tensor:
    """mlp[3i] → ReLU → mlp[3i+2] on B×S×C rows, written out."""
    return torch.relu(x @ first.weight.T + first.bias) @ second.weight.T + second.bias


def ref_asccl_stage(metric: STCCL, stage: int, feat_q: torch.Tensor, feat_k: torch.Tensor,
                    centres: torch.Tensor) -> torch.Tensor:
    """One stage of the release's spatial loss (spatial_temproal_coherent_model.py / ASCCL model_landmarks.py)."""
    offsets = torch.tensor([[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]])
    location = centres[:, None, :].repeat(1, 8, 1).reshape(-1, 2)
    neighbourhood = (centres[:, None, :] + offsets[None]).reshape(-1, 2)
    q_loc = feat_q[:, :, location[:, 0], location[:, 1]]
    q_nb = feat_q[:, :, neighbourhood[:, 0], neighbourhood[:, 1]]
    t = torch.sigmoid(torch.abs(q_loc - q_nb))
    adaptive_weight = torch.ones_like(t)
    adaptive_weight[t > 0.8] = 2 * (t[t > 0.8]) ** 2
    k_loc = feat_k[:, :, location[:, 0], location[:, 1]]
    k_nb = feat_k[:, :, neighbourhood[:, 0], neighbourhood[:, 1]]
    proj = metric.spatial_proj[stage]
    f_q = ref_mlp((q_loc - q_nb).permute(0, 2, 1), proj[0], proj[2])
    f_k = ref_mlp((k_loc - k_nb).permute(0, 2, 1), proj[0], proj[2])
    return ref_patch_nce(ref_normalize(f_q.permute(0, 2, 1)), ref_normalize(f_k.permute(0, 2, 1)), adaptive_weight)


def ref_asccl_loss(metric: STCCL, fq: list[torch.Tensor], fk: list[torch.Tensor], seed: int) -> torch.Tensor:
    """``loss_ccp * 0.3``: the value ASCCL's Temporal_Context_Loss returns and the renderer adds with weight 1.
    The centres are the ones spfem draws with the same seed (the reference's own draw is a NumPy shuffle)."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for s, (q, k) in enumerate(zip(fq, fk, strict=True)):
        total = total + ref_asccl_stage(metric, s, q, k, sample_centres(*q.shape[-2:], SAMPLES[s], gen))
    return total * 0.3


# --------------------------------------------------------------------------- 9: renderer term scale
class SeededMetric:
    """The metric as the renderer calls it (``loss(generated, real)``), with its centres drawn from a fixed seed."""

    def __init__(self, metric: STCCL, seed: int) -> None:
        self.metric, self.seed = metric, seed

    def loss(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.metric(generated, target, generator=torch.Generator().manual_seed(self.seed))


def test_renderer_stccl_term_has_the_reference_effective_weight(tmp_path: Path, monkeypatch) -> None:
    from models.ned_renderer import MultiscaleDiscriminator
    from spfem_cli.backends.ned import train_renderer as tr

    metric = _metric(mode="spatial", daas_variant="released")
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    fake = (real + 0.3 * torch.randn(2, 3, 64, 64, generator=gen)).clamp(-1, 1)
    step = tr.RendererStep(tr.RendererTrainConfig(mouth_d=False, ndf=8), lambda f, r: f.new_zeros(()),
                           SeededMetric(metric, seed=5))
    losses = step.generator_losses(fake, real, torch.rand(2, 10, 64, 64), torch.zeros(2, 2, dtype=torch.long),
                                   MultiscaleDiscriminator(ndf=8), None, 24)
    with torch.no_grad():
        reference = 1.0 * ref_asccl_loss(metric, metric.features(fake), metric.features(real), seed=5)
    assert float(losses["G_STCCL"].detach()) == pytest.approx(float(reference), rel=1e-4)

    # the command's default is that weight, said in --help, and --stccl-weight reaches the config
    weights_seen: list[float] = []

    def fake_train(*args, cfg, **kwargs) -> Path:
        weights_seen.append(cfg.stccl_weight)
        return tmp_path

    monkeypatch.setattr(tr, "train_renderer", fake_train)
    import spfem_cli.app as app_module

    monkeypatch.setattr(app_module, "_require_weights", lambda *a, **k: None)   # no weights here: only the option is under test
    runner = CliRunner()
    help_text = _help("train-renderer")
    assert "--stccl-weight" in help_text and "0.3·Σ over stages" in help_text
    for extra in ([], ["--stccl-weight", "1"]):
        res = runner.invoke(app, ["train-renderer", "--out", str(tmp_path), "--data", str(tmp_path), *extra])
        assert res.exit_code == 0, res.output
    assert weights_seen == [pytest.approx(0.3), 1.0]


# --------------------------------------------------------------------------- 10: the published checkpoint
def release_state(layers: tuple[int, int, int, int] = (3, 4, 14, 3), seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the key names and shapes of the release's Spatial_Coherent_Correlation_Learning
    (base_model.iresnet50 as ``resnet50`` incl. its unused ``bn2``, the 12-entry ``mlp`` ModuleList), written
    from the release's module definitions."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
        state[f"{prefix}.bias"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{prefix}.running_mean"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{prefix}.running_var"] = 1 + torch.rand(c, generator=gen)
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    def w(key: str, *shape: int) -> None:
        state[key] = 0.05 * torch.randn(*shape, generator=gen)

    w("resnet50.conv1.weight", 64, 3, 3, 3)
    bn("resnet50.bn1", 64)
    w("resnet50.prelu.weight", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
        for i in range(blocks):
            p = f"resnet50.layer{layer}.{i}"
            cin = inplanes if i == 0 else planes
            bn(f"{p}.bn1", cin)
            w(f"{p}.conv1.weight", planes, cin, 3, 3)
            bn(f"{p}.bn2", planes)
            w(f"{p}.prelu.weight", planes)
            w(f"{p}.conv2.weight", planes, planes, 3, 3)
            bn(f"{p}.bn3", planes)
            if i == 0:
                w(f"{p}.downsample.0.weight", planes, cin, 1, 1)
                bn(f"{p}.downsample.1", planes)
        inplanes = planes
    bn("resnet50.bn2", 512)
    for i, c in enumerate((64, 128, 256, 512)):
        w(f"mlp.{3 * i}.weight", c, c)
        w(f"mlp.{3 * i}.bias", c)
        w(f"mlp.{3 * i + 2}.weight", c // 4, c)
        w(f"mlp.{3 * i + 2}.bias", c // 4)
    return state


@pytest.fixture(scope="module")
def r50_release() -> dict[str, torch.Tensor]:
    return release_state()


def _fetch(path: Path, home: Path):
    return CliRunner().invoke(app, ["weights", "fetch", "stccl_metric", "--from", str(path)],
                              env={"SPFEM_HOME": str(home), "SPFEM_WEIGHT_STCCL_METRIC": ""})


def test_release_checkpoint_imports_through_weights_fetch(tmp_path: Path, r50_release, monkeypatch) -> None:
    from spfem_cli import weights

    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPFEM_WEIGHT_STCCL_METRIC", raising=False)
    src = tmp_path / "20_STCCL.pth"
    torch.save(r50_release, src)                     # the trainers' format: torch.save(model.state_dict(), …)
    with pytest.warns(UserWarning) as notes:
        dest = weights.install_user_file("stccl_metric", src)
    lines = [str(n.message) for n in notes]
    note = next(m for m in lines if "no counterpart" in m)
    assert "\n" not in note and "resnet50.bn2 (5 tensors)" in note and "temporal transformers" in note
    metric = STCCL.load(dest)
    assert metric.config.arch == "r50" and metric.config.daas_variant == "released"
    own = metric.state_dict()
    for key in ("conv1.weight", "layer3.13.conv2.weight", "layer4.0.downsample.1.running_var", "prelu.weight"):
        assert torch.equal(own[f"backbone.{key}"], r50_release[f"resnet50.{key}"])
    # each stage projection computes the release's mlp[3i] → ReLU → mlp[3i+2]
    x = torch.randn(5, 512)
    for i, c in enumerate((64, 128, 256, 512)):
        first, second = torch.nn.Linear(c, c), torch.nn.Linear(c, c // 4)
        first.weight.data, first.bias.data = r50_release[f"mlp.{3 * i}.weight"], r50_release[f"mlp.{3 * i}.bias"]
        second.weight.data, second.bias.data = (r50_release[f"mlp.{3 * i + 2}.weight"],
                                                r50_release[f"mlp.{3 * i + 2}.bias"])
        with torch.no_grad():
            assert torch.allclose(metric.spatial_proj[i](x[:, :c]), ref_mlp(x[:, :c], first, second), atol=1e-6)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module"])
def test_release_containers_and_prefixes(tmp_path: Path, wrap: str) -> None:
    from spfem_cli.train.stccl_release import import_file

    state = release_state(layers=(2, 2, 2, 2), seed=1)     # r18 depth: the converter reads the depth off the keys
    blob = {"module." + k: v for k, v in state.items()} if wrap == "module" else {wrap: state, "epoch": 20}
    torch.save(blob, tmp_path / "ckpt.pth")
    note = import_file(tmp_path / "ckpt.pth", tmp_path / "out.pt")
    assert note and "no counterpart" in note and "untrained" not in note
    metric = STCCL.load(tmp_path / "out.pt")
    assert metric.config.arch == "r18"
    assert torch.equal(metric.state_dict()["spatial_proj.1.2.bias"], state["mlp.5.bias"])


def test_untouched_projections_are_flagged(tmp_path: Path) -> None:
    """spatial_coherent_model.py never runs ``mlp``: its checkpoints keep nn.Linear's initial weights."""
    from spfem_cli.train.stccl_release import import_file

    state = release_state(layers=(2, 2, 2, 2))
    torch.manual_seed(0)
    for i, c in enumerate((64, 128, 256, 512)):          # the release's mlp ModuleList, as constructed
        for j, layer in ((3 * i, torch.nn.Linear(c, c)), (3 * i + 2, torch.nn.Linear(c, c // 4))):
            state[f"mlp.{j}.weight"], state[f"mlp.{j}.bias"] = layer.weight.detach(), layer.bias.detach()
    torch.save(state, tmp_path / "spatial_only.pth")
    note = import_file(tmp_path / "spatial_only.pth", tmp_path / "out.pt")
    assert "projections look untrained" in note and "\n" not in note


def test_foreign_files_are_refused_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    pickled = tmp_path / "pickled.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)
    archive = tmp_path / "Pretrained_Models.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ckpt/20_STCCL.pth", b"x")
    short = release_state(layers=(2, 2, 2, 2))
    short["mlp.2.weight"] = torch.zeros(8, 64)
    bad_shape = tmp_path / "bad_shape.pth"
    torch.save(short, bad_shape)
    expected = {junk: "not a PyTorch checkpoint", other: "neither an spfem STCCL metric file nor the STCCL release",
                pickled: "pickled object (torch.nn.modules.linear.Linear)", archive: "zip archive (ckpt/20_STCCL.pth)",
                bad_shape: "mlp.2.weight has shape (8, 64); the metric needs (16, 64)"}
    for path, message in expected.items():
        res = _fetch(path, home)
        assert res.exit_code != 0 and message in str(res.exception), (path.name, res.exception)
        assert "\n" not in str(res.exception)
    assert not any((home / "weights" / name).exists() for name in ("stccl_metric.pt", "stccl_metric.pt.part"))


def test_spfem_metric_file_is_installed_unchanged(tmp_path: Path) -> None:
    from spfem_cli.train.stccl_release import import_file

    path = _metric().save(tmp_path / "stccl_metric.pt")
    assert import_file(path, tmp_path / "unused.pt") is None and not (tmp_path / "unused.pt").exists()
    res = _fetch(path, tmp_path / "home")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "home" / "weights" / "stccl_metric.pt").read_bytes() == path.read_bytes()


# --------------------------------------------------------------------------- 11: reproduction switches
def test_released_daas_matches_the_reference_value_and_gradient() -> None:
    metric = _metric(mode="spatial", daas_variant="released", grad="both")
    fq, fk = _features(0, grad=True), _features(1)
    ours = metric.terms_from_features(fq, fk, generator=torch.Generator().manual_seed(3))
    reference = ref_asccl_loss(metric, fq, fk, seed=3) / 0.3
    assert float(ours.spatial.detach()) == pytest.approx(float(reference.detach()), rel=1e-4)
    g_ours = torch.autograd.grad(ours.spatial, fq[0], retain_graph=True)[0]
    g_ref = torch.autograd.grad(reference, fq[0])[0]         # incl. the gradient through the weight, as released
    assert torch.allclose(g_ours, g_ref, rtol=1e-3, atol=1e-7)
    # the per-row default is another number (it weights rows before the mean, from the target side)
    row = _metric(mode="spatial", grad="both")
    row.load_state_dict(metric.state_dict())
    per_row = row.terms_from_features(fq, fk, generator=torch.Generator().manual_seed(3)).spatial
    assert float(per_row.detach()) != pytest.approx(float(reference.detach()), rel=1e-2)


def test_released_daas_leaves_the_temporal_term_unweighted() -> None:
    metric = _metric(mode="temporal", daas_variant="released", temporal_positions="whole")
    b, t = 1, 3
    fq, fk = _features(4, b * t), _features(5, b * t)
    ours = metric.terms_from_features(fq, fk, frames=t, generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    pairs = torch.combinations(torch.arange(t), r=2)
    for s, (q, k) in enumerate(zip(fq, fk, strict=True)):
        c, h, w = q.shape[1:]
        sample_centres(h, w, SAMPLES[s], gen)                  # spfem draws the (unused) spatial centres first
        pos = torch.randint(0, h * w, (8 * SAMPLES[s],), generator=gen)
        proj = metric.spatial_proj[s]

        def flows(f: torch.Tensor, proj=proj, pos=pos, c=c) -> torch.Tensor:
            x = f.reshape(b, t, c, -1)[..., pos]
            d = (x[:, pairs[:, 0]] - x[:, pairs[:, 1]]).reshape(b * len(pairs), c, -1)     # (B·P)×C×S
            return ref_normalize(ref_mlp(d.permute(0, 2, 1), proj[0], proj[2]).permute(0, 2, 1))

        with torch.no_grad():
            expected = ref_patch_nce(flows(q), flows(k), 1.0)
        assert ours.per_stage[f"temporal{s + 1}"] == pytest.approx(float(expected), rel=1e-4)


def test_whole_map_positions_are_the_release_draw() -> None:
    metric = _metric(temporal_positions="whole")
    pos = metric.draw_temporal_positions(4, 4, 32, torch.Generator().manual_seed(2))
    assert torch.equal(pos, torch.randint(0, 16, (32,), generator=torch.Generator().manual_seed(2)))
    assert len(set(pos.tolist())) < 32 and {0, 3, 12, 15} & set(pos.tolist())     # repeats, corners reachable
    central = _metric().draw_temporal_positions(14, 14, 32, torch.Generator().manual_seed(2))
    ys, xs = central // 14, central % 14
    assert len(set(central.tolist())) == 32 and ys.min() >= 1 and xs.max() <= 12


def test_temporal_window_is_nine_frames_by_default_and_choosable(tmp_path: Path, monkeypatch) -> None:
    from spfem_cli.datasets.pairs import ClipPair
    from spfem_cli.train import metric as metric_mod
    from spfem_cli.train.metric_config import MetricTrainConfig

    class IndexSource:
        size = 8

        def frames(self, video: str, indices) -> np.ndarray:
            return np.broadcast_to(np.asarray(indices, np.uint8)[:, None, None, None], (len(indices), 8, 8, 3)).copy()

        def landmarks(self, video: str, indices) -> None:
            return None

    n = MetricTrainConfig().context
    assert 2 * n + 1 == 9                                   # TemporalDataloader: frames idx-4 … idx+4
    pair = ClipPair("k", "M001", "neutral", "happy", "a.mp4", "b.mp4", None, None,
                    tuple(range(20)), tuple(range(100, 120)))
    item = metric_mod.PairWindowDataset([pair], IndexSource(), context=n)[0]
    frames = ((item["target"][:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
    assert item["generated"].shape == (9, 3, 8, 8) and frames == list(range(9))
    seen = {}

    def fake_run(cfg: MetricTrainConfig, **kwargs) -> Path:
        seen["cfg"] = cfg
        return tmp_path

    monkeypatch.setattr(metric_mod, "train_metric", fake_run)
    res = CliRunner().invoke(app, ["train-metric", "--root", str(tmp_path), "--out", str(tmp_path), "--context", "2",
                                   "--daas-variant", "released", "--temporal-positions", "whole", "--prepare-only"])
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert (cfg.context, cfg.daas_variant, cfg.temporal_positions) == (2, "released", "whole")
    built = metric_mod.build_metric(MetricTrainConfig(arch="r18", backbone_weights="none", daas_variant="released",
                                                      temporal_positions="whole"))
    assert (built.config.daas_variant, built.config.temporal_positions) == ("released", "whole")
    help_text = _help("train-metric")
    for words in ("--daas-variant", "--temporal-positions", "Default 4 (9 frames)", "with replacement over the whole map"):
        assert words in help_text


# --------------------------------------------------------------------------- 12: NED's face mask
def test_ned_mask_mode_runs_batchnorm_on_each_image_as_ned_does() -> None:
    """NED's segment_face.py never calls eval(): BatchNorm normalises each (single-image) forward by its own
    per-channel mean and biased variance. A one-layer BatchNorm 'segmenter' makes that formula the logits."""
    from spfem_cli.face.mask import face_mask_from_logits, segment_faces

    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    with torch.no_grad():
        net[0].running_mean.copy_(torch.tensor([0.0, 5.0, 0.0]))   # eval mode would see no face at all
        net[0].running_var.fill_(1.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = np.empty((2, 256, 256, 3), np.uint8)
    images[...] = (120, 100, 100)
    images[0, 80:180, 60:200, 1] = 230                         # a bright green face region
    images[1, :, :, 1] = 200                                   # greener everywhere: over the *pair's* green mean,
    images[1, 40:120, 100:220, 1] = 240                        # so statistics shared by a batch would call it face
    masks = segment_faces(images, net, "cpu", input_range="ned", batch_size=16)

    x = images.astype(np.float64) / 255.0                      # NED: img_as_float32, no normalisation
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)                    # biased, as BatchNorm's training-mode statistics
    logits = torch.from_numpy((x - mean) / np.sqrt(var + 1e-5)).permute(0, 3, 1, 2).float()
    expected = face_mask_from_logits(logits)
    assert np.array_equal(masks, expected)
    assert 0.5 * 100 * 140 < masks[0].sum() <= 100 * 140 and 0.5 * 80 * 120 < masks[1].sum() <= 80 * 120
    # the module is left as it was: eval mode, running statistics and step counters untouched
    assert not net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert segment_faces(images, net, "cpu").sum() == 0      # eval mode (fsgan range) uses the running statistics
