"""`make bench` rewrites only the rows of the areas it ran: other rows and the notes after the table stay."""

import pytest

from spfem_cli.benchmarks import runner


def test_rerun_keeps_other_rows_and_the_notes_after_the_table(tmp_path, monkeypatch):
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n| area | what | value | unit | note |\n|---|---|---|---|---|\n"
                     "| video | decode | 1 | ms | kept |\n\n## Pictures\n\n![d3](docs/images/emotions_d3.png)\n")
    monkeypatch.setattr(runner, "BENCH_FILE", bench)
    runner.main(["no_such_area"])
    text = bench.read_text()
    assert "| video | decode | 1 | ms | kept |" in text
    assert text.rstrip().endswith("## Pictures\n\n![d3](docs/images/emotions_d3.png)")
    assert text.count("## Pictures") == 1


def test_picture_tools_are_not_areas():
    assert "emotion_sheets" not in runner._modules()
    assert "runner" not in runner._modules()


def test_a_bad_setting_stops_the_bench_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("kept as it was\n")
    monkeypatch.setattr(runner, "BENCH_FILE", bench)
    monkeypatch.setenv("SPFEM_BENCH_RETRACKER", "dlib")
    with pytest.raises(SystemExit) as stopped:
        runner.main(["emotion"])
    message = str(stopped.value.code)
    assert message.startswith("bench emotion: SPFEM_BENCH_RETRACKER='dlib' is not a tracker") and "\n" not in message
    assert bench.read_text() == "kept as it was\n"
