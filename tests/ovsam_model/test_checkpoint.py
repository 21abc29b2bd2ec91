"""The one weights loader: files written here in each real format (random weights, the official key names
and shapes) load strictly into the right modules and change the outputs; bad files give errors that name the
keys."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import MaskDecoder, TwoWayTransformer

from ovsam_model import hub
from ovsam_model.build import assemble, build_ovsam
from ovsam_model.checkpoint import (
    is_own_checkpoint,
    load_own_state,
    load_pretrained_sources,
    read_foreign,
    read_own_checkpoint,
    save_checkpoint,
)
from ovsam_model.config import CONFIG_DIR, load_config
from ovsam_model.modeling.ovsam import OVSAM, ImageFeatures

BOX = torch.tensor([[20.0, 24.0, 90.0, 100.0]])


# ------------------------------------------------------------------------------------------------ helpers
def tiny_dict(**decoder) -> dict:
    data = json.loads((CONFIG_DIR / "tiny.json").read_text())
    data["name"] = "tiny"
    data["decoder"].update(decoder)
    return data


def tiny_official_dict() -> dict:
    """tiny.json in the released layout: single mask token, no IoU head, label token + MLP."""
    data = tiny_dict(num_multimask_outputs=0, label_token=True)
    data["name"] = "tiny_official"
    return data


def make(config: dict | str = "tiny", seed: int = 0) -> OVSAM:
    torch.manual_seed(seed)
    return assemble(load_config(config)).eval()


def outputs(model: OVSAM) -> dict[str, torch.Tensor]:
    """Adapter embedding, P2, mask logits and region embedding for fixed random CLIP features and one box.

    Starts after the CLIP trunk (the slowest part on CPU, and filled by open_clip, not by these files).
    """
    generator = torch.Generator().manual_seed(123)
    channels, size = model.config.clip.channels, model.config.image_size
    clip = [
        torch.randn(1, c, size // s, size // s, generator=generator) for c, s in zip(channels, (4, 8, 16, 32))
    ]
    rois = torch.randn(1, model.config.head.fpn_channels, 7, 7, generator=generator)
    with torch.no_grad():
        features = ImageFeatures(model.neck(clip), model.fpn(clip), clip[-1])
        decoded = model.decode(features, boxes=BOX)
        region = model.region_head(rois)
    return {
        "embedding": features.embedding,
        "fpn": features.fpn[0],
        "masks": decoded.low_res_logits,
        "region": region,
    }


def end_to_end(model: OVSAM) -> dict[str, torch.Tensor]:
    """Masks and region embedding from a fixed image through the whole model, CLIP trunk included."""
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(5)) * 255
    with torch.no_grad():
        features = model.encode_image(image)
        decoded = model.decode(features, boxes=BOX)
        region, clip_region = model.region_embeddings(features, BOX)
    return {"masks": decoded.low_res_logits, "region": region, "clip_region": clip_region}


def state_of(model: OVSAM, module: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.get_submodule(module).state_dict().items()}


def randomised(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(len(state))
    return {prefix + k: torch.randn(v.shape, generator=generator) * 0.2 for k, v in state.items()}


def assert_holds(model: OVSAM, module: str, expected: dict[str, torch.Tensor]) -> None:
    actual = model.get_submodule(module).state_dict()
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value.to(actual[key].dtype), msg=f"{module}.{key}")


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def released_sam2clip(model: OVSAM) -> dict[str, torch.Tensor]:
    """The released ``sam2clip_*.pth`` layout: ``neck_student.`` + our adapter's names."""
    return randomised(model.neck.state_dict(), "neck_student.")


