"""FLAME layer: chumpy-free loading through the restricted unpickler, template at zero, jaw opens the mouth."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models.flame import FLAME, FlamePickleError, load_flame_pickle, load_landmark_embedding, synthetic_flame
from spfem_cli.face.align import TEMPLATE_68
from spfem_cli.weights import WeightsError


def _install_fake_chumpy() -> dict[str, types.ModuleType]:
    """A stand-in ``chumpy`` whose Ch pickles like the real one (``__dict__`` minus caches, value in 'x')."""

    class Ch:
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self.dterms = ["x"]
            self._dirty_vars = set()
            self._parents = object()  # unpicklable in the real chumpy too: dropped by __getstate__
            self._cache = object()

        def __getstate__(self) -> dict:
            state = dict(self.__dict__)
            del state["_parents"], state["_cache"]
            return state

    class transpose(Ch):  # a chumpy reordering op: has no stored value 'x'
        def __getstate__(self) -> dict:
            return {"a": self.x, "axes": None, "dterms": ["a"]}

    mods = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch", "chumpy.reordering")}
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    transpose.__module__, transpose.__qualname__ = "chumpy.reordering", "transpose"
    mods["chumpy.ch"].Ch = Ch
    mods["chumpy.reordering"].transpose = transpose
    sys.modules.update(mods)
    return mods


def _write_chumpy_flame(path: Path, *, reordering: bool = False) -> dict:
    model, _ = synthetic_flame(TEMPLATE_68, grid=15)
    mods = _install_fake_chumpy()
    try:
        ch = mods["chumpy.ch"].Ch
        obj = dict(model)
        obj["shapedirs"] = ch(model["shapedirs"])
        obj["v_template"] = ch(model["v_template"])
        obj["J_regressor"] = sp.csc_matrix(model["J_regressor"])
        if reordering:
            obj["posedirs"] = mods["chumpy.reordering"].transpose(model["posedirs"])
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)  # the official file is a Python 2 protocol-2 pickle
    finally:
        for name in mods:
            sys.modules.pop(name, None)
    assert "chumpy" not in sys.modules
    return model


def test_tiny_chumpy_pickle_loads_without_chumpy(tmp_path: Path) -> None:
    model = _write_chumpy_flame(tmp_path / "generic_model.pkl")
    loaded = load_flame_pickle(tmp_path / "generic_model.pkl")
    for key in ("shapedirs", "v_template", "J_regressor", "posedirs", "weights", "f", "kintree_table"):
        np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(model[key]))
        assert isinstance(loaded[key], np.ndarray)
    flame = FLAME(loaded, synthetic_flame(TEMPLATE_68, grid=15)[1])
    assert flame.v_template.shape == (15 * 15 + 5, 3)


def test_chumpy_op_without_value_is_refused_with_message(tmp_path: Path) -> None:
    _write_chumpy_flame(tmp_path / "m.pkl", reordering=True)
    with pytest.raises(FlamePickleError, match="chumpy.reordering.transpose"):
        load_flame_pickle(tmp_path / "m.pkl")


def test_unpickler_refuses_classes_outside_the_whitelist(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(FlamePickleError, match="builtins.print"):
        load_flame_pickle(path)


def test_deca_style_embedding_with_torch_tensors_loads(tmp_path: Path) -> None:
    _, emb = synthetic_flame(TEMPLATE_68, grid=15)
    deca_like = dict(emb)  # DECA stores the dynamic contour as torch tensors inside the pickled dict
    deca_like["dynamic_lmk_faces_idx"] = torch.from_numpy(emb["dynamic_lmk_faces_idx"])
    deca_like["dynamic_lmk_bary_coords"] = torch.from_numpy(emb["dynamic_lmk_bary_coords"]).float()
    np.save(tmp_path / "landmark_embedding.npy", np.array(deca_like, dtype=object), allow_pickle=True)
    loaded = load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    for key, value in emb.items():
        np.testing.assert_allclose(loaded[key], np.asarray(value), rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def flame() -> FLAME:
    return FLAME(*synthetic_flame(TEMPLATE_68, grid=31))


def test_zero_coefficients_give_the_template(flame: FLAME) -> None:
    out = flame(torch.zeros(3, 100), torch.zeros(3, 50), torch.zeros(3, 6))
    assert torch.allclose(out.vertices, flame.v_template.expand(3, -1, -1), atol=1e-6)
    assert out.landmarks2d.shape == (3, 68, 3) and out.landmarks3d.shape == (3, 68, 3)


def test_shape_and_expression_move_the_mesh(flame: FLAME) -> None:
    base = flame(torch.zeros(1, 100), torch.zeros(1, 50), torch.zeros(1, 6)).vertices
    shaped = flame(torch.ones(1, 100), torch.zeros(1, 50), torch.zeros(1, 6)).vertices
    expr = flame(torch.zeros(1, 100), torch.ones(1, 50), torch.zeros(1, 6)).vertices
    assert (shaped - base).abs().max() > 1e-4 and (expr - base).abs().max() > 1e-4


def test_jaw_rotation_opens_the_mouth(flame: FLAME) -> None:
    pose = torch.zeros(4, 6)
    pose[:, 3] = torch.tensor([0.0, 0.1, 0.2, 0.3])  # jaw axis-angle, first component opens the mouth
    out = flame(torch.zeros(4, 100), torch.zeros(4, 50), pose)
    gap = (out.landmarks2d[:, 66] - out.landmarks2d[:, 62]).norm(dim=-1)  # inner lips, iBUG 62 / 66
    assert (gap[1:] > gap[:-1]).all() and gap[-1] > 3 * gap[0]
    upper_moved = (out.landmarks2d[-1, 62] - out.landmarks2d[0, 62]).norm()
    lower_moved = (out.landmarks2d[-1, 66] - out.landmarks2d[0, 66]).norm()
    assert upper_moved < 0.1 * lower_moved  # the lower lip moves with the jaw; the upper only by pose correctives


def test_full_15_pose_equals_deca_6_pose(flame: FLAME) -> None:
    pose6 = torch.tensor([[0.1, -0.2, 0.05, 0.2, 0.0, 0.01]])
    pose15 = torch.zeros(1, 15)
    pose15[:, :3], pose15[:, 6:9] = pose6[:, :3], pose6[:, 3:]
    a = flame(torch.zeros(1, 100), torch.zeros(1, 50), pose6).vertices
    b = flame(torch.zeros(1, 100), torch.zeros(1, 50), pose15).vertices
    assert torch.allclose(a, b)


def test_missing_gated_flame_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path))
    monkeypatch.delenv("SPFEM_WEIGHT_FLAME_GENERIC", raising=False)
    with pytest.raises(WeightsError, match="flame.is.tue.mpg.de"):
        FLAME.from_registry()
