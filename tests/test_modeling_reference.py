"""Numerical equivalence with the reference SAM / HQ-SAM on the same random weights.

Our model's ``state_dict()`` is loaded into the reference modules with ``strict=True``;
both are then run on the same inputs. The architecture is that of
``tests/small_models.small_vit_config`` (2-block 32-wide ViT with block 1 global, real
decoder). One test runs it at the real 1024 input (64×64 embedding); the others use a
256 input (16×16 embedding, 64×64 logits), which exercises the same code (window padding
16 -> 28 included) about 16 times faster.
"""

from __future__ import annotations

import copy

import pytest
import torch

from reference_impl import sam as ref_sam
from reference_impl import sam_hq as ref_sam_hq
from sum_core.encoding import encode
from sum_core.errors import InvalidInputError
from sum_core.modeling import PRESETS, ModelConfig, SamModel, build_from_config
from sum_core.modeling.mask_decoder import MaskDecoder
from sum_core.modeling.vit import _relative_table

TOL = 1e-4
N_PROMPTS = 3


def small_config(hq: bool = True, sum_tokens: bool = False, image_size: int = 256) -> ModelConfig:
    # The sizes of tests/small_models.small_vit_config, at a configurable input size.
    return PRESETS["vit_b"].replace(
        model_type="custom",
        image_size=image_size,
        embed_dim=32,
        depth=2,
        num_heads=2,
        global_attn_indexes=(1,),
        hq=hq,
        sum_tokens=sum_tokens,
    )


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    if ref.numel() == 0:
        return 0.0
    return float((ours - ref).abs().max() / ref.abs().max())


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Replace constant initialisations (zeros, LayerNorm ones) by random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen)
            if torch.all(p == 0):
                p.copy_(0.5 * noise)
            elif torch.all(p == 1):
                p.copy_(1 + 0.2 * noise)


def build_reference(config: ModelConfig, hq: bool, package) -> torch.nn.Module:
    """The reference ``Sam`` with the sizes of ``config`` (decoder from ``package``)."""
    modeling = ref_sam_hq().modeling
    encoder = modeling.ImageEncoderViT(
        depth=config.depth,
        embed_dim=config.embed_dim,
        img_size=config.image_size,
        mlp_ratio=config.mlp_ratio,
        norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
        num_heads=config.num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=list(config.global_attn_indexes),
        window_size=config.window_size,
        out_chans=256,
    )
    size = config.embedding_size
    prompt = modeling.PromptEncoder(
        embed_dim=256,
        image_embedding_size=(size, size),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=16,
    )
    transformer = package.modeling.TwoWayTransformer(
        depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8
    )
    kwargs = dict(
        num_multimask_outputs=3,
        transformer=transformer,
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    if hq:
        decoder = package.modeling.MaskDecoderHQ(vit_dim=config.embed_dim, **kwargs)
    else:
        decoder = package.modeling.MaskDecoder(**kwargs)
    return modeling.Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder).eval()


def make_pair(hq: bool, seed: int, image_size: int = 256) -> tuple[SamModel, torch.nn.Module]:
    torch.manual_seed(seed)
    ours = build_from_config(small_config(hq=hq, image_size=image_size))
    randomize(ours, seed)
    ref = build_reference(ours.config, hq, ref_sam_hq() if hq else ref_sam())
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


@pytest.fixture(scope="module")
def hq_pair() -> tuple[SamModel, torch.nn.Module]:
    return make_pair(hq=True, seed=0)


@pytest.fixture(scope="module")
def encoded(hq_pair):
    """Our and the reference's encoder outputs on one random normalised image."""
    ours, ref = hq_pair
    size = ours.config.image_size
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embedding, early = ours.image_encoder(image)
        hq_features = ours.mask_decoder.hq_features(embedding, early)
        ref_embedding, ref_interm = ref.image_encoder(image)
    return embedding, early, hq_features, ref_embedding, ref_interm