def released_clip2sam(model: OVSAM) -> dict[str, torch.Tensor]:
    """The released ``clip2sam_*.pth`` layout, written by hand from the names in the reference (section 5)."""
    out = {}
    for key, value in randomised(model.mask_decoder.state_dict()).items():
        name = "label_token.weight" if key == "iou_token.weight" else f"mask_decoder.{key}"
        out[f"mask_decoder.{name}"] = value
    out.update(randomised(model.label_mlp.state_dict(), "mask_decoder.label_mlp."))
    out["mask_decoder.roi_conv.0.conv.weight"] = torch.randn(model.region_head.roi_conv[0].weight.shape)
    for key, value in randomised(model.fpn.state_dict()).items():
        kind, index, param = key.split(".")
        out[f"fpn_neck.{kind}.{index}.conv.{param}"] = value
    return out


def sam_file() -> dict[str, torch.Tensor]:
    """A ``sam_vit_*.pth`` layout: a few image-encoder keys, prompt encoder, multimask decoder + IoU head."""
    reference = make("tiny", seed=7)
    decoder = reference.mask_decoder
    out = {
        "image_encoder.pos_embed": torch.randn(1, 8, 8, 16),
        "image_encoder.neck.0.weight": torch.randn(4, 16),
    }
    out.update(randomised(reference.prompt_encoder.state_dict(), "prompt_encoder."))
    out.update(randomised(decoder.state_dict(), "mask_decoder."))
    return out


def sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture
def save(tmp_path: Path):
    def write(name: str, data) -> Path:
        path = tmp_path / name
        torch.save(data, path)
        return path

    return write


# ------------------------------------------------------------------------------------- released sam2clip
def test_released_sam2clip_fills_the_neck(save) -> None:
    model = make()
    before, untouched = outputs(model), state_of(model, "fpn")
    file = released_sam2clip(model)
    filled = load_pretrained_sources(model, checkpoint=save("sam2clip.pth", file))
    assert list(filled) == ["neck"]
    assert_holds(model, "neck", sub(file, "neck_student."))
    after = outputs(model)
    assert not torch.allclose(before["embedding"], after["embedding"])
    assert torch.equal(before["fpn"], after["fpn"]) and same(untouched, state_of(model, "fpn"))


def test_wrappers_and_prefixes_are_stripped(save) -> None:
    model = make()
    file = released_sam2clip(model)
    wrapped = {
        "meta": {"epoch": 3},
        "state_dict": {"module." + k.replace("blocks.", "_orig_mod.blocks."): v for k, v in file.items()},
    }
    load_pretrained_sources(model, checkpoint=save("wrapped.pth", wrapped))
    assert_holds(model, "neck", sub(file, "neck_student."))


# ------------------------------------------------------------------------------------- released clip2sam
def test_released_clip2sam_fills_the_official_layout_strictly(save) -> None:
    model = make(tiny_official_dict())
    before = outputs(model)
    file = released_clip2sam(model)
    filled = load_pretrained_sources(model, checkpoint=save("clip2sam.pth", file))
    assert set(filled) == {"mask_decoder", "label_mlp", "fpn", "region_head"}
    decoder = sub(file, "mask_decoder.mask_decoder.")
    decoder["iou_token.weight"] = file["mask_decoder.label_token.weight"]
    assert_holds(model, "mask_decoder", decoder)
    assert_holds(model, "label_mlp", sub(file, "mask_decoder.label_mlp."))
    assert_holds(model, "region_head", {"roi_conv.0.weight": file["mask_decoder.roi_conv.0.conv.weight"]})
    fpn = {k.replace(".conv.", "."): v for k, v in sub(file, "fpn_neck.").items()}
    assert_holds(model, "fpn", fpn)
    after = outputs(model)
    for name in ("fpn", "masks", "region"):
        assert not torch.allclose(before[name], after[name]), name
    assert torch.equal(before["embedding"], after["embedding"])


def test_default_layout_takes_only_fpn_and_roi_conv(save, caplog) -> None:
    official, model = make(tiny_official_dict()), make()
    decoder_before = state_of(model, "mask_decoder")
    caplog.set_level(logging.DEBUG, logger="ovsam_model.checkpoint")
    filled = load_pretrained_sources(model, checkpoint=save("clip2sam.pth", released_clip2sam(official)))
    assert set(filled) == {"fpn", "region_head"}
    assert same(decoder_before, state_of(model, "mask_decoder"))
    unused = [r.getMessage() for r in caplog.records if "unused by design" in r.getMessage()]
    assert any("mask_decoder" in m for m in unused) and any("label_mlp" in m for m in unused)


