"""The OV-SAM modules on the tiny config: shapes, frozen parts, the CLIP2SAM rules and the fusion."""

from __future__ import annotations

import logging
import math
import threading

import open_clip
import pytest
import torch
from segment_anything.modeling.image_encoder import Attention
from torchvision.ops import roi_align

from ovsam_model.build import build_ovsam
from ovsam_model.clip_build import create_clip, quiet_random_init
from ovsam_model.config import OVSAMConfig, list_models, load_config
from ovsam_model.modeling.clip2sam import (
    class_logits,
    fuse_probabilities,
    map_roi_levels,
    masks_to_boxes,
    multilevel_roi_align,
)
from ovsam_model.modeling.sam2clip import HeadChunkedAttention
from ovsam_model.train.sam2clip import build_teacher


def test_all_variants_are_listed_and_parse():
    names = list_models()
    for name in ("tiny", "demo", "ovsam_rn50x16", "ovsam_rn50x16_official", "ovsam_rn50", "ovsam_convnext_l"):
        assert name in names
        config = load_config(name)
        assert config.name == name
        assert OVSAMConfig.from_dict(config.to_dict()) == config


def test_official_config_is_the_released_layout():
    official = load_config("ovsam_rn50x16_official")
    assert official.decoder.num_multimask_outputs == 0 and official.decoder.label_token
    assert official.clip.channels == (384, 768, 1536, 3072)
    assert official.adapter.embed_dim == 1280 and official.adapter.global_attn_indexes == (4,)
    assert official.embedding_size == 64 and official.embed_dim == 768


def test_unknown_model_and_keys_are_named():
    with pytest.raises(ValueError, match="Unknown model 'nope'.*tiny"):
        load_config("nope")
    with pytest.raises(ValueError, match="Unknown keys \\['widht'\\]"):
        OVSAMConfig.from_dict({"adapter": {"widht": 3}})


