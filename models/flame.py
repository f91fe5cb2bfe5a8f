"""FLAME head model (Li et al. 2017) as a torch module, loaded from the official ``generic_model.pkl``
without chumpy.

Why no chumpy: the official pickle stores some arrays as chumpy objects, and chumpy does not install on
current Python/numpy. :class:`FlameUnpickler` is a restricted unpickler: it resolves only a whitelist of
classes (numpy array reconstruction, scipy.sparse matrices, chumpy objects) and maps chumpy / scipy.sparse
classes to small stand-ins that keep the pickled state. chumpy's ``Ch.__getstate__`` pickles ``__dict__``
(minus its caches), so a ``Ch`` carries its value in the ``'x'`` entry; scipy.sparse matrices pickle
``data``/``indices``/``indptr``/``_shape``. Anything else raises :class:`FlamePickleError`.

Pose layout is FLAME's: 15 values = global 3 + neck 3 + jaw 3 + left eye 3 + right eye 3 (axis-angle).
DECA passes 6 (global + jaw); :meth:`FLAME.forward` accepts either.

Landmarks: with DECA's ``landmark_embedding.npy`` (static 51 + dynamic 17-point contour chosen by head yaw,
+ a full static 68 set) ``landmarks2d`` follows DECA exactly (dynamic contour first, then the 51 static
points) and ``landmarks3d`` is the full static 68 set. An embedding without the dynamic part (e.g. only
``full_lmk_faces_idx``/``full_lmk_bary_coords``) gives the static 68 for both.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

N_SHAPE = 100
N_EXP = 50
N_JOINTS = 5  # global, neck, jaw, left eye, right eye


class FlamePickleError(ValueError):
    """The FLAME / embedding pickle contains something outside the whitelist, or is malformed."""


class _ChumpyStandIn:
    """Receives a chumpy object's pickled ``__dict__``; its value is the ``'x'`` entry of a plain ``Ch``."""

    chumpy_class = "chumpy.ch.Ch"

    def __setstate__(self, state: dict) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        state = getattr(self, "state", {})
        if "x" in state:
            return np.asarray(_plain(state["x"]))
        raise FlamePickleError(f"unsupported chumpy object {self.chumpy_class} (no stored value 'x'); "
                               "convert the file to plain numpy with the official FLAME tools")


class _SparseStandIn:
    """Receives a pickled scipy.sparse matrix's state and rebuilds it as a dense array."""

    kind = "csc"

    def __setstate__(self, state: dict) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        import scipy.sparse as sp

        s = self.state
        shape = tuple(s.get("_shape", s.get("shape", ())))
        if self.kind in ("csc", "csr"):
            cls = sp.csc_matrix if self.kind == "csc" else sp.csr_matrix
            return np.asarray(cls((s["data"], s["indices"], s["indptr"]), shape=shape).toarray())
        if self.kind == "coo":
            row, col = (s["coords"] if "coords" in s else (s["row"], s["col"]))
            return np.asarray(sp.coo_matrix((s["data"], (row, col)), shape=shape).toarray())
        raise FlamePickleError(f"unsupported sparse matrix kind {self.kind}")


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *args: Any) -> torch.Tensor:
    """torch's pickled tensors (inside DECA's landmark_embedding.npy) without executing anything else."""
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {})


