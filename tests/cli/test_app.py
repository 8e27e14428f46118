"""What every command shares: the version, one output option name, parsing before heavy
imports, one rule for exit codes."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import segdiff
from segdiff.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"segdiff {segdiff.__version__}"


@pytest.mark.parametrize("command", ["prepare", "train", "infer", "eval", "export"])
def test_every_command_that_writes_takes_output_and_o(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--output" in result.output and "-o" in result.output
    if command in ("prepare", "export"):
        assert "--out " in result.output  # kept as an alias where it existed


def test_help_states_the_exit_codes():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    assert "0 done; 2 bad input" in text and "1 a failure of segdiff itself" in text
    assert "130 interrupted (Ctrl-C)" in text


def test_an_argument_error_comes_before_torch_is_imported():
    """Parse first: heavy libraries are imported only when work starts."""
    code = (
        "import sys; from segdiff.cli import app\n"
        "try:\n    app(['infer', '--bogus'])\nexcept SystemExit as done:\n    code = done.code\n"
        "print(code, sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[0] == "2 []", done.stdout + done.stderr
