"""Weights registry: every mission weight listed, sha256 enforced, user overrides, resumable fetch."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import pytest

from spfem_cli import weights as W

MISSION_WEIGHTS = {"fan_2d68", "s3fd", "arcface_r50", "arcface_resnet18_fad", "efficientface_affectnet7",
                   "syncnet_v2", "flame_generic", "deca_model", "fsgan_segmentation", "ned_translator",
                   "ned_meta_renderer", "vgg19_imagenet", "stccl_metric", "mediapipe_facemesh"}


def test_registry_lists_every_mission_weight():
    registry = W.load_registry()
    assert MISSION_WEIGHTS <= set(registry)
    assert registry["syncnet_v2"].size == 54_573_114
    for spec in registry.values():
        assert spec.file and spec.licence, spec.name
        if spec.gated:
            assert spec.register, f"{spec.name}: gated weights must say where to register"


def _toml(tmp_path, body):
    path = tmp_path / "w.toml"
    path.write_text(body)
    return path


def _serve(directory):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_fetch_downloads_verifies_and_rejects_mismatch(tmp_path, monkeypatch):
    served = tmp_path / "srv"
    served.mkdir()
    payload = b"weights" * 1000
    (served / "good.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    server = _serve(served)
    url = f"http://127.0.0.1:{server.server_port}/good.bin"
    toml = _toml(tmp_path, f'[good]\nfile = "good.bin"\nurls = ["{url}"]\nsha256 = "{digest}"\nlicence = "x"\n'
                           f'[bad]\nfile = "bad.bin"\nurls = ["{url}"]\nsha256 = "{"0" * 64}"\nlicence = "x"\n')
    monkeypatch.setenv("SPFEM_WEIGHTS_TOML", str(toml))
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    seen = []
    path = W.fetch("good", progress=lambda done, total: seen.append(done))
    assert path.read_bytes() == payload and seen[-1] == len(payload)
    assert W.resolve("good") == path
    with pytest.raises(W.WeightsError, match="sha256"):
        W.fetch("bad")
    assert not W.default_path(W.get_spec("bad")).exists()
    server.shutdown()


def test_download_resumes_from_partial_file(tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    payload = bytes(range(256)) * 512
    (served / "f.bin").write_bytes(payload)

    class RangeHandler(http.server.SimpleHTTPRequestHandler):
        ranges = []

        def do_GET(self):  # noqa: N802 - http.server API
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            RangeHandler.ranges.append(start)
            body = payload[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    (dest.parent / "f.bin.part").write_bytes(payload[:1000])
    W.download(f"http://127.0.0.1:{server.server_port}/f.bin", dest)
    assert RangeHandler.ranges == [1000]
    assert dest.read_bytes() == payload
    server.shutdown()


def test_gated_weight_explains_where_to_get_it():
    with pytest.raises(W.WeightsError, match="flame.is.tue.mpg.de"):
        W.fetch("flame_generic")
    with pytest.raises(W.WeightsError, match="missing weight 'flame_generic'"):
        W.resolve("flame_generic")


def test_user_file_override_is_used_with_a_warning(tmp_path, monkeypatch):
    mine = tmp_path / "my_syncnet.model"
    mine.write_bytes(b"x")
    monkeypatch.setenv("SPFEM_WEIGHT_SYNCNET_V2", str(mine))
    with pytest.warns(UserWarning, match="unverified"):
        assert W.resolve("syncnet_v2") == mine
    assert W.status("syncnet_v2") == "user file"


def test_local_toml_override(tmp_path, monkeypatch):
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path))
    mine = tmp_path / "vgg.pth"
    mine.write_bytes(b"x")
    (tmp_path / "weights.local.toml").write_text(f'[paths]\nvgg19_imagenet = "{mine}"\n')
    with pytest.warns(UserWarning):
        assert W.resolve("vgg19_imagenet") == mine
