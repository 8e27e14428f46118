import socket
import sys

from typer.testing import CliRunner

from segdiff.cli import app

runner = CliRunner()


def _demo(*args):
    return runner.invoke(app, ["demo", *map(str, args)])


def _assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_help_says_how_to_share_the_page():
    result = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "127.0.0.1" in result.output and "--host 0.0.0.0" in result.output


def test_without_gradio_says_how_to_install_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "segdiff.demo", raising=False)
    monkeypatch.setitem(sys.modules, "gradio", None)  # what a missing package looks like
    _assert_clean_error(_demo(), "the demo needs Gradio", 'pip install -e ".[demo]"')


def test_bad_port_and_model(tmp_path, tiny_sd2_dir):
    _assert_clean_error(_demo("--port", "70000"), "--port must be between 1 and 65535")
    _assert_clean_error(_demo("--model", tiny_sd2_dir, "--port", "7860"), "not a segdiff model")


def test_a_taken_port_is_a_clean_error(tiny_model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _demo("--model", tiny_model_dir, "--port", port)
    _assert_clean_error(result, f"cannot serve on 127.0.0.1:{port}")


def test_a_model_too_big_for_memory_is_a_clean_error(monkeypatch):
    def run_out(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9e12")

    monkeypatch.setattr("segdiff.model.loading.load_pipeline", run_out)
    _assert_clean_error(_demo("--port", "7860"), "out of memory", "--half-precision")
