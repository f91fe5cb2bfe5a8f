"""Weights by name: one registry (``weights.toml``) for every pretrained file spfem uses.

Code asks ``resolve("syncnet_v2")`` and gets a verified path, or a :class:`WeightsError` whose
one-line message names the command that fixes it. Downloads resume, are verified against the
recorded sha256 (or the torch.hub-style hash prefix in the file name) and a mismatching file is
removed, never kept. A user can point any name at their own file; such files are used with a
warning when they cannot be verified.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tomllib
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from spfem_cli.errors import SpfemError

REGISTRY_FILE = Path(__file__).resolve().parent.parent / "weights.toml"


class WeightsError(SpfemError):
    """A weight is missing, gated or corrupt; the message says how to fix it in one line."""


@dataclass(frozen=True)
class WeightSpec:
    """One entry of ``weights.toml``."""

    name: str
    file: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    licence: str = ""
    gated: bool = False
    manual: bool = False
    bundled: bool = False
    trained_here: bool = False
    register: str = ""
    used_by: str = ""
    preprocess: str = ""
    install_to: str = "cache"
    extra: dict = field(default_factory=dict)

    @property
    def downloadable(self) -> bool:
        return bool(self.urls) and not (self.gated or self.manual or self.bundled)


def spfem_home() -> Path:
    """Cache root: ``$SPFEM_HOME`` or ``~/.cache/spfem``."""
    return Path(os.environ.get("SPFEM_HOME", Path.home() / ".cache" / "spfem")).expanduser()


def weights_dir() -> Path:
    return spfem_home() / "weights"


def torch_hub_checkpoints() -> Path:
    """Where face-alignment (torch.hub) looks for its files."""
    torch_home = os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


_KNOWN = {f for f in WeightSpec.__dataclass_fields__ if f not in ("name", "extra")}


def load_registry(path: Path | None = None) -> dict[str, WeightSpec]:
    """Parse ``weights.toml`` into specs, keyed by name."""
    path = Path(os.environ.get("SPFEM_WEIGHTS_TOML", path or REGISTRY_FILE))
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    specs = {}
    for name, entry in raw.items():
        kwargs = {k: v for k, v in entry.items() if k in _KNOWN}
        kwargs["urls"] = tuple(kwargs.get("urls", ()))
        extra = {k: v for k, v in entry.items() if k not in _KNOWN}
        specs[name] = WeightSpec(name=name, extra=extra, **kwargs)
    return specs


def get_spec(name: str) -> WeightSpec:
    registry = load_registry()
    if name not in registry:
        raise WeightsError(f"unknown weight '{name}'; `spfem weights list` shows the known names")
    return registry[name]


def _user_overrides() -> dict[str, str]:
    local = spfem_home() / "weights.local.toml"
    paths: dict[str, str] = {}
    if local.is_file():
        with open(local, "rb") as fh:
            paths.update(tomllib.load(fh).get("paths", {}))
    return paths


def user_override(name: str) -> Path | None:
    """A path the user pointed this name at (environment first, then weights.local.toml)."""
    env = os.environ.get(f"SPFEM_WEIGHT_{name.upper()}")
    value = env or _user_overrides().get(name)
    return Path(value).expanduser() if value else None


def default_path(spec: WeightSpec) -> Path:
    base = torch_hub_checkpoints() if spec.install_to == "torch_hub" else weights_dir()
    return base / spec.file


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(spec: WeightSpec, path: Path) -> bool | None:
    """True: hash matches; False: mismatch; None: nothing recorded to check against."""
    if spec.size is not None and path.stat().st_size != spec.size and spec.sha256 is None:
        return False
    if spec.sha256:
        return sha256_of(path) == spec.sha256.lower()
    if spec.sha256_prefix:
        return sha256_of(path).startswith(spec.sha256_prefix.lower())
    if spec.size is not None:
        return True
    return None


def how_to_get(spec: WeightSpec) -> str:
    if spec.bundled:
        return f"'{spec.name}' ships inside its Python package; run `make install`"
    if spec.trained_here:
        return f"'{spec.name}' is produced by spfem itself (`spfem train-metric`); or set SPFEM_WEIGHT_{spec.name.upper()}"
    if spec.downloadable:
        return f"run `spfem weights fetch {spec.name}`"
    where = spec.register or (spec.urls[0] if spec.urls else "its authors")
    kind = "gated" if spec.gated else "manual download"
    return (f"'{spec.name}' is {kind}: get it from {where} and put it at {default_path(spec)} "
            f"(or set SPFEM_WEIGHT_{spec.name.upper()})")


def resolve(name: str, *, check: bool = True) -> Path:
    """Path of a usable file for ``name``, or :class:`WeightsError` saying how to get it."""
    spec = get_spec(name)
    override = user_override(name)
    if override is not None:
        if not override.is_file():
            raise WeightsError(f"SPFEM_WEIGHT_{name.upper()} / weights.local.toml points at a missing file: {override}")
        if check and verify(spec, override) is not True:
            warnings.warn(f"using unverified file for '{name}': {override}", stacklevel=2)
        return override
    path = default_path(spec)
    if not path.is_file():
        raise WeightsError(f"missing weight '{name}': {how_to_get(spec)}")
    if check and verify(spec, path) is False:
        raise WeightsError(f"weight '{name}' at {path} fails its sha256 check: delete it and {how_to_get(spec)}")
    return path


def status(name: str) -> str:
    """Short state for listings: present / missing / user file / bundled."""
    spec = get_spec(name)
    if spec.bundled:
        return "bundled"
    if user_override(name) is not None:
        return "user file" if user_override(name).is_file() else "user file missing"
    return "present" if default_path(spec).is_file() else "missing"


def missing(names: Iterable[str]) -> list[str]:
    """The names among ``names`` with no usable file here (bundled and user-pointed existing files count)."""
    return [n for n in names if status(n) in ("missing", "user file missing")]


def require(names: Iterable[str], purpose: str) -> None:
    """Raise one :class:`WeightsError` naming every missing weight of ``names`` and how to get each;
    called before any work, so a run never stops half-way for the next missing file."""
    absent = missing(dict.fromkeys(names))
    if not absent:
        return
    fetchable = [n for n in absent if get_spec(n).downloadable]
    others = [how_to_get(get_spec(n)) for n in absent if n not in fetchable]
    parts = ([f"run `spfem weights fetch {' '.join(fetchable)}`"] if fetchable else []) + others
    raise WeightsError(f"{purpose} needs {len(absent)} weight(s) not installed here ({', '.join(absent)}): "
                       + "; ".join(parts))


def where(name: str) -> Path:
    """Where ``name``'s file is or would be: the user's override, else the default location."""
    return user_override(name) or default_path(get_spec(name))


def name_of_file(path: Path) -> str | None:
    """The registry name whose file is ``path`` (default location or user override), if any."""
    try:
        target = Path(path).resolve()
    except OSError:
        return None
    for name in load_registry():
        if where(name).resolve() == target:
            return name
    return None


_LOADERS = (("torch/serialization.py", "load", "f"),          # torch.load(f, ...)
            ("numpy/lib/npyio.py", "load", "file"),             # np.load(file, ...)
            ("numpy/lib/_npyio_impl.py", "load", "file"))


def unreadable_file_message(exc: BaseException) -> str | None:
    """One line for an exception raised while ``torch.load``/``np.load`` read a file (corrupt, truncated,
    not a checkpoint at all), naming the file and the weight it stands for; None for other exceptions.

    Found from the traceback, so every loader in the code base is covered without wrapping each call.
    """
    path = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        filename = code.co_filename.replace("\\", "/")
        for suffix, function, argument in _LOADERS:
            if code.co_name == function and filename.endswith(suffix):
                value = tb.tb_frame.f_locals.get(argument)
                if isinstance(value, (str, os.PathLike)):
                    path = Path(value)
        tb = tb.tb_next
    if path is None:
        return None
    name = name_of_file(path)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = f"{exc.__class__.__name__}: {first}" if 0 < len(first) <= 80 else exc.__class__.__name__
    if name is None:
        return f"cannot read {path}: not a valid checkpoint or array file ({reason}); check the file you passed"
    if user_override(name) is not None:
        fix = f"point SPFEM_WEIGHT_{name.upper()} (or weights.local.toml) at a good copy"
    elif get_spec(name).downloadable:
        fix = f"run `spfem weights fetch {name} --force`"
    else:
        fix = f"install a good copy with `spfem weights fetch {name} --from FILE`"
    return f"cannot read weight '{name}' at {path}: the file is corrupt or not that checkpoint ({reason}); {fix}"


ProgressHook = Callable[[int, int | None], None]


def download(url: str, dest: Path, *, expected_size: int | None = None,
             progress: ProgressHook | None = None, timeout: float = 60.0) -> Path:
    """Download to ``dest`` with resume: bytes go to ``dest.part`` and are renamed when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "spfem"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = (have + int(length)) if length else expected_size
        with open(part, "ab" if resumed else "wb") as out:
            done = have
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    os.replace(part, dest)
    return dest


