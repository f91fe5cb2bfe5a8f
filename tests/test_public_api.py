"""The public Python API: every advertised name resolves, lazily, to the object the CLI uses."""

import subprocess
import sys

import spfem_cli


def test_every_public_name_resolves_to_its_module_object():
    import importlib

    for name in spfem_cli.__all__:
        if name == "__version__":
            continue
        module = importlib.import_module(spfem_cli._API[name])
        assert getattr(spfem_cli, name) is getattr(module, name)


def test_import_is_light():
    code = "import sys, spfem_cli; print(any(m in sys.modules for m in ('torch', 'cv2', 'mediapipe')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_unknown_name_is_an_attribute_error():
    try:
        spfem_cli.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")