def test_demo_space_head_and_fpn_files(save) -> None:
    model = make(tiny_official_dict())
    released = released_clip2sam(model)
    head = {k: v for k, v in released.items() if k.startswith("mask_decoder.")}
    fpn_file = {k: v for k, v in released.items() if k.startswith("fpn_neck.")}
    fpn_file["roi_conv.0.conv.weight"] = torch.randn_like(released["mask_decoder.roi_conv.0.conv.weight"])
    with pytest.raises(ValueError, match=r"No weights file filled \['fpn'\]"):
        load_pretrained_sources(model, checkpoint=save("head.pth", head))
    load_pretrained_sources(model, checkpoint=[save("head.pth", head), save("fpn.pth", fpn_file)])
    # The FPN file's roi_conv replaces the head's, as in the demo Space.
    assert_holds(model, "region_head", {"roi_conv.0.weight": fpn_file["roi_conv.0.conv.weight"]})
    assert_holds(model, "label_mlp", sub(head, "mask_decoder.label_mlp."))


# ----------------------------------------------------------------------------------------------- SAM file
def test_sam_file_fills_prompt_encoder_and_multimask_decoder(save) -> None:
    model = make()
    before = outputs(model)
    file = sam_file()
    filled = load_pretrained_sources(model, sam_checkpoint=save("sam_vit_t.pth", file))
    assert set(filled) == {"prompt_encoder", "mask_decoder"}
    assert_holds(model, "prompt_encoder", sub(file, "prompt_encoder."))
    assert_holds(model, "mask_decoder", sub(file, "mask_decoder."))
    assert not torch.allclose(before["masks"], outputs(model)["masks"])


def test_official_layout_takes_only_the_prompt_encoder_from_sam(save) -> None:
    model = make(tiny_official_dict())
    decoder_before = state_of(model, "mask_decoder")
    filled = load_pretrained_sources(model, sam_checkpoint=save("sam.pth", sam_file()))
    assert set(filled) == {"prompt_encoder"}
    assert same(decoder_before, state_of(model, "mask_decoder"))


def test_read_foreign_gives_the_teacher_state(save) -> None:
    kind, parts = read_foreign(save("sam.pth", sam_file()))
    assert kind == "sam" and set(parts["image_encoder"]) == {"pos_embed", "neck.0.weight"}


def test_named_sources_come_from_the_cache(save, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "root"))
    monkeypatch.setitem(hub.SOURCES, "sam_vit_h", dataclasses.replace(hub.SOURCES["sam_vit_h"], size=None))
    config = tiny_official_dict()
    config["weights"] = {
        "sam": "sam_vit_h",
        "sam2clip": "sam2clip_vith_rn50x16",
        "clip2sam": "clip2sam_lvis_rn50x16",
    }
    with pytest.raises(FileNotFoundError) as info:  # every missing file is named at once
        build_ovsam(config, device="cpu", download=False)
    for name in ("sam_vit_h_4b8939.pth", "sam2clip_vith_rn50x16.pth", "clip2sam_lvis_rn50x16.pth"):
        assert str(hub.cache_dir() / name) in str(info.value)
    model = make(tiny_official_dict())
    hub.cache_dir().mkdir(parents=True)
    files = {
        "sam_vit_h_4b8939.pth": sam_file(),
        "sam2clip_vith_rn50x16.pth": released_sam2clip(model),
        "clip2sam_lvis_rn50x16.pth": released_clip2sam(model),
    }
    for name, data in files.items():
        torch.save(data, hub.cache_dir() / name)
    built = build_ovsam(config, device="cpu", download=False)
    assert_holds(built, "neck", sub(files["sam2clip_vith_rn50x16.pth"], "neck_student."))
    assert_holds(built, "prompt_encoder", sub(files["sam_vit_h_4b8939.pth"], "prompt_encoder."))
    # A given file replaces the named source of its kind.
    other = released_sam2clip(make(tiny_official_dict(), seed=5))
    other = {k: v + 1 for k, v in other.items()}
    rebuilt = build_ovsam(config, checkpoint=save("mine.pth", other), device="cpu", download=False)
    assert_holds(rebuilt, "neck", sub(other, "neck_student."))