def make_prompts(kind: str, seed: int, size: int = 256, n: int = N_PROMPTS) -> dict[str, object]:
    """``PromptEncoder.forward`` inputs for ``n`` prompts of one kind in a ``size`` frame."""
    gen = torch.Generator().manual_seed(seed)
    points = boxes = masks = None
    if "point" in kind:
        coords = torch.rand(n, 2, 2, generator=gen) * (size - 1)
        labels = torch.tensor([[1, 0], [1, 1], [0, 1]])[:n]
        points = (coords, labels)
    if "box" in kind:
        corners = torch.rand(n, 2, 2, generator=gen) * (size - 1)
        boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    if "mask" in kind:
        masks = 4 * torch.randn(n, 1, size // 4, size // 4, generator=gen)
    return {"points": points, "boxes": boxes, "masks": masks}


def run_ours(model: SamModel, embedding, hq_features, prompts, task=None):
    sparse, dense = model.prompt_encoder(**prompts)
    pe = model.prompt_encoder.get_dense_pe()
    return model.mask_decoder(embedding, pe, sparse, dense, hq_features, task=task)


def run_reference_hq(ref, embedding, interm, prompts, multimask, hq_token_only):
    sparse, dense = ref.prompt_encoder(**prompts)
    return ref.mask_decoder(
        image_embeddings=embedding,
        image_pe=ref.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        hq_token_only=hq_token_only,
        interm_embeddings=interm,
    )


# --- image encoder -------------------------------------------------------------------


def test_image_embedding_and_early_feature_match(encoded) -> None:
    embedding, early, _, ref_embedding, ref_interm = encoded
    assert embedding.shape == (1, 256, 16, 16)
    assert early.shape == (1, 16, 16, 32)
    assert rel_err(embedding, ref_embedding) < TOL
    assert rel_err(early, ref_interm[0]) < TOL


def test_full_size_pipeline_matches_reference() -> None:
    """1024 input: encoder (64×64 grid, windows padded 64 -> 70) and HQ decoder, 2 prompts."""
    ours, ref = make_pair(hq=True, seed=12, image_size=1024)
    image = 255 * torch.rand(1, 3, 700, 1024, generator=torch.Generator().manual_seed(2))
    x = ours.preprocess(image)
    embedding, early = ours.image_encoder(x)
    ref_embedding, ref_interm = ref.image_encoder(ref.preprocess(image))
    assert embedding.shape == (1, 256, 64, 64)
    assert early.shape == (1, 64, 64, 32)
    assert rel_err(embedding, ref_embedding) < TOL
    assert rel_err(early, ref_interm[0]) < TOL
    prompts = make_prompts("point+box", seed=4, size=1024, n=2)
    out = run_ours(ours, embedding, ours.mask_decoder.hq_features(embedding, early), prompts)
    logits, iou, _ = MaskDecoder.select_outputs(out, multimask=True, hq_token_only=False)
    ref_logits, ref_iou = run_reference_hq(ref, ref_embedding, ref_interm, prompts, True, False)
    assert logits.shape == (2, 1, 256, 256)
    assert rel_err(logits, ref_logits) < TOL
    assert rel_err(iou, ref_iou) < TOL


def test_relative_table_interpolates_like_reference() -> None:
    get_rel_pos = ref_sam_hq().modeling.image_encoder.get_rel_pos
    table = torch.randn(9, 4)  # fits 5×5; resampled to 15 rows for the sizes involving 8
    for q_size, k_size in [(8, 8), (8, 4), (4, 8), (5, 5)]:
        ours = _relative_table(q_size, k_size, table)
        assert ours.shape == (q_size, k_size, 4)
        assert rel_err(ours, get_rel_pos(q_size, k_size, table)) < 1e-6


# --- prompt encoder + HQ decoder -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "multimask", "hq_token_only"),
    [
        ("point", True, False),
        ("box", False, False),
        ("point+box", False, True),
        ("mask", True, True),
        ("point+mask", False, False),
    ],
)
def test_hq_decoder_matches_reference(hq_pair, encoded, kind, multimask, hq_token_only) -> None:
    ours, ref = hq_pair
    embedding, _, hq_features, ref_embedding, ref_interm = encoded
    prompts = make_prompts(kind, seed=len(kind))
    sparse, dense = ours.prompt_encoder(**prompts)
    ref_sparse, ref_dense = ref.prompt_encoder(**prompts)
    assert rel_err(sparse, ref_sparse) < TOL
    assert rel_err(dense, ref_dense) < TOL

    out = run_ours(ours, embedding, hq_features, prompts)
    assert out.sam_logits.shape == (N_PROMPTS, 4, 64, 64)
    assert out.iou.shape == (N_PROMPTS, 4)
    assert out.hq_logits.shape == (N_PROMPTS, 1, 64, 64)
    logits, iou, _ = MaskDecoder.select_outputs(out, multimask, hq_token_only)
    ref_logits, ref_iou = run_reference_hq(
        ref, ref_embedding, ref_interm, prompts, multimask, hq_token_only
    )
    assert logits.shape == (N_PROMPTS, 1, 64, 64)
    assert rel_err(logits, ref_logits) < TOL
    assert rel_err(iou, ref_iou) < TOL


FLAG_COMBINATIONS = [(m, h) for m in (True, False) for h in (True, False)]