def fetch(name: str, *, progress: ProgressHook | None = None, force: bool = False) -> Path:
    """Download a public weight into the cache and verify it; gated ones raise with instructions."""
    spec = get_spec(name)
    if not spec.downloadable:
        raise WeightsError(how_to_get(spec))
    path = default_path(spec)
    if path.is_file() and not force and verify(spec, path) is not False:
        return path
    errors = []
    for url in spec.urls:
        try:
            download(url, path, expected_size=spec.size, progress=progress)
        except OSError as exc:  # URLError is an OSError
            errors.append(f"{url}: {exc}")
            continue
        if verify(spec, path) is False:
            path.unlink(missing_ok=True)
            raise WeightsError(f"downloaded '{name}' does not match its recorded sha256; removed it")
        return path
    raise WeightsError(f"could not download '{name}': {'; '.join(errors)}")


# Converters of published layouts, by name: "module:function(source, dest) -> one-line note, or None when
# source is already in spfem's layout (then it is copied as is)"; they raise SpfemError for foreign files.
IMPORTERS = {"stccl_metric": "spfem_cli.train.stccl_release:import_file"}


def install_user_file(name: str, source: Path) -> Path:
    """Copy a user's file into the cache under the expected name (used by `weights fetch --from`)."""
    spec = get_spec(name)
    dest = default_path(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    module, _, func = IMPORTERS.get(name, ":").partition(":")
    note = getattr(importlib.import_module(module), func)(source, tmp) if module else None
    if note is None:
        shutil.copyfile(source, tmp)
    else:
        warnings.warn(note, stacklevel=2)
    ok = verify(spec, tmp)
    if ok is False:
        tmp.unlink()
        raise WeightsError(f"{source} does not match the recorded sha256 of '{name}'")
    if ok is None:
        warnings.warn(f"'{name}' has no recorded hash; installed {source} unverified", stacklevel=2)
    os.replace(tmp, dest)
    return dest