# ------------------------------------------------------------------------------------------- our format
def test_own_checkpoint_round_trip(tmp_path: Path) -> None:
    model = make(seed=3)
    embeddings = torch.nn.functional.normalize(torch.randn(2, 1, 32), dim=-1)
    path = save_checkpoint(
        model,
        tmp_path / "sub" / "model.pt",
        vocabulary=["nucleus", "rod, bacillus"],
        text_embeddings=embeddings,
        metadata={"steps": 10, "data": tmp_path / "images"},  # a Path is stored as text
    )
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # written atomically, no temp file left
    assert is_own_checkpoint(path) and not is_own_checkpoint("tiny")
    rebuilt = build_ovsam(path, device="cpu")
    expected = end_to_end(model)
    for name, value in end_to_end(rebuilt).items():
        torch.testing.assert_close(value, expected[name], msg=name)
    extras = rebuilt.checkpoint_extras
    assert extras.vocabulary.names == ["nucleus", "rod"] and extras.metadata["steps"] == 10
    assert extras.metadata["data"] == str(tmp_path / "images")
    torch.testing.assert_close(extras.text_embeddings, embeddings)
    into_config = build_ovsam("tiny", checkpoint=path, device="cpu")  # also as checkpoint= of its config
    assert same(state_of(into_config, "mask_decoder"), state_of(model, "mask_decoder"))
    save_checkpoint(make(seed=4), path)  # overwriting works
    assert not same(state_of(build_ovsam(path, device="cpu"), "neck"), state_of(model, "neck"))


def test_own_checkpoint_in_half_precision(tmp_path: Path) -> None:
    model = make(seed=3)
    path = save_checkpoint(model, tmp_path / "half.pt", half=True)
    _, data = read_own_checkpoint(path)
    assert data["state_dict"]["neck.pos_embed"].dtype == torch.float16
    assert data["state_dict"]["backbone.visual.bn1.num_batches_tracked"].dtype == torch.int64
    rebuilt = build_ovsam(path, device="cpu")
    assert rebuilt.neck.pos_embed.dtype == torch.float32
    expected = outputs(model)
    for name, value in outputs(rebuilt).items():
        torch.testing.assert_close(value, expected[name], rtol=0.05, atol=0.05, msg=name)


def test_pretrained_clip_is_not_stored(tmp_path: Path) -> None:
    model = make(seed=3)
    model.config.clip.pretrained = model.clip_pretrained = "some_tag"  # as if open_clip had loaded weights
    path = save_checkpoint(model, tmp_path / "model.pt")
    config, data = read_own_checkpoint(path)
    assert config.clip.pretrained == "some_tag"
    assert not any(k.startswith(("backbone.", "clip_text.")) for k in data["state_dict"])
    target = make(seed=9)
    target.clip_pretrained = "some_tag"
    clip_before = state_of(target, "clip_text")
    load_own_state(target, data)
    assert same(state_of(target, "neck"), state_of(model, "neck"))
    assert same(state_of(target, "clip_text"), clip_before)  # left to open_clip


