"""`segdiff demo`: the web page to try segmentation in a browser."""

from typing import Annotated

import typer

from segdiff.cli.common import (
    HalfPrecisionOption,
    PermuteClassesOption,
    console,
    fail,
    reports_input_errors,
    reports_out_of_memory,
)


@reports_input_errors
@reports_out_of_memory("The model does not fit this device: try --half-precision on a GPU.")
def command(
    model: Annotated[
        str | None,
        typer.Option(
            help="segdiff model folder, training run, checkpoint or hub id (default: the "
            "bundled tiny model)."
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to serve on. The default serves this machine only; --host 0.0.0.0 "
            "shares the page with your network (anyone who reaches the port can use it)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 7860,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: auto).")] = None,
    half_precision: HalfPrecisionOption = False,
    permute_classes: PermuteClassesOption = None,
) -> None:
    """Serve a web page to segment images: upload one, type class names, see the result.

    Needs Gradio, the package's "demo" extra. The model loads once; requests are served one
    at a time, in order.
    """
    if not 1 <= port <= 65535:
        raise fail(f"--port must be between 1 and 65535, got {port}")
    try:
        from segdiff.demo import build_demo
    except ImportError as err:
        if not (err.name or "").startswith("gradio"):
            raise
        raise fail(
            f"the demo needs Gradio, which is not installed ({err}); install it with: "
            'pip install -e ".[demo]"'
        ) from None
    from segdiff.model.loading import load_pipeline

    pipe, notes = load_pipeline(model, device, half_precision)
    for note in notes:
        console.print(note, markup=False)
    demo = build_demo(pipe, model, notes, permute_classes)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=False,
            ssr_mode=False,
            quiet=True,
            prevent_thread_lock=True,
        )
    except OSError as err:
        raise fail(f"cannot serve on {host}:{port}: {err}") from None
    console.print(f"Serving the demo at {demo.local_url} (Ctrl+C stops it)", markup=False)
    demo.block_thread()
