"""Export to ONNX graphs that onnxruntime runs, checked against PyTorch before they are kept.

Five graphs (symbolic dimensions in brackets; see ``segdiff_onnx.json`` in an export):

- ``text_encoder.onnx``: input_ids [batch, tokenizer max length] int64 -> embedding
  [batch, dim], the pooled (end-of-text) state that segdiff uses as a class's text embedding.
- ``cam.onnx``: class_embeddings [batch, classes, dim], levels [batch, classes] (float32, gray
  level / 255), attention_mask [batch, classes] bool -> context [batch, classes, dim], zero at
  padding. Kept apart from the text encoder because class embeddings are computed once per
  name and cached, while the CAM runs for every class list. A CAM with a "none" token
  (``none_token`` in ``segdiff_onnx.json``) appends it: context [batch, classes + 1, dim], and
  the UNet's attention mask is then the class mask with a True column appended.
- ``unet.onnx``: sample [batch, 8, height, width] (image latent + noisy mask latent),
  timestep [batch or 1] int64, encoder_hidden_states [batch, classes, dim],
  encoder_attention_mask [batch, classes] bool -> prediction [batch, 4, height, width]
  (``tokens`` = classes + 1 in place of ``classes`` with a none token).
- ``vae_encoder.onnx``: image [batch, 3, H, W] in [-1, 1] -> latent [batch, 4, latent_height,
  latent_width]: the mean of the latent distribution times the VAE scaling factor, i.e.
  exactly what the UNet takes.
- ``vae_decoder.onnx``: latent (same scale) -> image [batch, 3, H, W] in about [-1, 1].

Image sides must be multiples of ``latent_multiple`` (``segdiff_onnx.json``), latent sides of
``latent_multiple / vae_scale_factor``: the VAE encoder and UNet graphs refuse other sizes,
with an error naming the node ``image_sides_must_be_multiples_of_N`` (or ``latent_...``),
rather than return a misaligned result.

Weights of 1 KiB and more are always stored as external data (``<graph>.onnx.data``), so
graphs of any size stay under protobuf's 2 GB limit and every export has the same layout.

Verification: each graph runs in onnxruntime (CPU) on random inputs of two different shapes
(batch, spatial size and class count all change), and its output is compared with the
PyTorch module it came from (for the CAM: the pipeline's own CAM on unpadded class lists).
A graph passes when ``max |onnx - torch| <= TOLERANCE[dtype] * max(1, max |torch|)``;
``verification.json`` records every difference, and any failure fails the export.
"""

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segdiff import depth_coding
from segdiff.errors import SegDiffInputError
from segdiff.export.common import StepCallback, check_dtype, write_json, write_records
from segdiff.export.source import resolve_source
from segdiff.export.staging import staged_output
from segdiff.model.loading import ONNX_DESCRIPTION
from segdiff.model.pipeline import SegDiffPipeline

OPSET = 17
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
"""Largest allowed difference from PyTorch, relative to the output's magnitude when above 1."""
EXTERNAL_DATA_THRESHOLD = 1024
"""Tensors of at least this many bytes go to the graph's external data file."""
INSTALL_HINT = "ONNX export needs onnx and onnxruntime: pip install segdiff[onnx]"


class ExportVerificationError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond the tolerance: a fault of the export,
    not of the user's input."""


