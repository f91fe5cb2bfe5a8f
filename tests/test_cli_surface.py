"""The CLI's own surface, as users meet it: --version, help at 80 columns, --json/--quiet, weights
listing and verification, every missing weight named at once, a corrupt weight file in one line."""

from __future__ import annotations

import json

COMMANDS = ["edit", "preprocess", "probe", "train-metric", "analyze-metric", "eval", "train-renderer",
            "train-translator", "doctor", "weights list", "weights fetch", "weights verify", "weights path"]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_version_before_or_after_the_command(spfem):
    for args in (("--version",), ("edit", "--version")):
        result = spfem(*args)
        assert result.returncode == 0 and result.stdout.startswith("spfem "), result.stderr


def test_help_fits_80_columns_without_bool_metavars():
    from typer.testing import CliRunner

    from spfem_cli.app import app

    runner = CliRunner(env={"COLUMNS": "80"})
    for command in COMMANDS:
        result = runner.invoke(app, [*command.split(), "--help"], terminal_width=80)
        assert result.exit_code == 0, (command, result.output)
        assert "<bool>" not in result.output, command
        assert max(len(line) for line in result.output.splitlines()) <= 80, command
        assert "--out" in result.output or command in ("probe", "doctor", "weights list", "weights fetch",
                                                       "weights verify", "weights path"), command


def test_weights_list_shows_full_names_and_files(spfem):
    table = spfem("weights", "list")
    assert table.returncode == 0
    rows = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if line.count("│") > 3}
    assert "deca_uv_face_eye_mask" in rows and "arcface_resnet18_fad" in rows     # never cut or folded
    listing = json.loads(spfem("weights", "list", "--json").stdout)["weights"]
    files = {w["name"]: w["file"] for w in listing}
    assert files["s3fd"].endswith("/hub/checkpoints/s3fd-619a316812.pth")
    assert files["deca_uv_face_eye_mask"] in rows["deca_uv_face_eye_mask"]       # the whole path, one line


def test_weights_verify_with_nothing_installed_says_so(spfem, tmp_path):
    result = spfem("weights", "verify", env={"SPFEM_HOME": str(tmp_path), "TORCH_HOME": str(tmp_path / "t")})
    assert result.returncode == 0
    assert "no weights installed" in result.stderr and str(tmp_path) in result.stderr


def test_doctor_json(spfem):
    result = spfem("doctor", "--json")
    report = json.loads(result.stdout)
    assert report["device (auto)"] and "[" not in report["backend ned"]            # markup stripped


def test_every_missing_weight_is_named_in_one_line_before_work(spfem, small_clip, tmp_path):
    result = spfem("train-renderer", small_clip.path, "-o", tmp_path / "renderer")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(_lines(result.stderr)) == 1
    for name in ("ned_meta_renderer", "stccl_metric", "vgg19_imagenet", "deca_model", "flame_generic"):
        assert name in result.stderr
    assert not (tmp_path / "renderer").exists()
    fan = spfem("edit", small_clip.path, "-e", "happy", "--tracker", "fan", "-o", tmp_path / "o.mp4")
    assert fan.returncode == 1 and "fan_2d68" in fan.stderr and "s3fd" in fan.stderr


def test_a_corrupt_weight_file_is_one_line_naming_it(spfem, small_clip, tmp_path):
    bad = tmp_path / "not-a-checkpoint.pth"
    bad.write_bytes(b"\x00garbage, not a pickle or a zip archive" * 50)
    env = {"SPFEM_WEIGHT_FAN_2D68": str(bad), "SPFEM_WEIGHT_S3FD": str(bad)}
    result = spfem("preprocess", small_clip.path, "-o", tmp_path / "pre", "--tracker", "fan", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "UnpicklingError" not in result.stderr.replace("(UnpicklingError)", "")
    error = [line for line in _lines(result.stderr) if line.startswith("error:")]
    assert len(error) == 1 and str(bad) in error[0] and "SPFEM_WEIGHT_" in error[0]


def test_an_option_left_without_its_value_is_a_usage_error_naming_both_options(tmp_path, monkeypatch):
    """``--side-by-side -o out.mp4`` once wrote the side-by-side video to a file named "-o" and took out.mp4
    for a second input; an option's own value is never another of the command's option names."""
    from typer.testing import CliRunner

    from spfem_cli.app import app

    monkeypatch.chdir(tmp_path)          # nothing may be written, not even a file named "-o"
    runner = CliRunner()
    for args, option, following in ((["edit", "talk.mp4", "--side-by-side", "-o", "out.mp4"], "--side-by-side", "-o"),
                                    (["edit", "talk.mp4", "-e", "-o", "out.mp4"], "-e", "-o"),
                                    (["edit", "talk.mp4", "-e", "happy", "--plot", "--overwrite"], "--plot", "--overwrite"),
                                    (["eval", "--dataset", "--pair", "a.mp4"], "--dataset", "--pair")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert f"{option} needs a value, but the option {following} follows it" in result.output, result.output
        assert not list(tmp_path.iterdir())
    # A value that only starts with "-" is still a value (a negative number, a file named so), and "--" ends options.
    from typer.main import get_command

    from spfem_cli.cli_parsing import option_taken_as_value

    edit = get_command(app).commands["edit"]
    assert option_taken_as_value(edit, ["talk.mp4", "--start", "-1", "-o", "-x.mp4"]) is None
    assert option_taken_as_value(edit, ["--", "-e", "-o"]) is None
    assert option_taken_as_value(edit, ["-e", "--plot=x.png"]) == ("-e", "--plot=x.png")