@pytest.mark.parametrize(("multimask", "hq_token_only"), FLAG_COMBINATIONS)
def test_hq_output_selection_matches_reference(hq_pair, encoded, multimask, hq_token_only) -> None:
    ours, ref = hq_pair
    embedding, _, hq_features, ref_embedding, ref_interm = encoded
    prompts = make_prompts("point", seed=7)
    out = run_ours(ours, embedding, hq_features, prompts)
    logits, iou, sam_logits = MaskDecoder.select_outputs(out, multimask, hq_token_only)
    ref_logits, ref_iou = run_reference_hq(
        ref, ref_embedding, ref_interm, prompts, multimask, hq_token_only
    )
    assert rel_err(logits, ref_logits) < TOL
    assert rel_err(iou, ref_iou) < TOL
    # The chosen SAM token is token 0, or the best of tokens 1..3 by predicted IoU.
    token = out.iou[:, 1:].argmax(1) + 1 if multimask else torch.zeros(N_PROMPTS, dtype=torch.long)
    assert torch.equal(sam_logits[:, 0], out.sam_logits[torch.arange(N_PROMPTS), token])
    assert torch.equal(iou[:, 0], out.iou[torch.arange(N_PROMPTS), token])
    expected = out.hq_logits if hq_token_only else sam_logits + out.hq_logits
    assert torch.equal(logits, expected)


def test_batched_image_embedding_equals_broadcast(hq_pair, encoded) -> None:
    ours, _ = hq_pair
    embedding, _, hq_features, _, _ = encoded
    prompts = make_prompts("point+box", seed=3)
    broadcast = run_ours(ours, embedding, hq_features, prompts)
    per_prompt = run_ours(
        ours,
        embedding.expand(N_PROMPTS, -1, -1, -1).contiguous(),
        hq_features.expand(N_PROMPTS, -1, -1, -1).contiguous(),
        prompts,
    )
    for a, b in zip(broadcast, per_prompt):
        torch.testing.assert_close(a, b)


