"""The attention loss: targets from label maps, recording only while training."""

import pytest
import torch

from segdiff.depth_coding import NONE_LABEL
from segdiff.errors import SegDiffInputError
from segdiff.model.tiny import build_tiny_components
from segdiff.training.attention import AttentionSupervision, attention_targets, layer_grid

SMALL_UNET = {"block_out_channels": [16, 32], "norm_num_groups": 8, "attention_head_dim": 4}


def test_targets_are_the_class_shares_of_each_cell_and_none_goes_to_its_token():
    labels = torch.tensor([[[0, 1, 1, 1], [0, 0, NONE_LABEL, 1]]], dtype=torch.uint8)  # 2 x 4
    targets = attention_targets(labels, tokens=3, none_index=2, grid=(1, 2))
    left, right = targets[0]
    torch.testing.assert_close(left, torch.tensor([0.75, 0.25, 0.0]))
    torch.testing.assert_close(right, torch.tensor([0.0, 0.75, 0.25]))
    torch.testing.assert_close(targets.sum(-1), torch.ones(1, 2))


def test_without_a_none_token_none_pixels_have_no_target():
    labels = torch.full((1, 2, 2), NONE_LABEL, dtype=torch.uint8)
    labels[0, 0, 0] = 1
    targets = attention_targets(labels, tokens=2, none_index=None, grid=(1, 1))
    torch.testing.assert_close(targets[0, 0], torch.tensor([0.0, 0.25]))


def test_layer_grids_follow_the_unets_halving_of_non_square_latents():
    assert layer_grid(6 * 10, (6, 10)) == (6, 10)
    assert layer_grid(3 * 5, (6, 10)) == (3, 5)
    assert layer_grid(2 * 3, (6, 10)) == (2, 3)  # 3 x 5 halved, rounding up
    with pytest.raises(ValueError):
        layer_grid(7, (6, 10))


def tiny_unet():
    return build_tiny_components(seed=0, overrides={"unet": SMALL_UNET})["unet"]


def unet_inputs(unet, tokens: int = 3):
    sample = torch.randn(2, unet.config.in_channels, 8, 8)
    context = torch.randn(2, tokens, unet.config.cross_attention_dim)
    return sample, torch.tensor([999, 999]), context


def test_recorded_attention_is_supervised_and_trains_the_cross_attention():
    unet = tiny_unet()
    supervision = AttentionSupervision(unet, weight=1.0)
    sample, timesteps, context = unet_inputs(unet)
    with supervision.recording():
        unet(sample, timesteps, context)
    assert supervision.recorded, "no cross-attention layer recorded"
    for probs in supervision.recorded:
        assert probs.shape[0] == 2 and probs.shape[2] == 3
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    labels = torch.randint(0, 3, (2, 32, 32), dtype=torch.uint8)
    loss = supervision.loss(labels, None, (8, 8))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    queries = [p for n, p in unet.named_parameters() if "attn2.to_q" in n]
    assert queries and all(p.grad is not None and p.grad.abs().sum() > 0 for p in queries)


def test_inference_keeps_the_fast_processors_output():
    unet = tiny_unet()
    sample, timesteps, context = unet_inputs(unet)
    with torch.no_grad():
        before = unet(sample, timesteps, context).sample
    supervision = AttentionSupervision(unet, weight=1.0)
    with torch.no_grad(), supervision.recording():
        after = unet(sample, timesteps, context).sample
    assert supervision.recorded == []  # nothing recorded without gradients
    torch.testing.assert_close(before, after)
    with supervision.recording():
        recorded = unet(sample, timesteps, context).sample  # the explicit path, same result
    torch.testing.assert_close(recorded, before, rtol=1e-4, atol=1e-5)


def test_a_unet_without_cross_attention_is_refused():
    unet = build_tiny_components(
        seed=0,
        overrides={
            "unet": {
                **SMALL_UNET,
                "down_block_types": ["DownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "UpBlock2D"],
                "mid_block_type": None,
            }
        },
    )["unet"]
    with pytest.raises(SegDiffInputError, match="cross-attention"):
        AttentionSupervision(unet, weight=1.0)
