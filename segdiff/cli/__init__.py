"""The ``segdiff`` command: one Typer app, one module per subcommand.

Subcommand modules import only what parsing needs; torch, diffusers and the data code are
imported inside each command, so an argument error (or --help) shows at once.
"""

from typing import Annotated

import typer

from segdiff import __version__
from segdiff.cli import demo, export, infer, prepare, train
from segdiff.cli import eval as eval_command
from segdiff.cli.common import fail
from segdiff.errors import SegDiffInputError
from segdiff.imageio import apply_max_image_pixels

app = typer.Typer(
    name="segdiff",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"segdiff {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Open-vocabulary semantic segmentation with a fine-tuned Stable Diffusion 2.

    Exit codes: 0 done; 2 bad input (arguments, missing or corrupt files, a run that skipped
    some of them, out of memory, a full disk); 1 a failure of segdiff itself (a bug, or an
    export that fails its check against PyTorch); 130 interrupted (Ctrl-C).
    """
    try:
        apply_max_image_pixels()
    except SegDiffInputError as err:
        raise fail(str(err)) from None


app.command("prepare")(prepare.command)
app.command("train")(train.command)
app.command("infer")(infer.command)
app.command("eval")(eval_command.command)
app.command("export")(export.command)
app.command("demo")(demo.command)


def main() -> None:
    app()
