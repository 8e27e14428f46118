import pytest
import torch
from diffusers import UNet2DConditionModel

from segdiff.errors import SegDiffInputError
from segdiff.model.pipeline import SegDiffPipeline


def test_segdiff_model_from_a_stable_diffusion_folder(tiny_sd2_dir):
    pipe = SegDiffPipeline.from_stable_diffusion(tiny_sd2_dir)
    assert pipe.unet.config.in_channels == 8 and pipe.unet.conv_in.in_channels == 8
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.cam.config.cross_attention_dim == pipe.unet.config.cross_attention_dim


def test_conv_in_keeps_the_pretrained_weights_copied_and_halved(tiny_sd2_dir):
    sd_unet = UNet2DConditionModel.from_pretrained(tiny_sd2_dir, subfolder="unet")
    pipe = SegDiffPipeline.from_stable_diffusion(tiny_sd2_dir)
    old, new = sd_unet.conv_in.weight, pipe.unet.conv_in.weight
    assert torch.equal(new[:, :4], old / 2) and torch.equal(new[:, 4:], old / 2)
    # The same latent in both halves sees exactly SD's first layer.
    latent = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = sd_unet.conv_in(latent)
        got = pipe.unet.conv_in(torch.cat([latent, latent], dim=1))
    torch.testing.assert_close(got, expected)


def test_a_segdiff_built_from_sd_saves_and_reloads(tiny_sd2_dir, tmp_path):
    SegDiffPipeline.from_stable_diffusion(tiny_sd2_dir).save_pretrained(tmp_path)
    assert SegDiffPipeline.from_pretrained(tmp_path).unet.config.in_channels == 8


def test_plain_stable_diffusion_folder_is_not_a_segdiff_model(tiny_sd2_dir):
    with pytest.raises(SegDiffInputError, match="StableDiffusionPipeline folder, not a segdiff"):
        SegDiffPipeline.from_pretrained(tiny_sd2_dir)


def test_folder_missing_stable_diffusion_parts_is_a_clear_error(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(SegDiffInputError, match="missing vae, text_encoder"):
        SegDiffPipeline.from_stable_diffusion(tmp_path)


def test_hub_id_without_network_is_a_clear_error(tmp_path):
    with pytest.raises(SegDiffInputError, match="cannot get model"):
        SegDiffPipeline.from_pretrained("nobody/not-a-model", cache_dir=str(tmp_path))


def test_a_tiny_model_from_scratch_starts_blind_to_the_mask_latent():
    from segdiff.model.tiny import build_tiny_components

    conv_in = build_tiny_components(seed=0)["unet"].conv_in
    assert conv_in.in_channels == 8
    assert torch.all(conv_in.weight[:, 4:] == 0)
    assert conv_in.weight[:, :4].abs().sum() > 0
