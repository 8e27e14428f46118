"""The demo web page: drop an image, type class names, look at the result.

A Gradio app over the functions `segdiff infer` uses (class-list parsing, ``segment_image``,
``write_segmentation``), so the page and the command give the same labels for the same image,
classes and seed. Gradio is an optional extra: ``pip install -e ".[demo]"``.
"""

import os
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr
import numpy as np

from segdiff import visualize
from segdiff.class_lists import resolve_classes
from segdiff.errors import SegDiffInputError
from segdiff.imageio import load_rgb
from segdiff.inference import infer_settings, segment_image, write_segmentation
from segdiff.memory import is_out_of_memory, out_of_memory_message
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.vocabularies import VOCABULARY_NAMES

EXAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "examples" / "shapes.png"
EXAMPLE_CLASSES = "background, circle, square, triangle"
TABLE_HEADERS = ["class", "pixels (%)"]


class Segmenter:
    """One loaded pipeline serving the page's requests, one at a time.

    The page's event hands over its inputs unprocessed (``preprocess=False``): the image
    arrives as Gradio's record of the uploaded file (a path inside Gradio's upload folder,
    checked by Gradio), not yet read, so segdiff's own reader opens it, as `segdiff infer`
    does, and names a corrupt file instead of failing inside Gradio.

    One run at a time: the pipeline's scheduler keeps the current run's timesteps, and each
    run writes its files to one folder, emptied at its start (Gradio has copied the previous
    run's files into its own cache by then). The page's queue runs one request at a time;
    the lock keeps it so for any other caller.
    """

    def __init__(
        self,
        pipe: SegDiffPipeline,
        model: str | None = None,
        permute_classes: bool | None = None,
    ):
        self.pipe = pipe
        self.model = model
        self.permute_classes = permute_classes
        self._lock = threading.Lock()
        self._scratch = tempfile.TemporaryDirectory(prefix="segdiff-demo-")

    def __call__(
        self,
        image: dict | None,
        classes: str,
        denoise_steps: float,
        ensemble_size: float,
        processing_res: float,
        seed: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[list], list[str]]:
        """Overlay, colored label map, uncertainty view (None with one ensemble member), class
        table and the files `segdiff infer` writes."""
        path = (image or {}).get("path")
        upload_name = Path((image or {}).get("orig_name") or path or "image").name
        try:
            if not path:
                raise SegDiffInputError("no image given; upload or paste one, or pick an example")
            class_names = resolve_classes(classes or "", read_files=False)
            settings = infer_settings(
                self.pipe,
                self.model,
                denoise_steps=_whole_number("denoising steps", denoise_steps, minimum=1),
                ensemble_size=_whole_number("ensemble size", ensemble_size, minimum=1),
                processing_res=_whole_number("processing resolution", processing_res, minimum=0),
                seed=_whole_number("seed", seed, minimum=0),
                permute_classes=self.permute_classes,
            )
            progress(0.0, desc="reading the image")
            rgb = load_rgb(path)
            with self._lock:
                progress(
                    0.1,
                    desc=f"segmenting: {settings.ensemble_size} runs "
                    f"of {settings.num_inference_steps} steps",
                )
                result = segment_image(self.pipe, rgb, class_names, settings, upload_name)
                progress(0.9, desc="writing the files")
                output_dir = Path(self._scratch.name) / "result"
                shutil.rmtree(output_dir, ignore_errors=True)
                paths = write_segmentation(result, output_dir, Path(upload_name).stem)
        except SegDiffInputError as err:
            # The message `segdiff infer` gives, naming the upload rather than Gradio's copy.
            message = str(err).replace(path, upload_name) if path else str(err)
            raise gr.Error(message, title="Cannot segment", print_exception=False) from None
        except (MemoryError, RuntimeError) as err:
            if not is_out_of_memory(err):
                raise
            advice = "Lower the processing resolution or the ensemble size, or use a smaller image."
            raise gr.Error(
                out_of_memory_message(err, advice), title="Cannot segment", print_exception=False
            ) from None
        record = result.record
        table = [[name, round(100 * record["fractions"][name], 2)] for name in class_names]
        table.append(["(none)", round(100 * record["none_fraction"], 2)])
        return (
            np.asarray(result.overlay),
            visualize.colorize(result.labels, len(class_names)),
            None if result.uncertainty_color is None else np.asarray(result.uncertainty_color),
            table,
            [str(written) for written in paths.values()],
        )