def test_random_clip_is_stored_and_marked(tmp_path: Path) -> None:
    config, data = read_own_checkpoint(save_checkpoint(make(), tmp_path / "model.pt"))
    assert config.clip.pretrained is None
    assert any(k.startswith("backbone.visual.") for k in data["state_dict"])
    assert any(k.startswith("clip_text.") for k in data["state_dict"])


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda f: f.pop("neck_student.blocks.0.attn.rel_pos_h"),
            r"neck\.blocks\.0: missing attn\.rel_pos_h",
        ),
        (
            lambda f: f.update({"neck_student.blocks.1.attn.extra": torch.zeros(1)}),
            r"neck\.blocks\.1: unexpected attn\.extra",
        ),
        (
            lambda f: f.update({"neck_student.level_encoding.weight": torch.zeros(5, 32)}),
            r"neck\.level_encoding: weight has shape \[5, 32\] in the file, \[4, 32\] in the model",
        ),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_key_errors_name_module_and_key(save, edit, expected) -> None:
    model = make()
    file = released_sam2clip(model)
    edit(file)
    before = state_of(model, "neck")
    with pytest.raises(ValueError, match=expected):
        load_pretrained_sources(model, checkpoint=save("bad.pth", file))
    assert same(before, state_of(model, "neck"))  # nothing was loaded


def test_unknown_keys_of_a_foreign_format(save) -> None:
    file = released_clip2sam(make(tiny_official_dict()))
    file["fpn_neck.extra_convs.0.conv.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"(?s)not part of the released CLIP2SAM format.*fpn_neck: unknown extra_convs"
    ):
        load_pretrained_sources(make(tiny_official_dict()), checkpoint=save("x.pth", file))


def test_checkpoint_of_another_architecture(tmp_path: Path, save) -> None:
    wide = tiny_dict()
    wide["name"] = "tiny_wide"
    wide["adapter"]["embed_dim"] = 48
    own = save_checkpoint(make(wide), tmp_path / "wide.pt")
    message = r"config 'tiny_wide' \(adapter.embed_dim=48\), the model is 'tiny' \(adapter.embed_dim=32\)"
    with pytest.raises(ValueError, match=message):
        build_ovsam("tiny", checkpoint=own, device="cpu")
    with pytest.raises(ValueError, match="another architecture"):
        load_pretrained_sources(make(), checkpoint=save("wide_neck.pth", released_sam2clip(make(wide))))
    timm_like = {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}
    with pytest.raises(ValueError, match="another architecture"):
        load_pretrained_sources(make(), checkpoint=save("resnet.pth", timm_like))


def test_files_in_the_wrong_argument(save) -> None:
    model = make()
    with pytest.raises(ValueError, match="sam_checkpoint="):
        load_pretrained_sources(model, checkpoint=save("sam.pth", sam_file()))
    with pytest.raises(ValueError, match="not a SAM"):
        load_pretrained_sources(model, sam_checkpoint=save("neck.pth", released_sam2clip(model)))
    with pytest.raises(ValueError, match="not a state dict"):
        load_pretrained_sources(model, checkpoint=save("embeddings.pth", torch.zeros(3, 2, 8)))


class _Payload:
    """Any class: unpickling it would need code, which weights_only refuses."""


