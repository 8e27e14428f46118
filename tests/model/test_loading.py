"""load_pipeline: the device, precision and memory layout a loaded model runs in."""

import pytest
import torch
from PIL import Image

from segdiff.model.loading import load_pipeline


def test_loaded_model_runs_channels_last(tiny_model_dir):
    pipe, _ = load_pipeline(tiny_model_dir, "cpu")
    assert pipe.dtype == torch.float32
    for conv in (pipe.unet.conv_in, pipe.vae.decoder.conv_in):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_half_precision_on_a_cpu_is_bf16_autocast_where_the_cpu_has_it(
    tiny_model_dir, monkeypatch, native_bf16
):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native_bf16)
    pipe, notes = load_pipeline(tiny_model_dir, "cpu", half_precision=True)
    assert pipe.unet.dtype == pipe.vae.dtype == torch.float32
    autocast_seen = []
    pipe.unet.register_forward_pre_hook(
        lambda module, args: autocast_seen.append(torch.is_autocast_enabled("cpu"))
    )
    out = pipe(Image.new("RGB", (20, 12)), ["a", "b"], ensemble_size=2)
    assert out.labels[0].shape == (12, 20)
    assert autocast_seen and set(autocast_seen) == {native_bf16}
    if native_bf16:
        assert not notes
    else:
        assert any("no native bf16" in note for note in notes)