def _whole_number(name: str, value: float | str | None, minimum: int) -> int:
    """A setting as the page or an API client sent it (unprocessed), checked, as an int."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or number < minimum:
        raise SegDiffInputError(
            f"{name} must be a whole number of at least {minimum}, got {value!r}"
        )
    return int(number)


def build_demo(
    pipe: SegDiffPipeline,
    model: str | None = None,
    notes: list[str] | None = None,
    permute_classes: bool | None = None,
) -> gr.Blocks:
    """The page for ``pipe`` (loaded once by the caller); ``notes`` are shown above it.
    ``permute_classes`` None keeps the model's default."""
    # Gradio's telemetry and version check are HTTP calls; segdiff never phones home.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    segment = Segmenter(pipe, model, permute_classes)
    config = pipe.config
    with gr.Blocks(title="segdiff demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "# segdiff\nOpen-vocabulary semantic segmentation with a diffusion model: give an "
            "image and any list of class names." + "".join(f"\n\n{note}" for note in notes or [])
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="image",
                    type="filepath",
                    elem_id="image",
                    sources=["upload", "clipboard"],
                    height=320,
                )
                classes = gr.Textbox(
                    label="classes",
                    elem_id="classes",
                    placeholder="cat, sofa, window",
                    info='Comma-separated names, or a built-in vocabulary ("voc21", "ade150", '
                    "...), which the buttons below fill in.",
                )
                with gr.Row():
                    for name in VOCABULARY_NAMES:
                        button = gr.Button(name, size="sm", min_width=60)
                        button.click(fn=None, js=f"() => {name!r}", outputs=classes)
                with gr.Accordion("accuracy and speed", open=False):
                    steps = gr.Slider(
                        1,
                        100,
                        value=config.default_denoising_steps,
                        step=1,
                        label="denoising steps",
                    )
                    ensemble = gr.Slider(
                        1,
                        32,
                        value=config.default_ensemble_size,
                        step=1,
                        label="ensemble size (runs combined by vote)",
                    )
                    resolution = gr.Slider(
                        0,
                        2048,
                        value=config.default_processing_resolution,
                        step=8,
                        label="processing resolution (long edge; 0 = native)",
                    )
                    seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
                if EXAMPLE_IMAGE.is_file():
                    gr.Examples(
                        [[str(EXAMPLE_IMAGE), EXAMPLE_CLASSES]],
                        inputs=[image, classes],
                        elem_id="examples",
                    )
            with gr.Column():
                overlay = gr.Image(
                    label="overlay", elem_id="overlay", format="png", interactive=False
                )
                with gr.Row():
                    labels = gr.Image(
                        label="label map", elem_id="labels", format="png", interactive=False
                    )
                    uncertainty = gr.Image(
                        label="uncertainty (measured with 2 or more ensemble members)",
                        elem_id="uncertainty",
                        format="png",
                        interactive=False,
                    )
                table = gr.Dataframe(
                    headers=TABLE_HEADERS, label="classes", elem_id="class-table", interactive=False
                )
                files = gr.File(
                    label="download: the files segdiff infer writes",
                    file_count="multiple",
                    elem_id="files",
                )
        run.click(
            segment,
            inputs=[image, classes, steps, ensemble, resolution, seed],
            outputs=[overlay, labels, uncertainty, table, files],
            preprocess=False,
            concurrency_limit=1,
            api_name="segment",
        )
    return demo.queue()