def test_feature_and_decoder_shapes(tiny_model):
    config = tiny_model.config
    features = tiny_model.encode_image(torch.rand(2, 3, 128, 96) * 255)
    g = config.embedding_size
    assert features.embedding.shape == (2, config.adapter.out_chans, g, g)
    assert [f.shape[-1] for f in features.fpn] == [128 // s for s in (4, 8, 16, 32)]
    assert features.clip_top.shape == (2, config.clip.channels[-1], 4, 4)
    one = features.select(1)
    decoded = tiny_model.decode(
        one,
        points=torch.tensor([[[10.0, 20.0], [40.0, 50.0]]]),
        point_labels=torch.tensor([[1.0, 0.0]]),
        multimask_output=True,
    )
    assert decoded.low_res_logits.shape == (1, 3, 4 * g, 4 * g) and decoded.iou.shape == (1, 3)
    decoded = tiny_model.decode(one, boxes=torch.tensor([[5.0, 5.0, 60.0, 40.0]] * 4), multimask_output=False)
    assert decoded.low_res_logits.shape == (4, 1, 4 * g, 4 * g)
    with pytest.raises(ValueError, match="one image"):
        tiny_model.decode(features, boxes=torch.tensor([[5.0, 5.0, 60.0, 40.0]]))


def test_stride_8_adapter_doubles_the_grid_and_the_masks():
    config = load_config("tiny")
    config.adapter.stride = 8
    torch.manual_seed(0)
    model = build_ovsam(config, device="cpu")
    g = config.embedding_size
    assert g == config.image_size // 8
    features = model.encode_image(torch.rand(1, 3, 128, 96) * 255)
    assert features.embedding.shape[-2:] == (g, g)
    decoded = model.decode(features, boxes=torch.tensor([[5.0, 5.0, 60.0, 40.0]]), multimask_output=True)
    assert decoded.low_res_logits.shape == (1, 3, 4 * g, 4 * g)
    with pytest.raises(ValueError, match="stride-16 embeddings.*--stage end2end"):
        build_teacher("tiny", model)  # SAM's encoders cannot teach a stride-8 adapter
    config.adapter.stride = 4
    with pytest.raises(ValueError, match="stride 4 is not supported"):
        build_ovsam(config, device="cpu")


def test_clip_trunk_and_text_tower_are_frozen(tiny_model):
    assert not any(p.requires_grad for p in tiny_model.backbone.parameters())
    assert not any(p.requires_grad for p in tiny_model.clip_text.parameters())
    tiny_model.train()
    try:
        assert not tiny_model.backbone.visual.training  # BatchNorm keeps its running statistics
        assert not tiny_model.clip_text.training
        assert tiny_model.neck.training
    finally:
        tiny_model.eval()


def test_official_layout_has_no_iou_head_and_reports_stability():
    config = load_config("tiny").to_dict()
    config["decoder"].update(num_multimask_outputs=0, label_token=True)
    model = build_ovsam(config, device="cpu")
    assert not model.has_iou_head and hasattr(model, "label_mlp")
    assert not any("iou_prediction_head" in k for k in model.state_dict())
    features = model.encode_image(torch.rand(1, 3, 128, 128) * 255)
    decoded = model.decode(features, boxes=torch.tensor([[5.0, 5.0, 60.0, 40.0]]), multimask_output=True)
    assert decoded.low_res_logits.shape[1] == 1  # a single-token decoder has no multimask output
    assert 0.0 <= float(decoded.iou) <= 1.0


@pytest.mark.parametrize(
    ("side", "level"), [(50, 0), (111, 0), (113, 1), (223, 1), (225, 2), (447, 2), (449, 3), (2000, 3)]
)
def test_roi_level_rule_matches_mmdet(side, level):
    rois = torch.tensor([[0.0, 0.0, 0.0, side, side]])
    assert int(map_roi_levels(rois, 4, 56.0)) == level


@pytest.mark.parametrize("gather", [False, True])
def test_multilevel_roi_align_pools_each_roi_on_its_level(gather):
    features = [torch.randn(2, 3, 256 // s, 256 // s) for s in (4, 8, 16, 32)]
    rois = torch.tensor(
        [[0, 10.0, 10.0, 40.0, 50.0], [1, 0.0, 0.0, 200.0, 150.0], [0, 5.0, 5.0, 250.0, 250.0]]
    )
    out = multilevel_roi_align(features, rois, 7, 56.0, gather=gather)
    levels = map_roi_levels(rois, 4, 56.0)
    assert len(set(levels.tolist())) == 3  # three different levels
    for i, level in enumerate(levels.tolist()):
        stride = (4, 8, 16, 32)[level]
        expected = roi_align(features[level], rois[i : i + 1], (7, 7), 1.0 / stride, 0, aligned=True)
        torch.testing.assert_close(out[i : i + 1], expected)


def test_class_logits_max_over_synonyms_with_zero_background():
    text = torch.nn.functional.normalize(torch.randn(3, 2, 8), dim=-1)
    embed = text[1, 1][None] * 5  # exactly class 1's second synonym, any norm
    logits = class_logits(embed, text, 100.0)
    assert logits.shape == (1, 4)
    assert logits[0, -1] == 0
    assert math.isclose(float(logits[0, 1]), 100.0, rel_tol=1e-5)
    assert int(logits[0, :3].argmax()) == 1


def test_fusion_is_the_weighted_geometric_mean():
    head, clip = torch.randn(2, 4), torch.randn(2, 4)
    seen = torch.tensor([True, False, True])
    fused = fuse_probabilities(head, clip, seen, alpha_seen=0.1, beta_unseen=0.9)
    q, c = head.softmax(-1), clip.softmax(-1)
    weight = torch.tensor([0.1, 0.9, 0.1, 0.1])  # background counts as seen
    expected = q ** (1 - weight) * c**weight
    torch.testing.assert_close(fused, expected / expected.sum(-1, keepdim=True))
    invalid = fuse_probabilities(
        head, clip, seen, alpha_seen=0.1, beta_unseen=0.9, valid=torch.tensor([False, True])
    )
    torch.testing.assert_close(invalid[0], q[0])  # an empty mask is named by the head alone


def test_masks_to_boxes_is_exclusive_and_zero_for_empty():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[3.0, 2.0, 9.0, 5.0], [0.0, 0.0, 0.0, 0.0]]


def test_region_embeddings_follow_the_predicted_mask_box(tiny_model):
    features = tiny_model.encode_image(torch.rand(1, 3, 128, 128) * 255)
    logits = torch.full((2, 32, 32), -5.0)
    logits[0, 4:10, 6:20] = 5.0
    boxes, valid = tiny_model.region_rois(logits, fallback_boxes=torch.tensor([[0.0, 0, 10, 10]] * 2))
    assert valid.tolist() == [True, False]
    assert boxes[0].tolist() == [24.0, 16.0, 80.0, 40.0]  # x4: low-res mask -> input frame
    assert boxes[1].tolist() == [0.0, 0.0, 10.0, 10.0]
    head, clip = tiny_model.region_embeddings(features, boxes)
    assert head.shape == (2, tiny_model.config.embed_dim) and clip is not None and clip.shape == head.shape


def test_precomputed_region_maps_equal_clips_attention_pool_on_the_roi(tiny_model):
    """Pooling the projected maps is exactly attnpool(roi_align(C5)) (RoIAlign is linear), borders included."""
    trunk = tiny_model.backbone
    top = torch.randn(2, 256, 4, 4)
    rois = torch.tensor([[0, 3.0, 5.0, 90.0, 70.0], [1, -10.0, 0.0, 40.0, 128.0]])
    expected = trunk.head(roi_align(top, rois, (2, 2), 1 / 32, 0, aligned=True))
    fast = trunk.region_embeddings(trunk.region_maps(top), rois, 32)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)


def test_global_attention_a_few_heads_at_a_time_equals_sams_attention():
    attention = Attention(64, num_heads=8, qkv_bias=True, use_rel_pos=True, input_size=(16, 16))
    torch.nn.init.normal_(attention.rel_pos_h)
    torch.nn.init.normal_(attention.rel_pos_w)
    x = torch.randn(2, 16, 16, 64)
    expected = attention(x)
    attention.__class__ = HeadChunkedAttention
    torch.testing.assert_close(attention(x), expected)


def test_the_adapters_global_blocks_use_chunked_attention(tiny_model):
    kinds = [(block.window_size, type(block.attn)) for block in tiny_model.neck.blocks]
    assert (0, HeadChunkedAttention) in kinds and all(
        (w == 0) == (t is HeadChunkedAttention) for w, t in kinds
    )


def test_random_clip_warning_is_quieted_only_in_the_building_thread(caplog):
    """open_clip warns through the root logger; building a random-CLIP model silences that one warning in its
    own thread, leaves the root logger's level alone, and lets other threads' records through."""
    name = load_config("tiny").clip.model_name
    root = logging.getLogger()
    level = root.level
    caplog.set_level(logging.WARNING)
    create_clip(name, None)
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    with quiet_random_init():
        assert root.level == level
        logging.warning("another warning of this thread")
        worker = threading.Thread(target=create_clip, args=(name, "none"))
        worker.start()
        worker.join()
        thread = threading.Thread(target=lambda: open_clip.create_model(name, pretrained=None))
        thread.start()
        thread.join()
    messages = [r.getMessage() for r in caplog.records]
    assert "another warning of this thread" in messages
    assert (
        sum("initialized randomly" in m for m in messages) == 1
    )  # the bare open_clip call in another thread
    assert root.level == level and not root.filters