def test_files_that_could_run_code_are_refused(save, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weights_only=True"):
        load_pretrained_sources(make(), checkpoint=save("evil.pth", {"neck_student.x": _Payload()}))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_pretrained_sources(make(), checkpoint=garbage)


# ---------------------------------------------------------------------------------- the released layout
REFERENCE_SHAPES = {
    "neck_student.patch_embeds.0.projection.weight": [1280, 384, 4, 4],
    "neck_student.patch_embeds.3.projection.weight": [3072, 1280, 2, 2],
    "neck_student.level_encoding.weight": [4, 1280],
    "neck_student.pos_embed": [1, 64, 64, 1280],
    "neck_student.blocks.0.attn.qkv.weight": [3840, 1280],
    "neck_student.blocks.0.attn.rel_pos_h": [27, 80],
    "neck_student.blocks.4.attn.rel_pos_w": [127, 80],
    "neck_student.blocks.4.mlp.lin1.weight": [5120, 1280],
    "neck_student.neck.0.weight": [256, 1280, 1, 1],
    "neck_student.neck.2.weight": [256, 256, 3, 3],
    "mask_decoder.mask_decoder.mask_tokens.weight": [1, 256],
    "mask_decoder.mask_decoder.output_hypernetworks_mlps.0.layers.2.weight": [32, 256],
    "mask_decoder.label_token.weight": [1, 256],
    "mask_decoder.label_mlp.layers.2.weight": [768, 256],
    "mask_decoder.roi_conv.0.conv.weight": [768, 256, 1, 1],
    "fpn_neck.lateral_convs.3.conv.weight": [256, 3072, 1, 1],
    "fpn_neck.fpn_convs.0.conv.weight": [256, 256, 3, 3],
}


def _released_files_of(model: OVSAM) -> tuple[dict, dict]:
    """The two released files' layouts from the model's own tensors (+1, so loading visibly changes them)."""
    sam2clip = {f"neck_student.{k}": v + 1 for k, v in model.neck.state_dict().items()}
    clip2sam = {}
    for key, value in model.mask_decoder.state_dict().items():
        name = "label_token.weight" if key == "iou_token.weight" else f"mask_decoder.{key}"
        clip2sam[f"mask_decoder.{name}"] = value + 1
    clip2sam.update({f"mask_decoder.label_mlp.{k}": v + 1 for k, v in model.label_mlp.state_dict().items()})
    clip2sam["mask_decoder.roi_conv.0.conv.weight"] = model.region_head.roi_conv[0].weight + 1
    for key, value in model.fpn.state_dict().items():
        kind, index, param = key.split(".")
        clip2sam[f"fpn_neck.{kind}.{index}.conv.{param}"] = value + 1
    return sam2clip, clip2sam


@pytest.mark.slow
def test_official_rn50x16_layout_matches_the_released_files(tmp_path: Path, monkeypatch) -> None:
    model = assemble(load_config("ovsam_rn50x16_official"), clip_pretrained="none")
    sam2clip, clip2sam = _released_files_of(model)
    assert sum(v.numel() for v in sam2clip.values()) == 134_087_648
    assert not any("iou_prediction_head" in k or "iou_token" in k for k in clip2sam)
    for key, shape in REFERENCE_SHAPES.items():
        assert list((sam2clip | clip2sam)[key].shape) == shape, key
    assert (
        round(sum(v.numel() for k, v in clip2sam.items() if k.startswith("mask_decoder.")) / 1e6, 2) == 4.03
    )
    assert round(sum(v.numel() for k, v in clip2sam.items() if k.startswith("fpn_neck.")) / 1e6, 2) == 3.84
    sam_decoder = MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(2, 256, 8, 2048))
    sam = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1280)}
    sam |= {f"prompt_encoder.{k}": v + 1 for k, v in model.prompt_encoder.state_dict().items()}
    sam |= {f"mask_decoder.{k}": v for k, v in sam_decoder.state_dict().items()}
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(hub.SOURCES, "sam_vit_h", dataclasses.replace(hub.SOURCES["sam_vit_h"], size=None))
    hub.cache_dir().mkdir(parents=True)
    torch.save(sam2clip, hub.cache_dir() / "sam2clip_vith_rn50x16.pth")
    torch.save(clip2sam, hub.cache_dir() / "clip2sam_coco_rn50x16.pth")
    torch.save(sam, hub.cache_dir() / "sam_vit_h_4b8939.pth")
    filled = load_pretrained_sources(model, download=False)  # the config's named sources, strictly
    assert set(filled) == {"prompt_encoder", "neck", "mask_decoder", "label_mlp", "fpn", "region_head"}
    assert_holds(model, "neck", sub(sam2clip, "neck_student."))
    torch.testing.assert_close(
        model.mask_decoder.iou_token.weight, clip2sam["mask_decoder.label_token.weight"]
    )
    torch.testing.assert_close(
        model.region_head.roi_conv[0].weight, clip2sam["mask_decoder.roi_conv.0.conv.weight"]
    )
