import torch

from segdiff.model.cam import ContentAttentionModule


def _embeddings(num_classes, dim=16, seed=0):
    return torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed))


def test_untrained_cam_passes_text_embeddings_through():
    cam = ContentAttentionModule(cross_attention_dim=16)
    embeddings = _embeddings(3)
    context, mask = cam([embeddings])
    assert torch.equal(context[0], embeddings)
    assert mask.tolist() == [[True, True, True]]


def test_swapping_two_classes_swaps_their_levels():
    torch.manual_seed(0)
    cam = ContentAttentionModule(cross_attention_dim=16)
    torch.nn.init.normal_(cam.level_mlp[-1].weight)  # as after training: the level path is live
    a, b = _embeddings(2)
    (ab, ba), _ = cam([torch.stack([a, b]), torch.stack([b, a])])
    level_0 = cam.level_embedding(torch.tensor(128 / 255))
    level_1 = cam.level_embedding(torch.tensor(1.0))
    # [a, b]: a at level g_0 = 128, b at g_1 = 255. [b, a]: the other way round.
    assert torch.allclose(ab[0], a + level_0, atol=1e-6)
    assert torch.allclose(ab[1], b + level_1, atol=1e-6)
    assert torch.allclose(ba[0], b + level_0, atol=1e-6)
    assert torch.allclose(ba[1], a + level_1, atol=1e-6)
    assert not torch.allclose(ab[0], ba[1])  # the token of "a" depends on where a stands


def test_lists_of_different_lengths_are_padded_and_masked():
    torch.manual_seed(0)
    cam = ContentAttentionModule(cross_attention_dim=16)
    torch.nn.init.normal_(cam.level_mlp[-1].weight)
    context, mask = cam([_embeddings(2), _embeddings(5, seed=1)])
    assert context.shape == (2, 5, 16)
    assert mask.tolist() == [[True, True, False, False, False], [True] * 5]
    assert torch.all(context[0, 2:] == 0)


def test_adjacent_levels_of_255_classes_get_distinct_embeddings():
    torch.manual_seed(0)
    cam = ContentAttentionModule(cross_attention_dim=16)
    torch.nn.init.normal_(cam.level_mlp[-1].weight)
    levels = torch.arange(1, 256) / 255
    embedded = cam.level_embedding(levels)
    gaps = (embedded[1:] - embedded[:-1]).norm(dim=-1)
    assert gaps.min() > 1e-3


def test_cam_saves_and_loads_as_safetensors(tmp_path):
    cam = ContentAttentionModule(cross_attention_dim=16, num_frequencies=4)
    torch.nn.init.normal_(cam.level_mlp[-1].weight)
    cam.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ContentAttentionModule.from_pretrained(tmp_path)
    assert loaded.config.num_frequencies == 4
    levels = torch.tensor([0.25, 0.5])
    assert torch.equal(loaded.level_embedding(levels), cam.level_embedding(levels))


def test_the_none_token_follows_the_padded_class_tokens_and_is_always_attended():
    torch.manual_seed(0)
    cam = ContentAttentionModule(cross_attention_dim=16, none_token=True)
    context, mask = cam([_embeddings(2), _embeddings(4, seed=1)])
    assert context.shape == (2, 5, 16)
    assert cam.none_token_index(4) == 4
    assert mask.tolist() == [[True, True, False, False, True], [True] * 5]
    assert torch.equal(context[0, 4], context[1, 4])
    assert torch.allclose(context[0, 4], cam.none_token())
    assert torch.all(context[0, 2:4] == 0)


def test_a_cam_saved_without_the_none_token_key_loads_without_one(tmp_path):
    import json

    ContentAttentionModule(cross_attention_dim=16).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["none_token"]  # as saved before the key existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    cam = ContentAttentionModule.from_pretrained(tmp_path)
    assert cam.none_token_index(3) is None
    assert cam([_embeddings(3)])[0].shape == (1, 3, 16)


def test_the_none_token_is_saved_and_reloaded(tmp_path):
    cam = ContentAttentionModule(cross_attention_dim=16, none_token=True)
    cam.save_pretrained(tmp_path)
    again = ContentAttentionModule.from_pretrained(tmp_path)
    assert torch.equal(again.none_embedding, cam.none_embedding)