def test_single_prompt_equals_its_row_in_a_batch(hq_pair, encoded) -> None:
    ours, _ = hq_pair
    embedding, _, hq_features, _, _ = encoded
    prompts = make_prompts("point", seed=5)
    batch = run_ours(ours, embedding, hq_features, prompts)
    coords, labels = prompts["points"]
    one = {**prompts, "points": (coords[1:2], labels[1:2])}
    single = run_ours(ours, embedding, hq_features, one)
    torch.testing.assert_close(single.hq_logits, batch.hq_logits[1:2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(single.iou, batch.iou[1:2], rtol=1e-4, atol=1e-4)


# --- the one encode path + the one decode step, end to end ------------------------------


def reference_forward_inputs(pixels, sizes, prompts):
    """``Sam.forward`` inputs: each resized image with the same model-frame prompts."""
    records = []
    for x, size in zip(pixels, sizes):
        record = {"image": x[0].float(), "original_size": size}
        if prompts["points"] is not None:
            record["point_coords"], record["point_labels"] = prompts["points"]
        if prompts["boxes"] is not None:
            record["boxes"] = prompts["boxes"]
        if prompts["masks"] is not None:
            record["mask_inputs"] = prompts["masks"]
        records.append(record)
    return records


@pytest.mark.parametrize("hq_features", [True, False], ids=["inference", "training"])
@pytest.mark.parametrize("kind", ["point", "box+mask"])
def test_encode_and_decode_match_reference_forward(hq_pair, kind, hq_features) -> None:
    """``encoding.encode`` (a batch of two resized images) + ``SamModel.decode`` equal the
    reference ``Sam.forward``; with ``hq_features=False`` (training) the decode step computes
    the HQ features itself, with the same result."""
    ours, ref = hq_pair
    gen = torch.Generator().manual_seed(6)
    pixels = [torch.randint(0, 256, (1, 3, 256, 192), generator=gen, dtype=torch.uint8),
              torch.randint(0, 256, (1, 3, 160, 256), generator=gen, dtype=torch.uint8)]  # fmt: skip
    sizes = [(800, 600), (500, 800)]
    prompts = make_prompts(kind, seed=12, n=2)
    images = encode(ours, pixels, sizes, hq_features=hq_features)
    assert [(e.input_size, e.original_size) for e in images] == [((256, 192), (800, 600)), ((160, 256), (500, 800))]
    assert all((e.hq_features is None) != hq_features for e in images)
    reference = ref(reference_forward_inputs(pixels, sizes, prompts), multimask_output=False)
    for image, expected in zip(images, reference):
        out = ours.decode(image, prompts["points"], prompts["boxes"], prompts["masks"])
        assert rel_err(out.logits, expected["low_res_logits"]) < TOL
        assert rel_err(out.iou, expected["iou_predictions"]) < TOL
        full = ours.postprocess_masks(out.logits, image.input_size, image.original_size)
        decided = full.abs() > 1e-3  # the reference returns the thresholded full-size mask
        assert torch.equal((full > 0)[decided], expected["masks"][decided])


def test_decode_is_differentiable(hq_pair) -> None:
    """Training decodes with gradients through the HQ features and the decoder."""
    ours, _ = hq_pair
    model = copy.deepcopy(ours)
    pixels = [torch.randint(0, 256, (1, 3, 256, 256), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)]
    with torch.enable_grad():
        image = encode(model, pixels, [(256, 256)], hq_features=False)[0]
        out = model.decode(image, boxes=torch.tensor([[10.0, 20.0, 200.0, 180.0]]), task=None)
        out.logits.sum().backward()
    assert model.mask_decoder.hf_token.weight.grad.abs().sum() > 0
    assert model.mask_decoder.compress_vit_feat[0].weight.grad.abs().sum() > 0  # through the HQ features
    assert model.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0  # the encoder too


# --- plain SAM decoder against segment_anything ----------------------------------------


@pytest.fixture(scope="module")
def sam_pair() -> tuple[SamModel, torch.nn.Module]:
    return make_pair(hq=False, seed=2)


@pytest.mark.parametrize(("kind", "multimask"), [("point", True), ("point", False), ("box", True)])
def test_sam_decoder_matches_segment_anything(sam_pair, kind, multimask) -> None:
    ours, ref = sam_pair
    assert not hasattr(ours.mask_decoder, "hf_token")
    embedding = torch.randn(1, 256, 16, 16, generator=torch.Generator().manual_seed(4))
    prompts = make_prompts(kind, seed=11)
    out = run_ours(ours, embedding, None, prompts)
    assert out.hq_logits is None
    logits, iou, sam_logits = MaskDecoder.select_outputs(out, multimask, hq_token_only=False)
    sparse, dense = ref.prompt_encoder(**prompts)
    ref_logits, ref_iou = ref.mask_decoder(
        image_embeddings=embedding,
        image_pe=ref.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    channels = 3 if multimask else 1
    assert logits.shape == (N_PROMPTS, channels, 64, 64)
    assert iou.shape == (N_PROMPTS, channels)
    assert rel_err(logits, ref_logits) < TOL
    assert rel_err(iou, ref_iou) < TOL
    assert sam_logits is logits


# --- SUM task tables -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sum_model(hq_pair) -> SamModel:
    hq_model, _ = hq_pair
    model = build_from_config(small_config(sum_tokens=True))
    result = model.load_state_dict(hq_model.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == sorted(
        [f"mask_decoder.task_prompt_tokens.{i}.weight" for i in range(3)]
        + [f"mask_decoder.hf_type_tokens.{i}.weight" for i in range(3)]
        + [f"mask_decoder.task_prompt_embeddings.{i}.weight" for i in range(2)]
    )
    return model


def test_sum_with_zero_tables_equals_hq(hq_pair, encoded, sum_model) -> None:
    hq_model, _ = hq_pair
    embedding, _, hq_features, _, _ = encoded
    prompts = make_prompts("point", seed=9)
    expected = run_ours(hq_model, embedding, hq_features, prompts)
    for task in (None, 0, 1, 2):
        got = run_ours(sum_model, embedding, hq_features, prompts, task=task)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)


def test_sum_tables_follow_the_reference_semantics(hq_pair, encoded, sum_model) -> None:
    """Task t == HQ-SAM with mask/HQ tokens shifted by the task tables and, for t < 2,
    the dense prompt shifted by the task embedding."""
    ref = copy.deepcopy(hq_pair[1])  # its tokens are overwritten below
    embedding, _, hq_features, ref_embedding, ref_interm = encoded
    model = build_from_config(small_config(sum_tokens=True))
    model.load_state_dict(sum_model.state_dict())
    gen = torch.Generator().manual_seed(3)
    for name, table in model.mask_decoder.named_parameters():
        if "task" in name or "type" in name:
            table.copy_(torch.randn(table.shape, generator=gen))
    sd = model.state_dict()
    prompts = make_prompts("point+box", seed=13)
    outputs = []
    for task in (0, 1, 2):
        out = run_ours(model, embedding, hq_features, prompts, task=task)
        outputs.append(out)
        shifted = {k: v for k, v in sd.items() if "task" not in k and "type" not in k}
        shifted["mask_decoder.mask_tokens.weight"] = (
            sd["mask_decoder.mask_tokens.weight"]
            + sd[f"mask_decoder.task_prompt_tokens.{task}.weight"]
        )
        shifted["mask_decoder.hf_token.weight"] = (
            sd["mask_decoder.hf_token.weight"] + sd[f"mask_decoder.hf_type_tokens.{task}.weight"]
        )
        ref.load_state_dict(shifted)
        sparse, dense = ref.prompt_encoder(**prompts)
        if task < 2:
            task_embedding = sd[f"mask_decoder.task_prompt_embeddings.{task}.weight"]
            dense = dense + task_embedding.view(1, -1, 1, 1)
        ref_logits, ref_iou = ref.mask_decoder(
            image_embeddings=ref_embedding,
            image_pe=ref.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            hq_token_only=True,
            interm_embeddings=ref_interm,
        )
        assert rel_err(out.hq_logits, ref_logits) < TOL
        assert rel_err(out.iou[:, :1], ref_iou) < TOL
    # task=None adds no offsets even when the tables are non-zero.
    untasked = run_ours(model, embedding, hq_features, prompts)
    for a, b in zip(untasked, run_ours(hq_pair[0], embedding, hq_features, prompts)):
        torch.testing.assert_close(a, b)
    for i in range(3):
        for j in range(i + 1, 3):
            assert (outputs[i].hq_logits - outputs[j].hq_logits).abs().max() > 1e-2
            assert (outputs[i].sam_logits - outputs[j].sam_logits).abs().max() > 1e-2


# --- pre/post-processing ---------------------------------------------------------------


def test_preprocess_and_postprocess_match_reference(hq_pair) -> None:
    ours, ref = hq_pair
    gen = torch.Generator().manual_seed(6)
    image = 255 * torch.rand(1, 3, 171, 256, generator=gen)
    x = ours.preprocess(image)
    assert x.shape == (1, 3, 256, 256)
    assert torch.count_nonzero(x[..., 171:, :]) == 0
    mean, std = ours.pixel_mean[:, 0, 0], ours.pixel_std[:, 0, 0]
    torch.testing.assert_close(x[0, :, 5, 7], (image[0, :, 5, 7] - mean) / std)
    torch.testing.assert_close(x, ref.preprocess(image))
    low_res = torch.randn(2, 1, 64, 64, generator=gen)
    masks = ours.postprocess_masks(low_res, (171, 256), (400, 600))
    assert masks.shape == (2, 1, 400, 600)
    torch.testing.assert_close(masks, ref.postprocess_masks(low_res, (171, 256), (400, 600)))
    assert "pixel_mean" not in ours.state_dict()


# --- errors ----------------------------------------------------------------------------


def test_decoder_rejects_bad_inputs(hq_pair, encoded) -> None:
    ours, _ = hq_pair
    embedding, _, hq_features, _, _ = encoded
    decoder = ours.mask_decoder
    pe = ours.prompt_encoder.get_dense_pe()
    sparse = torch.zeros(2, 2, 256)
    dense = torch.zeros(2, 256, 16, 16)
    with pytest.raises(InvalidInputError, match="hq_features is required"):
        decoder(embedding, pe, sparse, dense)
    with pytest.raises(InvalidInputError, match="task=1 needs a SUM model"):
        decoder(embedding, pe, sparse, dense, hq_features, task=1)
    with pytest.raises(InvalidInputError, match="image_embeddings has batch 3, expected 1 or 2"):
        decoder(embedding.expand(3, -1, -1, -1), pe, sparse, dense, hq_features)
    with pytest.raises(InvalidInputError, match="dense_prompt_embeddings has batch 1, expected 2"):
        decoder(embedding, pe, sparse, dense[:1], hq_features)


def test_sum_decoder_rejects_out_of_range_task(sum_model, encoded) -> None:
    embedding, _, hq_features, _, _ = encoded
    with pytest.raises(InvalidInputError, match=r"task=3 is out of range; valid tasks are 0..2"):
        sum_model.mask_decoder(
            embedding,
            sum_model.prompt_encoder.get_dense_pe(),
            torch.zeros(1, 2, 256),
            torch.zeros(1, 256, 16, 16),
            hq_features,
            task=3,
        )


def test_plain_decoder_has_no_hq_features() -> None:
    model = build_from_config(small_config(hq=False))
    with pytest.raises(InvalidInputError, match="plain SAM decoder"):
        model.mask_decoder.hq_features(torch.zeros(1, 256, 16, 16), torch.zeros(1, 16, 16, 32))