def _storage_from_bytes(data: bytes) -> Any:
    """A pickled torch storage: its bytes are a torch.save file, opened with ``weights_only=True``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _ordered_dict(*args: Any) -> dict:
    return dict(*args)


_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("copyreg", "_reconstructor"), ("builtins", "object"),
    ("_codecs", "encode"),  # Python 3 protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')
    ("builtins", "set"), ("builtins", "frozenset"),  # chumpy keeps e.g. _dirty_vars as a set
}
_SPARSE_KINDS = {"csc_matrix": "csc", "csr_matrix": "csr", "coo_matrix": "coo"}
_TORCH_SAFE = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): _ordered_dict,
}


class FlameUnpickler(pickle.Unpickler):
    """Restricted unpickler for FLAME model files: numpy, scipy.sparse and chumpy stand-ins only."""

    def __init__(self, file: Any, *, allow_torch: bool = False) -> None:
        super().__init__(file, encoding="latin1")
        self.allow_torch = allow_torch

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``__builtin__``, ``copy_reg``) are checked under their Python 3 spelling
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _NUMPY_ALLOWED:
            return super().find_class(module, name)
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (_ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})
        if module.startswith("scipy.sparse") and name in _SPARSE_KINDS:
            return type(name, (_SparseStandIn,), {"kind": _SPARSE_KINDS[name]})
        if self.allow_torch and (module, name) in _TORCH_SAFE:
            return _TORCH_SAFE[(module, name)]
        raise FlamePickleError(f"refusing to unpickle {module}.{name}: not part of a FLAME model file")


def _plain(obj: Any) -> Any:
    """Replace stand-ins by numpy arrays, recursively."""
    if isinstance(obj, _ChumpyStandIn | _SparseStandIn):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return np.array([_plain(v) for v in obj.ravel()], dtype=object).reshape(obj.shape)
    return obj


def load_flame_pickle(path: Path | str) -> dict[str, Any]:
    """Read ``generic_model.pkl`` (or a file of the same layout) into plain numpy arrays."""
    with open(path, "rb") as fh:
        raw = FlameUnpickler(fh).load()
    if not isinstance(raw, dict):
        raise FlamePickleError(f"{path}: expected a dict of FLAME arrays, got {type(raw).__name__}")
    model = _plain(raw)
    missing = [k for k in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
               if k not in model]
    if missing:
        raise FlamePickleError(f"{path}: not a FLAME model file (missing {', '.join(missing)})")
    return model


def load_landmark_embedding(path: Path | str) -> dict[str, np.ndarray]:
    """DECA's ``landmark_embedding.npy`` (a pickled dict holding numpy arrays and torch tensors) or an ``.npz``.

    The ``.npy`` pickle is read with the same restricted unpickler (torch tensors allowed, storages loaded
    ``weights_only``), never with ``np.load(allow_pickle=True)``.
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        shape, _, dtype = np.lib.format._read_array_header(fh, version)
        if not dtype.hasobject:
            raise FlamePickleError(f"{path}: expected a pickled dict inside the .npy file")
        arr = FlameUnpickler(fh, allow_torch=True).load()
    obj = _plain(arr)
    if isinstance(obj, np.ndarray):
        obj = obj.reshape(-1)[0] if shape == () or obj.size == 1 else obj
    if not isinstance(obj, dict):
        raise FlamePickleError(f"{path}: expected a dict of landmark arrays")
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------- geometry
def batch_rodrigues(rot_vecs: torch.Tensor) -> torch.Tensor:
    """Axis-angle N×3 → rotation matrices N×3×3."""
    angle = torch.norm(rot_vecs + 1e-8, dim=1, keepdim=True)
    axis = rot_vecs / angle
    cos, sin = torch.cos(angle)[:, :, None], torch.sin(angle)[:, :, None]
    rx, ry, rz = axis[:, 0], axis[:, 1], axis[:, 2]
    zeros = torch.zeros_like(rx)
    k = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)[None]
    return eye + sin * k + (1 - cos) * torch.bmm(k, k)