@dataclass
class Graph:
    """One graph to export: the module traced, its named inputs, how to check it."""

    name: str
    module: nn.Module
    inputs: dict[str, dict[int, str]]
    """Input name -> its symbolic (dynamic) axes."""
    outputs: dict[str, dict[int, str]]
    example: Callable[[int], dict[str, torch.Tensor]]
    """Random inputs of shape variant 0 or 1 (seeded)."""
    description: str
    reference: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None
    """What PyTorch computes for those inputs; default: the module itself."""

    def expected(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.reference(inputs) if self.reference else self.module(**inputs)


# Symbolic axes of the graphs' inputs and outputs.
BATCH = {0: "batch"}
CLASS_LIST = {0: "batch", 1: "classes"}
CONTEXT = {0: "batch", 1: "tokens"}
"""The context of a CAM with a none token: classes + 1 tokens."""
SPATIAL = {0: "batch", 2: "height", 3: "width"}
LATENT = {0: "batch", 2: "latent_height", 3: "latent_width"}


def export_onnx(
    model: str | Path,
    out: str | Path,
    dtype: str = "fp32",
    overwrite: bool = False,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Export ``model`` (run, model, checkpoint folder or hub id) to ONNX graphs in ``out``.

    Returns the verification report (also written to ``out/verification.json``). Raises
    SegDiffInputError for bad input and ExportVerificationError when a graph is off by more
    than the tolerance; ``out`` is then left as it was.
    """
    step = on_step or (lambda _: None)
    onnx, onnxruntime = _import_onnx()
    torch_dtype = check_dtype(dtype)
    if dtype not in TOLERANCE:
        raise SegDiffInputError(
            f"ONNX export supports {' and '.join(TOLERANCE)}, not {dtype}: onnxruntime has "
            f"almost no {dtype} kernels, so the graphs could neither be checked nor run."
        )
    source = resolve_source(model)
    with staged_output(Path(out), overwrite, source.read_paths) as staging:
        step(f"Loading the {source.describe()}")
        pipe = source.load()
        if torch_dtype != torch.float32:
            pipe.to(torch_dtype)
        graphs = build_graphs(pipe)
        checks = {}
        for graph in graphs:
            step(f"Exporting {graph.name}.onnx")
            _export_graph(onnx, graph, staging / f"{graph.name}.onnx")
            step(f"Checking {graph.name}.onnx in onnxruntime")
            checks[graph.name] = _verify(onnxruntime, graph, staging / f"{graph.name}.onnx", dtype)
        report = {
            "dtype": dtype,
            "tolerance": TOLERANCE[dtype],
            "rule": "max_abs_diff <= tolerance * max(1, reference_max_abs), every check",
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
            "passed": all(check["passed"] for check in checks.values()),
            "graphs": checks,
        }
        if not report["passed"]:
            failed = [
                f"{name} (max difference {check['max_abs_diff']:.3g})"
                for name, check in checks.items()
                if not check["passed"]
            ]
            raise ExportVerificationError(
                f"the ONNX graphs {', '.join(failed)} differ from PyTorch by more than the "
                f"{dtype} tolerance {TOLERANCE[dtype]} (scaled by the output magnitude above "
                "1); nothing was written."
            )
        step("Writing the tokenizer, scheduler, graph description and model card")
        write_json(report, staging / "verification.json")
        pipe.tokenizer.save_pretrained(staging / "tokenizer")
        pipe.scheduler.save_pretrained(staging / "scheduler")
        write_json(describe(onnx, pipe, graphs, staging), staging / ONNX_DESCRIPTION)
        write_records(staging, pipe, source, "onnx", [dtype])
    return report


def _import_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise SegDiffInputError(f"{INSTALL_HINT} ({err})") from err
    return onnx, onnxruntime


class _TextEncoderGraph(nn.Module):
    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids).pooler_output


class _CamGraph(nn.Module):
    """The CAM on padded tensors: the pipeline's CAM takes a list of unpadded class lists,
    which a graph cannot; padding rows come out zero as they do there."""

    def __init__(self, cam: nn.Module):
        super().__init__()
        self.cam = cam

    def forward(
        self, class_embeddings: torch.Tensor, levels: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        context = class_embeddings + self.cam.level_embedding(levels)
        context = context * attention_mask.unsqueeze(-1).to(context.dtype)
        if not self.cam.config.none_token:
            return context
        none = self.cam.none_token().expand(context.shape[0], 1, -1)
        return torch.cat([context, none.to(context.dtype)], dim=1)


class _SidesCheck(nn.Module):
    """Passes a [batch, channels, height, width] tensor through, but refuses one whose height
    or width is not a multiple of ``multiple``: reshaping it into blocks of that size fails,
    in PyTorch and in onnxruntime, whose error names this module (registered under a name
    that says the rule) instead of giving a wrong shape further on."""

    def __init__(self, multiple: int):
        super().__init__()
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        m = self.multiple
        blocks = x.reshape(batch, channels, height // m, m, width // m, m)
        return blocks.reshape(batch, channels, height, width)


class _CheckedSides(nn.Module):
    """A graph whose spatial input must have sides that are multiples of ``multiple``."""

    def __init__(self, what: str, multiple: int):
        super().__init__()
        self.check_name = f"{what}_sides_must_be_multiples_of_{multiple}"
        self.add_module(self.check_name, _SidesCheck(multiple))

    def checked(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_submodule(self.check_name)(x)


class _UNetGraph(_CheckedSides):
    def __init__(self, unet: nn.Module, multiple: int):
        super().__init__("latent", multiple)
        self.unet = unet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.unet(
            self.checked(sample),
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            return_dict=False,
        )[0]


class _VaeEncoderGraph(_CheckedSides):
    def __init__(self, vae: nn.Module, multiple: int):
        super().__init__("image", multiple)
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        moments = self.vae.encoder(self.checked(image))
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        # The mean is the first half of the moments' channels. Slicing a fixed count (rather
        # than diffusers' chunk) keeps the latent's channel axis a number in the graph.
        mean = moments[:, : self.vae.config.latent_channels]
        return mean * self.vae.config.scaling_factor


class _VaeDecoderGraph(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent / self.vae.config.scaling_factor).sample


class ExampleInputs:
    """Seeded random inputs for every graph, at two shape variants (0 and 1) that differ in
    batch, spatial size and class count, so a shape frozen by tracing fails verification."""

    def __init__(self, pipe: SegDiffPipeline):
        self.dtype = pipe.unet.dtype
        self.dim = pipe.unet.config.cross_attention_dim
        self.latent_channels = pipe.vae.config.latent_channels
        self.vae_scale_factor = pipe.vae_scale_factor
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps
        self.none_token = pipe.cam.config.none_token
        unit = pipe.latent_multiple // pipe.vae_scale_factor  # smallest latent side
        # (batch, latent height, latent width, classes) of the two variants
        self.shapes = [(1, unit, 2 * unit, 3), (2, 2 * unit, unit, 5)]
        self.tokenizer = pipe.tokenizer
        special = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id}
        special.add(self.tokenizer.pad_token_id)
        self.ordinary = torch.tensor([i for i in range(len(self.tokenizer)) if i not in special])

    @staticmethod
    def generator(variant: int) -> torch.Generator:
        return torch.Generator().manual_seed(variant)

    def token_ids(self, variant: int) -> dict[str, torch.Tensor]:
        batch, length = (1, 3)[variant], self.tokenizer.model_max_length
        g = self.generator(variant)
        ids = self.ordinary[torch.randint(len(self.ordinary), (batch, length), generator=g)]
        ids[:, 0] = self.tokenizer.bos_token_id
        for row in ids:
            end = int(torch.randint(2, length, (1,), generator=g))
            row[end] = self.tokenizer.eos_token_id
            row[end + 1 :] = self.tokenizer.pad_token_id
        return {"input_ids": ids}

    def class_lists(self, variant: int) -> dict[str, torch.Tensor]:
        batch, _, _, classes = self.shapes[variant]
        g = self.generator(variant)
        counts = [classes] + [int(torch.randint(1, classes + 1, (1,), generator=g))] * (batch - 1)
        mask = torch.arange(classes)[None] < torch.tensor(counts)[:, None]
        levels = torch.zeros(batch, classes)
        for i, count in enumerate(counts):
            levels[i, :count] = torch.from_numpy(depth_coding.gray_levels(count) / 255.0)
        embeddings = torch.randn(batch, classes, self.dim, generator=g).to(self.dtype)
        return {"class_embeddings": embeddings, "levels": levels, "attention_mask": mask}

    def unet_inputs(self, variant: int) -> dict[str, torch.Tensor]:
        batch, height, width, _ = self.shapes[variant]
        g = self.generator(variant)
        context = self.class_lists(variant)
        steps = batch if variant == 0 else 1  # one timestep per sample, or one for the batch
        sample = torch.randn(batch, 2 * self.latent_channels, height, width, generator=g)
        tokens, mask = context["class_embeddings"], context["attention_mask"]
        if self.none_token:  # the CAM's context: one more token, always attended to
            none = torch.randn(batch, 1, self.dim, generator=g).to(self.dtype)
            tokens = torch.cat([tokens, none], dim=1)
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.bool)], dim=1)
        return {
            "sample": sample.to(self.dtype),
            "timestep": torch.randint(self.num_train_timesteps, (steps,)),
            "encoder_hidden_states": tokens,
            "encoder_attention_mask": mask,
        }

    def image(self, variant: int) -> dict[str, torch.Tensor]:
        batch, height, width, _ = self.shapes[variant]
        size = (batch, 3, height * self.vae_scale_factor, width * self.vae_scale_factor)
        pixels = torch.rand(size, generator=self.generator(variant)) * 2 - 1
        return {"image": pixels.to(self.dtype)}

    def latent(self, variant: int) -> dict[str, torch.Tensor]:
        batch, height, width, _ = self.shapes[variant]
        size = (batch, self.latent_channels, height, width)
        return {"latent": torch.randn(size, generator=self.generator(variant)).to(self.dtype)}


def context_axes(pipe: SegDiffPipeline) -> dict[int, str]:
    """Axes of the UNet's context: one token per class, plus the CAM's none token if any."""
    return CONTEXT if pipe.cam.config.none_token else CLASS_LIST


def build_graphs(pipe: SegDiffPipeline) -> list[Graph]:
    """The five graphs of ``pipe``, with random example inputs of two shapes each."""
    examples = ExampleInputs(pipe)
    return [
        text_encoder_graph(pipe, examples),
        cam_graph(pipe, examples),
        unet_graph(pipe, examples),
        vae_encoder_graph(pipe, examples),
        vae_decoder_graph(pipe, examples),
    ]


def text_encoder_graph(pipe: SegDiffPipeline, examples: ExampleInputs) -> Graph:
    return Graph(
        name="text_encoder",
        module=_TextEncoderGraph(pipe.text_encoder).eval(),
        inputs={"input_ids": BATCH},
        outputs={"embedding": BATCH},
        example=examples.token_ids,
        description="token ids of one prompt per row, padded to the tokenizer's maximum "
        "length -> pooled (end-of-text) embedding",
    )


def cam_graph(pipe: SegDiffPipeline, examples: ExampleInputs) -> Graph:
    def unpadded_lists(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pipeline's own CAM on the class lists without their padding."""
        embeddings, masks = inputs["class_embeddings"], inputs["attention_mask"]
        return pipe.cam([rows[mask] for rows, mask in zip(embeddings, masks, strict=True)])[0]

    none = ""
    if pipe.cam.config.none_token:
        none = (
            ", then the CAM's none token (one more row; append a True column to the mask for "
            "the UNet)"
        )
    return Graph(
        name="cam",
        module=_CamGraph(pipe.cam).eval(),
        inputs={"class_embeddings": CLASS_LIST, "levels": CLASS_LIST, "attention_mask": CLASS_LIST},
        outputs={"context": context_axes(pipe)},
        example=examples.class_lists,
        description="class embeddings in class-list order, gray level / 255 of each class "
        "(round(255 * (k + 1) / K) / 255 for class k of K), mask (True = real class) -> UNet "
        f"context, zero at padding{none}",
        reference=unpadded_lists,
    )


def unet_graph(pipe: SegDiffPipeline, examples: ExampleInputs) -> Graph:
    return Graph(
        name="unet",
        module=_UNetGraph(pipe.unet, pipe.latent_multiple // pipe.vae_scale_factor).eval(),
        inputs={
            "sample": SPATIAL,
            "timestep": {0: "timestep_batch"},
            "encoder_hidden_states": context_axes(pipe),
            "encoder_attention_mask": context_axes(pipe),
        },
        outputs={"prediction": SPATIAL},
        example=examples.unet_inputs,
        description="concat(image latent, noisy mask latent) on channels, DDIM timestep, CAM "
        f"context -> the scheduler's {pipe.scheduler.config.prediction_type} target",
    )


def vae_encoder_graph(pipe: SegDiffPipeline, examples: ExampleInputs) -> Graph:
    return Graph(
        name="vae_encoder",
        module=_VaeEncoderGraph(pipe.vae, pipe.latent_multiple).eval(),
        inputs={"image": SPATIAL},
        outputs={"latent": LATENT},
        example=examples.image,
        description="image in [-1, 1], sides multiples of latent_multiple -> latent mean "
        "times the VAE scaling factor",
        reference=lambda inputs: (
            pipe.vae.encode(inputs["image"]).latent_dist.mean * pipe.vae.config.scaling_factor
        ),
    )


def vae_decoder_graph(pipe: SegDiffPipeline, examples: ExampleInputs) -> Graph:
    return Graph(
        name="vae_decoder",
        module=_VaeDecoderGraph(pipe.vae).eval(),
        inputs={"latent": LATENT},
        outputs={"image": SPATIAL},
        example=examples.latent,
        description="latent (as the encoder gives it) -> image in about [-1, 1]; segdiff "
        "averages its 3 channels to one gray map",
    )


def _export_graph(onnx, graph: Graph, dest: Path) -> None:
    """Trace ``graph`` to ``dest``, its weights moved to external data."""
    example = graph.example(0)
    with tempfile.TemporaryDirectory(dir=dest.parent) as scratch, torch.no_grad():
        traced = Path(scratch) / dest.name
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
            # onnxscript (not a segdiff dependency); tracing also warns about every shape
            # read in Python. The two-shape verification is what catches a frozen shape.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph.module,
                tuple(example.values()),
                str(traced),  # a str: the exporter writes external data only for those
                dynamo=False,
                opset_version=OPSET,
                input_names=list(graph.inputs),
                output_names=list(graph.outputs),
                dynamic_axes={**graph.inputs, **graph.outputs},
            )
        proto = onnx.load(traced)
        onnx.save_model(
            proto,
            dest,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{dest.name}.data",
            size_threshold=EXTERNAL_DATA_THRESHOLD,
        )
    onnx.checker.check_model(str(dest))


def _verify(onnxruntime, graph: Graph, path: Path, dtype: str) -> dict[str, Any]:
    """Run the saved graph and PyTorch on both input shapes; record the differences."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runs = []
    for variant in (0, 1):
        inputs = graph.example(variant)
        with torch.no_grad():
            expected = graph.expected(inputs).float().numpy()
        feed = {name: tensor.numpy() for name, tensor in inputs.items()}
        actual = session.run(None, feed)[0].astype(np.float32)
        if actual.shape != expected.shape:
            difference = float("inf")
        else:
            difference = float(np.abs(actual - expected).max())
        magnitude = float(np.abs(expected).max())
        allowed = TOLERANCE[dtype] * max(1.0, magnitude)
        runs.append(
            {
                "inputs": {name: list(tensor.shape) for name, tensor in inputs.items()},
                "max_abs_diff": difference,
                "reference_max_abs": magnitude,
                "allowed": allowed,
                "passed": difference <= allowed,
            }
        )
    return {
        "max_abs_diff": max(run["max_abs_diff"] for run in runs),
        "passed": all(run["passed"] for run in runs),
        "runs": runs,
    }


def describe(onnx, pipe: SegDiffPipeline, graphs: list[Graph], folder: Path) -> dict[str, Any]:
    """``segdiff_onnx.json``: every graph's inputs and outputs as the saved graphs declare
    them (a string dimension is symbolic), and the settings needed to run them."""

    def spec(value) -> dict[str, Any]:
        tensor = value.type.tensor_type
        return {
            "name": value.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
            "shape": [dim.dim_param or dim.dim_value for dim in tensor.shape.dim],
        }

    entries = {}
    for graph in graphs:
        proto = onnx.load(str(folder / f"{graph.name}.onnx"), load_external_data=False)
        entries[graph.name] = {
            "file": f"{graph.name}.onnx",
            "description": graph.description,
            "inputs": [spec(value) for value in proto.graph.input],
            "outputs": [spec(value) for value in proto.graph.output],
        }
    return {
        "format": "segdiff-onnx",
        "format_version": 1,
        "opset": OPSET,
        "graphs": entries,
        "pipeline": {
            **asdict(pipe.defaults),
            "latent_multiple": pipe.latent_multiple,
            "vae_scale_factor": pipe.vae_scale_factor,
            "none_token": pipe.cam.config.none_token,
            "gray_level": "round(255 * (k + 1) / K) for class k of K; 0 = none",
            "tokenizer": "tokenizer/ (pad every prompt to its model_max_length)",
            "scheduler": "scheduler/scheduler_config.json (DDIM)",
        },
    }
