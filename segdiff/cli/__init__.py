"""The ``segdiff`` command: one Typer app, one module per subcommand."""

import typer

from segdiff.cli import demo, export, infer, prepare, train
from segdiff.cli import eval as eval_command

app = typer.Typer(
    name="segdiff",
    help="Open-vocabulary semantic segmentation with a fine-tuned Stable Diffusion 2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("prepare")(prepare.command)
app.command("train")(train.command)
app.command("infer")(infer.command)
app.command("eval")(eval_command.command)
app.command("export")(export.command)
app.command("demo")(demo.command)


def main() -> None:
    app()