def rigid_transforms(rot_mats: torch.Tensor, joints: torch.Tensor, parents: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics along the kinematic tree.

    rot_mats B×J×3×3 (local), joints B×J×3 (rest). Returns posed joints B×J×3 and the skinning transforms
    B×J×4×4 that map rest-pose points to posed points (rest joint location removed).
    """
    batch, n_joints = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.zeros(batch, n_joints, 4, 4, dtype=joints.dtype, device=joints.device)
    local[..., :3, :3] = rot_mats
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1
    chain = [local[:, 0]]
    for j in range(1, n_joints):  # loop over the 5 joints of the tree, not over data
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, dim=1)
    posed_joints = world[..., :3, 3]
    offset = (world[..., :3, :3] @ joints.unsqueeze(-1)).squeeze(-1)
    skin = world.clone()
    skin[..., :3, 3] = world[..., :3, 3] - offset
    return posed_joints, skin


def vertices_to_landmarks(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor,
                          bary: torch.Tensor) -> torch.Tensor:
    """Barycentric landmarks: vertices B×V×3, face_idx B×L, bary B×L×3 → B×L×3."""
    tri = faces[face_idx]  # B×L×3
    batch_idx = torch.arange(vertices.shape[0], device=vertices.device)[:, None, None]
    corners = vertices[batch_idx, tri]  # B×L×3×3
    return (corners * bary.unsqueeze(-1)).sum(2)


def rot_mat_to_yaw(rot: torch.Tensor) -> torch.Tensor:
    """Rotation about the y axis (radians) of B×3×3 matrices, as DECA's dynamic-contour selection uses."""
    sy = torch.sqrt(rot[:, 0, 0] ** 2 + rot[:, 1, 0] ** 2)
    return torch.atan2(-rot[:, 2, 0], sy)


@dataclass
class FlameOutput:
    """vertices B×V×3 (FLAME units, y up, +z towards the camera); landmarks2d / landmarks3d B×68×3."""

    vertices: torch.Tensor
    landmarks2d: torch.Tensor
    landmarks3d: torch.Tensor


class FLAME(nn.Module):
    """FLAME: template + shape/expression blendshapes + pose correctives, linear blend skinning on 5 joints."""

    def __init__(self, model: dict[str, Any], embedding: dict[str, np.ndarray], *,
                 n_shape: int = N_SHAPE, n_exp: int = N_EXP) -> None:
        super().__init__()
        f32 = torch.float32
        shapedirs = np.asarray(model["shapedirs"], np.float64)
        n_total = shapedirs.shape[-1]
        if n_total < 300 + n_exp:
            raise FlamePickleError(f"shapedirs has {n_total} components; FLAME needs 300 shape + {n_exp} expression")
        dirs = np.concatenate([shapedirs[..., :n_shape], shapedirs[..., 300:300 + n_exp]], axis=-1)
        posedirs = np.asarray(model["posedirs"], np.float64)
        self.register_buffer("v_template", torch.tensor(np.asarray(model["v_template"]), dtype=f32))
        self.register_buffer("faces", torch.tensor(np.asarray(model["f"], np.int64)))
        self.register_buffer("shapedirs", torch.tensor(dirs, dtype=f32))
        self.register_buffer("posedirs", torch.tensor(posedirs.reshape(-1, posedirs.shape[-1]).T, dtype=f32))
        self.register_buffer("J_regressor", torch.tensor(np.asarray(model["J_regressor"]), dtype=f32))
        self.register_buffer("lbs_weights", torch.tensor(np.asarray(model["weights"]), dtype=f32))
        parents = np.asarray(model["kintree_table"])[0].astype(np.int64)
        parents[0] = -1
        self.parents = [int(p) for p in parents]
        self.n_shape, self.n_exp = n_shape, n_exp
        self._init_landmarks(embedding)

    def _init_landmarks(self, emb: dict[str, np.ndarray]) -> None:
        def buf(name: str, key: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
            self.register_buffer(name, torch.tensor(np.asarray(emb[key]).reshape(shape), dtype=dtype))

        buf("full_lmk_faces_idx", "full_lmk_faces_idx", torch.long, (68,))
        buf("full_lmk_bary_coords", "full_lmk_bary_coords", torch.float32, (68, 3))
        self.dynamic = "dynamic_lmk_faces_idx" in emb and "static_lmk_faces_idx" in emb
        if self.dynamic:
            buf("static_lmk_faces_idx", "static_lmk_faces_idx", torch.long, (51,))
            buf("static_lmk_bary_coords", "static_lmk_bary_coords", torch.float32, (51, 3))
            buf("dynamic_lmk_faces_idx", "dynamic_lmk_faces_idx", torch.long, (-1, 17))
            buf("dynamic_lmk_bary_coords", "dynamic_lmk_bary_coords", torch.float32, (-1, 17, 3))

    @classmethod
    def from_files(cls, model_path: Path | str, embedding_path: Path | str, **kwargs: Any) -> FLAME:
        return cls(load_flame_pickle(model_path), load_landmark_embedding(embedding_path), **kwargs)

    @classmethod
    def from_registry(cls, **kwargs: Any) -> FLAME:
        """Gated files via the weights registry (``flame_generic``, ``flame_landmark_embedding``)."""
        from spfem_cli.weights import resolve

        return cls.from_files(resolve("flame_generic"), resolve("flame_landmark_embedding"), **kwargs)

    def full_pose(self, pose: torch.Tensor, eye_pose: torch.Tensor | None = None,
                  neck_pose: torch.Tensor | None = None) -> torch.Tensor:
        """B×15 FLAME pose from DECA's 6 (global + jaw) or a full 15-vector."""
        if pose.shape[1] == 3 * N_JOINTS:
            return pose
        if pose.shape[1] != 6:
            raise ValueError(f"pose must have 6 (global+jaw) or 15 values, got {pose.shape[1]}")
        zeros = pose.new_zeros(pose.shape[0], 3)
        neck = zeros if neck_pose is None else neck_pose
        eyes = pose.new_zeros(pose.shape[0], 6) if eye_pose is None else eye_pose
        return torch.cat([pose[:, :3], neck, pose[:, 3:], eyes], dim=1)

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor,
                eye_pose: torch.Tensor | None = None, neck_pose: torch.Tensor | None = None) -> FlameOutput:
        """shape B×100, expression B×50, pose B×6 (DECA) or B×15 (FLAME), all axis-angle radians."""
        batch = shape.shape[0]
        full_pose = self.full_pose(pose, eye_pose, neck_pose)
        betas = torch.cat([shape, expression], dim=1)
        v_shaped = self.v_template + torch.einsum("bl,vkl->bvk", betas, self.shapedirs)
        joints = torch.einsum("jv,bvk->bjk", self.J_regressor, v_shaped)
        rot = batch_rodrigues(full_pose.reshape(-1, 3)).view(batch, -1, 3, 3)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).reshape(batch, -1)
        v_posed = v_shaped + (pose_feature @ self.posedirs).view(batch, -1, 3)
        _, skin = rigid_transforms(rot, joints, self.parents)
        per_vertex = torch.einsum("vj,bjmn->bvmn", self.lbs_weights, skin)
        vertices = (per_vertex[..., :3, :3] @ v_posed.unsqueeze(-1)).squeeze(-1) + per_vertex[..., :3, 3]

        full_idx = self.full_lmk_faces_idx.expand(batch, -1)
        full_bary = self.full_lmk_bary_coords.expand(batch, -1, -1)
        landmarks3d = vertices_to_landmarks(vertices, self.faces, full_idx, full_bary)
        if self.dynamic:
            dyn_idx, dyn_bary = self._dynamic_contour(full_pose)
            idx = torch.cat([dyn_idx, self.static_lmk_faces_idx.expand(batch, -1)], dim=1)
            bary = torch.cat([dyn_bary, self.static_lmk_bary_coords.expand(batch, -1, -1)], dim=1)
            landmarks2d = vertices_to_landmarks(vertices, self.faces, idx, bary)
        else:
            landmarks2d = landmarks3d
        return FlameOutput(vertices=vertices, landmarks2d=landmarks2d, landmarks3d=landmarks3d)

    def _dynamic_contour(self, full_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DECA's yaw-dependent jaw contour: the rotation of neck then global picks one of 79 contour sets."""
        batch = full_pose.shape[0]
        aa = full_pose.view(batch, -1, 3)[:, [1, 0]]  # neck, then its parent (global), as DECA's kinematic chain
        rots = batch_rodrigues(aa.reshape(-1, 3)).view(batch, 2, 3, 3)
        rel = torch.eye(3, dtype=rots.dtype, device=rots.device).expand(batch, -1, -1)
        for k in range(2):
            rel = rots[:, k] @ rel
        yaw = torch.round(torch.clamp(rot_mat_to_yaw(rel) * 180.0 / np.pi, max=39)).long()
        neg = yaw < 0
        yaw = torch.where(neg, torch.where(yaw < -39, torch.full_like(yaw, 78), 39 - yaw), yaw)
        yaw = yaw.clamp(0, self.dynamic_lmk_faces_idx.shape[0] - 1)
        return self.dynamic_lmk_faces_idx[yaw], self.dynamic_lmk_bary_coords[yaw]


# ------------------------------------------------------------------------------------- synthetic stand-in
def synthetic_flame(landmarks_2d: np.ndarray, *, grid: int = 41, scale: float = 0.1,
                    seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A tiny FLAME-layout model (NOT the real FLAME) for tests and benchmarks without the gated file.

    A bulged grid carries the 68 landmarks at ``landmarks_2d`` (68×2, x right / y down, any pixel frame;
    normalised here), lower-face vertices are skinned to a jaw joint behind the mouth, so a jaw rotation
    opens the mouth as in FLAME. Five extra unreferenced vertices anchor the joints (one-hot J_regressor).
    Returns (model dict in generic_model.pkl's layout, landmark embedding in DECA's layout).
    """
    rng = np.random.default_rng(seed)
    lm = np.asarray(landmarks_2d, np.float64)
    centre = (lm.min(0) + lm.max(0)) / 2
    half = (lm.max(0) - lm.min(0)).max() / 2
    lm = (lm - centre) / half * np.array([1.0, -1.0])  # [-1, 1], y up
    xs = np.linspace(-1.15, 1.15, grid)
    gx, gy = np.meshgrid(xs, xs)
    gz = 0.6 * np.sqrt(np.clip(1.6 - 0.55 * gx ** 2 - 0.35 * gy ** 2, 0, None))
    surface = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], 1)
    n_surf = len(surface)
    y_mouth = lm[60:68, 1].mean()
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    anchors = np.array([[0, 0, -0.4], [0, -0.9, -0.5], [0, y_mouth + 0.05, -0.6],
                        [eyes[0, 0], eyes[0, 1], 0.2], [eyes[1, 0], eyes[1, 1], 0.2]])
    v_template = np.concatenate([surface, anchors]) * scale
    n_verts = len(v_template)

    idx = np.arange(n_surf).reshape(grid, grid)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.uint32)

    weights = np.zeros((n_verts, N_JOINTS))
    jaw = (surface[:, 1] < y_mouth) & (np.abs(surface[:, 0]) < 0.75)
    weights[:n_surf, 2] = jaw
    weights[:n_surf, 1] = ~jaw
    for k in range(2):
        near = np.linalg.norm(surface[:, :2] - eyes[k], axis=1) < 0.08
        weights[:n_surf][near] = 0
        weights[:n_surf, 3 + k][near] = 1
    weights[n_surf:] = np.eye(N_JOINTS)
    j_reg = np.zeros((N_JOINTS, n_verts))
    j_reg[np.arange(N_JOINTS), n_surf + np.arange(N_JOINTS)] = 1

    poly = np.stack([np.ones(n_verts), *(v_template[:, :2] / scale).T, *(v_template[:, :2] / scale).T ** 2,
                     v_template[:, 0] * v_template[:, 1] / scale ** 2], 1)
    shapedirs = np.einsum("vp,pkl->vkl", poly, rng.normal(0, 2e-3 * scale, (poly.shape[1], 3, 400)))
    posedirs = np.einsum("vp,pkl->vkl", poly, rng.normal(0, 1e-3 * scale, (poly.shape[1], 3, 36)))
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)

    # landmarks sit on vertices (one-hot barycentrics); lips are kept on their side of the mouth line
    upper = set(range(48, 55)) | set(range(60, 65))
    lower = set(range(55, 60)) | set(range(65, 68))
    step = xs[1] - xs[0]
    face_of_vertex = np.full(n_verts, -1)
    face_of_vertex[faces[::-1, 0]] = np.arange(len(faces))[::-1]
    lmk_faces, lmk_bary = np.zeros(68, np.int64), np.zeros((68, 3))
    for k in range(68):
        ok = face_of_vertex[:n_surf] >= 0
        if k in upper:
            ok &= surface[:, 1] > y_mouth + 0.4 * step
        elif k in lower:
            ok &= surface[:, 1] < y_mouth - 0.4 * step
        dist = np.where(ok, np.linalg.norm(surface[:, :2] - lm[k], axis=1), np.inf)
        v = int(np.argmin(dist))
        lmk_faces[k], lmk_bary[k] = face_of_vertex[v], (1.0, 0.0, 0.0)
    model = {"v_template": v_template, "f": faces, "shapedirs": shapedirs, "posedirs": posedirs,
             "J_regressor": j_reg, "kintree_table": kintree, "weights": weights, "bs_style": "lbs",
             "bs_type": "lrotmin"}
    embedding = {"full_lmk_faces_idx": lmk_faces[None], "full_lmk_bary_coords": lmk_bary[None],
                 "static_lmk_faces_idx": lmk_faces[17:], "static_lmk_bary_coords": lmk_bary[17:],
                 "dynamic_lmk_faces_idx": np.tile(lmk_faces[None, :17], (79, 1)),
                 "dynamic_lmk_bary_coords": np.tile(lmk_bary[None, :17], (79, 1, 1))}
    return model, embedding
