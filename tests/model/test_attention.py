import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from segdiff.model.attention import (
    MAX_KEYS_FOR_KEYS_FIRST,
    FewKeysAttnProcessor,
    use_few_keys_attention,
)
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.model.tiny import build_tiny_components


def _layer(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    return Attention(query_dim=32, cross_attention_dim=16, heads=8, dim_head=4).eval()


def _forward(layer, processor, hidden, context=None, mask=None):
    """``layer``'s output with ``processor``, and the gradient of its squared sum with respect
    to ``hidden``."""
    layer.set_processor(processor)
    x = hidden.clone().requires_grad_(True)
    out = layer(x, encoder_hidden_states=context, attention_mask=mask)
    out.square().sum().backward()
    return out.detach(), x.grad


def _both(layer, hidden, context=None, mask=None):
    """Outputs and input gradients of the default processor and FewKeysAttnProcessor."""
    return [
        _forward(layer, processor, hidden, context, mask)
        for processor in (AttnProcessor2_0(), FewKeysAttnProcessor())
    ]


@pytest.mark.parametrize("keys", [1, 9, MAX_KEYS_FOR_KEYS_FIRST])
def test_keys_first_equals_default_attention(keys, monkeypatch):
    hidden, context = torch.randn(3, 50, 32), torch.randn(3, keys, 16)
    default, default_grad = _forward(_layer(), AttnProcessor2_0(), hidden, context)

    def fused_kernel_used(*args, **kwargs):
        raise AssertionError("the keys-first path should not call the fused kernel")

    # The keys-first path must really run, not hand over to the default one.
    monkeypatch.setattr(F, "scaled_dot_product_attention", fused_kernel_used)
    out, grad = _forward(_layer(), FewKeysAttnProcessor(), hidden, context)
    torch.testing.assert_close(out, default, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, default_grad, rtol=1e-4, atol=1e-4)


def test_keys_first_honours_the_padding_mask():
    """The UNet turns encoder_attention_mask into a (B, 1, keys) bias; padded keys get none
    of the attention, whatever they hold."""
    hidden, context = torch.randn(2, 40, 32), torch.randn(2, 9, 16)
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[1, 6:] = False
    bias = ((1 - keep.float()) * -10000.0)[:, None]
    (default, _), (few_keys, _) = _both(_layer(), hidden, context, bias)
    torch.testing.assert_close(few_keys, default, rtol=1e-5, atol=1e-5)

    changed = context.clone()
    changed[1, 6:] = 100.0
    few_keys_changed, _ = _forward(_layer(), FewKeysAttnProcessor(), hidden, changed, bias)
    torch.testing.assert_close(few_keys_changed, few_keys, rtol=1e-5, atol=1e-5)


def test_self_attention_and_long_contexts_use_the_default_kernel():
    layer = _layer()
    hidden = torch.randn(2, 30, 32)
    long_context = torch.randn(2, MAX_KEYS_FOR_KEYS_FIRST + 1, 16)
    self_layer = Attention(query_dim=32, heads=8, dim_head=4).eval()
    for attn, context in ((layer, long_context), (self_layer, None)):
        (default, _), (few_keys, _) = _both(attn, hidden, context)
        assert torch.equal(few_keys, default)


class OwnProcessor(AttnProcessor2_0):
    """A processor installed for another purpose (as training's attention recording is)."""


def test_pipeline_installs_it_and_keeps_other_processors():
    components = build_tiny_components(seed=0, none_token=True)
    unet = components["unet"]
    names = list(unet.attn_processors)
    own = OwnProcessor()
    unet.set_attn_processor(
        {name: own if name == names[0] else AttnProcessor2_0() for name in names}
    )
    reference = copy.deepcopy(unet)

    SegDiffPipeline(**components)
    processors = unet.attn_processors
    assert processors[names[0]] is own
    assert all(isinstance(processors[n], FewKeysAttnProcessor) for n in names[1:])

    use_few_keys_attention(unet)  # a second install changes nothing
    assert unet.attn_processors[names[0]] is own

    sample = torch.randn(3, unet.config.in_channels, 16, 16)
    context = torch.randn(3, 5, unet.config.cross_attention_dim)
    with torch.no_grad():
        got = unet(sample, 10, encoder_hidden_states=context).sample
        want = reference(sample, 10, encoder_hidden_states=context).sample
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
