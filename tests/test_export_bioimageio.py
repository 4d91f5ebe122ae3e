"""BioImage.IO packages (issue 17): export validates with bioimageio.spec, its ONNX weights reproduce its
test tensors (prompts and a mask prompt), a model with an AIS decoder gives instance labels, bioimageio.core's
test_model passes, and sum_core.load_model reads packages (ours and micro-sam's layouts, a decoder
attachment) with sha256 checks."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
import yaml

from small_models import small_vit_config
from sum_core import cli
from sum_core.errors import CheckpointError, InvalidInputError
from sum_core.loading import load_model, resolve_model
from sum_core.ais_postprocess import instances_from_distance_maps
from sum_core.decoding import decode_window
from sum_core.modeling import (
    AISDecoder, AISDecoderConfig, ImageEmbedding, ais_decoder_of, attach_ais_decoder, build_from_config,
    decode_ais_maps,
)  # fmt: skip
from sum_core.prediction import PredictOptions
from sum_core.prompts import validate_prompts

ort = pytest.importorskip("onnxruntime")
spec = pytest.importorskip("bioimageio.spec")
from sum_core.export import export_bioimageio  # noqa: E402
from sum_core.export.bioimageio import sha256_of  # noqa: E402
from sum_core.export.package_model import PACKAGE_INPUTS  # noqa: E402


def sum_model():
    torch.manual_seed(7)
    model = build_from_config(small_vit_config(hq=True, sum_tokens=True))
    for table in model.mask_decoder.task_prompt_tokens:
        torch.nn.init.normal_(table.weight, std=0.5)
    return model


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    model = sum_model()
    path = tmp_path_factory.mktemp("bioimageio") / "sum.zip"
    assert export_bioimageio(model, path, authors=["Ada Lovelace"], licence="Apache-2.0", name="small SUM") == path
    return model, path


def ais_model():
    """A small plain SAM with a narrow AIS decoder (random weights)."""
    torch.manual_seed(13)
    model = build_from_config(small_vit_config(hq=False))
    return attach_ais_decoder(model, AISDecoder(AISDecoderConfig(initial_features=8)).eval())


@pytest.fixture(scope="module")
def ais_package(tmp_path_factory):
    model = ais_model()
    path = tmp_path_factory.mktemp("bioimageio_ais") / "ais.zip"
    export_bioimageio(model, path, authors=["Ada Lovelace"], licence="MIT", name="small SAM with AIS")
    return model, path


def package_tensors(path) -> dict[str, np.ndarray]:
    return {name[5:-4]: np.load(io.BytesIO(data)) for name, data in members(path).items() if name.startswith("test_")}


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_package_validates_with_bioimageio_spec(package):
    _, path = package
    descr = spec.load_description(path, perform_io_checks=True)
    assert isinstance(descr, spec.ModelDescr), descr.validation_summary.format()
    assert descr.weights.pytorch_state_dict is not None and descr.weights.onnx is not None
    assert [t.id for t in descr.inputs] == ["image", "point_coords", "point_labels", "mask_input", "has_mask_input"]
    assert [t.id for t in descr.outputs] == ["masks", "scores", "uncertainty"]
    cited = " ".join(c.text for c in descr.cite)
    assert all(title in cited for title in ("Segment Anything.", "in High Quality", "Uncertainty-aware Fine-tuning"))
    assert str(descr.license) == "Apache-2.0" and descr.covers


def test_onnx_weights_reproduce_the_test_outputs(package):
    """The package's test outputs are our torch model's; its ONNX graph computes them again."""
    _, path = package
    tensors = package_tensors(path)
    session = ort.InferenceSession(members(path)["model.onnx"], providers=["CPUExecutionProvider"])
    feeds = {name: tensors[name] for name in PACKAGE_INPUTS}
    assert feeds["has_mask_input"].tolist() == [1.0]  # the test tensors use the mask prompt
    for name, actual in zip(["masks", "scores", "uncertainty"], session.run(None, feeds)):
        expected = tensors[name]
        assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max(), name
    assert (tensors["masks"] > 0).any()  # the click's object is segmented (a non-empty mask)
    without_mask = session.run(None, feeds | {"has_mask_input": np.zeros(1, np.float32)})
    # has_mask_input switches the mask prompt off: 10x the tolerance above
    assert np.abs(without_mask[0] - tensors["masks"]).max() > 1e-3 * np.abs(tensors["masks"]).max()


def test_mask_prompt_test_outputs_recomputed_by_the_library(package):
    """The test outputs are the library's decode (decode_window) of the click and the mask prompt."""
    model, path = package
    tensors = package_tensors(path)
    with torch.no_grad():
        emb, early = model.image_encoder(model.preprocess(torch.from_numpy(tensors["image"])))
    embedding = ImageEmbedding(emb, early, None, (1024, 1024), (1024, 1024))
    (x, y), _ = tensors["point_coords"][0]
    prompts = validate_prompts(points=[[y, x]], labels=[1], mask_input=tensors["mask_input"][0],
                               image_shape=(1024, 1024))  # fmt: skip
    out = decode_window(model, embedding, prompts, PredictOptions(task=1))
    for name, ours in (("masks", out.logits), ("scores", out.scores), ("uncertainty", out.uncertainty)):
        expected = tensors[name].reshape(ours.shape)
        assert np.abs(ours.numpy() - expected).max() <= 1e-4 * np.abs(expected).max(), name


def test_round_trip_export_load_same_model(package, tmp_path):
    model, path = package
    loaded = load_model(path, device="cpu")
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    from_folder = load_model(folder, device="cpu")
    assert resolve_model(folder, device="cpu").config == model.config  # the cached loader takes folders too
    image = torch.from_numpy(np.load(folder / "test_image.npy"))
    coords, labels, mask = (
        torch.from_numpy(np.load(folder / f"test_{k}.npy")) for k in ("point_coords", "point_labels", "mask_input")
    )
    with torch.no_grad():  # the library's decode step on the loaded model gives the package's test scores
        emb, early = from_folder.image_encoder(from_folder.preprocess(image))
        embedding = ImageEmbedding(emb, early, None, (1024, 1024), (1024, 1024))
        out = from_folder.decode(embedding, (coords[:, :1], labels[:, :1]), masks=mask, task=1)  # pads itself
    expected = np.load(folder / "test_scores.npy")
    assert np.abs(out.iou.numpy() - expected).max() <= 1e-4 * np.abs(expected).max()


def test_bad_hash_is_a_clear_error(package, tmp_path):
    _, path = package
    files = members(path)
    weights = bytearray(files["weights.pt"])
    weights[len(weights) // 2] ^= 0xFF  # one flipped byte inside a tensor
    files["weights.pt"] = bytes(weights)
    damaged = tmp_path / "damaged.zip"
    write_zip(damaged, files)
    with pytest.raises(CheckpointError, match="sha256 .* differs"):
        load_model(damaged, device="cpu")
    rdf = yaml.safe_load(files["rdf.yaml"])
    del rdf["weights"]["pytorch_state_dict"]["sha256"]
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    write_zip(damaged, files)
    with pytest.raises(CheckpointError, match="declare no sha256"):
        load_model(damaged, device="cpu")
    rdf["weights"]["pytorch_state_dict"]["source"] = "../outside.pt"
    rdf["weights"]["pytorch_state_dict"]["sha256"] = "0" * 64
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    write_zip(damaged, files)
    with pytest.raises(CheckpointError, match="outside the package"):
        load_model(damaged, device="cpu")


def test_micro_sam_package_layout(tmp_path, small_hq_checkpoint):
    """micro-sam's export: rdf.yaml naming its SAM checkpoint as pytorch_state_dict weights (architecture
    from its predictor_adaptor.py file), the checkpoint file with its sha256."""
    torch.manual_seed(11)
    sam = build_from_config(small_vit_config(hq=False))
    weights = tmp_path / "vit_b_lm.pt"
    torch.save({"model_state": {f"sam.{k}": v for k, v in sam.state_dict().items()}, "decoder_state": {}}, weights)
    rdf = {
        "type": "model",
        "format_version": "0.5.3",
        "name": "sam-test-vit-b",
        "weights": {
            "pytorch_state_dict": {
                "source": "vit_b_lm.pt",
                "sha256": sha256_of(weights),
                "architecture": {"source": "predictor_adaptor.py", "callable": "PredictorAdaptor",
                                 "kwargs": {"model_type": "vit_b"}},
                "pytorch_version": "2.1",
            }
        },
    }  # fmt: skip
    package = tmp_path / "micro_sam.zip"
    write_zip(package, {"rdf.yaml": yaml.safe_dump(rdf).encode(), "vit_b_lm.pt": weights.read_bytes(),
                        "predictor_adaptor.py": b"# micro-sam's adaptor\n"})  # fmt: skip
    loaded = load_model(package, device="cpu")
    assert not loaded.config.hq
    for key, value in sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_export_arguments_checked_before_loading(tmp_path):
    missing_model = tmp_path / "missing.pth"
    with pytest.raises(InvalidInputError, match="authors"):
        export_bioimageio(missing_model, tmp_path / "a.zip", authors=[])
    with pytest.raises(InvalidInputError, match="SPDX"):
        export_bioimageio(missing_model, tmp_path / "a.zip", authors=["A"], licence="my own licence")
    with pytest.raises(InvalidInputError, match="licence"):
        export_bioimageio(missing_model, tmp_path / "a.zip", authors=["A"])
    with pytest.raises(InvalidInputError, match="not a BioImage.IO model name"):
        export_bioimageio(missing_model, tmp_path / "a.zip", authors=["A"], licence="MIT", name="a/b")
    with pytest.raises(InvalidInputError, match=r"must end in \.zip"):
        export_bioimageio(missing_model, tmp_path / "a.tar", authors=["A"], licence="MIT")
    (tmp_path / "taken.zip").write_bytes(b"mine")
    with pytest.raises(InvalidInputError, match="exists; pass overwrite"):
        export_bioimageio(missing_model, tmp_path / "taken.zip", authors=["A"], licence="MIT")
    assert (tmp_path / "taken.zip").read_bytes() == b"mine"
    with pytest.raises(InvalidInputError, match="neither a registry model nor an existing file"):
        export_bioimageio(missing_model, tmp_path / "b.zip", authors=["A"], licence="MIT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.zip"]


def test_cli_export_onnx_and_errors(tmp_path, small_hq_checkpoint, capsys):
    out = tmp_path / "onnx"
    assert cli.main(["export", "onnx", small_hq_checkpoint, str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "sum_hq_onnx.json"]
    assert cli.main(["export", "onnx", small_hq_checkpoint, str(out)]) == 2
    assert "exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert cli.main(["export", "bioimageio", small_hq_checkpoint, str(tmp_path / "p.zip"), "--author", "A",
                     "--licence", "not-a-licence"]) == 2  # fmt: skip
    assert "SPDX" in capsys.readouterr().err


def test_zip_member_larger_than_the_limit_is_refused_before_unpacking(package, tmp_path, monkeypatch):
    """A zip bomb (a member declaring gigabytes) must not be unpacked into the temporary folder."""
    import sum_core.bioimageio_package as pkg

    _, path = package
    size = zipfile.ZipFile(path).getinfo("weights.pt").file_size
    monkeypatch.setattr(pkg, "MAX_MEMBER_BYTES", size - 1)  # the real limit is 8 GB: scale it to this file
    written = []
    monkeypatch.setattr(pkg, "_copy_checked", lambda *args: written.append(args))
    with pytest.raises(CheckpointError, match="declares .* more than"):
        load_model(path, device="cpu")
    assert written == []
    monkeypatch.setattr(pkg, "MAX_RDF_BYTES", 10)
    with pytest.raises(CheckpointError, match="rdf.yaml declares"):
        load_model(path, device="cpu")


def test_ais_package_gives_instance_labels(ais_package):
    """With an AIS decoder: instance_labels (micro-sam's watershed of the AIS maps, not a graph) from the
    pytorch_state_dict weights; model.onnx, which cannot label, is an attachment, not weights."""
    model, path = ais_package
    descr = spec.load_description(path, perform_io_checks=True)
    assert isinstance(descr, spec.ModelDescr), descr.validation_summary.format()
    assert [t.id for t in descr.outputs] == ["masks", "scores", "uncertainty", "ais_maps", "instance_labels"]
    assert descr.weights.pytorch_state_dict is not None and descr.weights.onnx is None
    assert [str(a.source.path) for a in descr.attachments] == ["model.onnx"]
    assert descr.outputs[4].data.type == "int32"
    tensors = package_tensors(path)
    maps, labels = tensors["ais_maps"][0], tensors["instance_labels"][0, 0]
    assert labels.dtype == np.int32
    assert np.array_equal(labels, instances_from_distance_maps(maps[0], maps[1], maps[2]).astype(np.int32))
    loaded = load_model(path, device="cpu")  # the round trip brings the AIS decoder too
    assert ais_decoder_of(loaded) is not None
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        emb, _ = loaded.image_encoder(loaded.preprocess(torch.from_numpy(tensors["image"])))
    expected = decode_ais_maps(loaded, ImageEmbedding(emb, None, None, (1024, 1024), (1024, 1024)))
    assert np.abs(maps - expected).max() <= 1e-4 * np.abs(expected).max()
    session = ort.InferenceSession(members(path)["model.onnx"], providers=["CPUExecutionProvider"])
    onnx_maps = session.run(["ais_maps"], {name: tensors[name] for name in PACKAGE_INPUTS})[0]
    assert np.abs(onnx_maps - tensors["ais_maps"]).max() <= 1e-4 * np.abs(expected).max()


def micro_sam_decoder_package(tmp_path, sam, decoder, **attachment) -> tuple:
    """micro-sam's export before the decoder went into the weights too: plain SAM state dict as the weights,
    the AIS decoder state (UNETR decoder keys) as the attachment ``vit_b_decoder.pt``."""
    weights, decoder_file = tmp_path / "vit_b.pt", tmp_path / "vit_b_decoder.pt"
    torch.save(sam.state_dict(), weights)
    torch.save(decoder.state_dict(), decoder_file)
    rdf = {
        "type": "model",
        "format_version": "0.5.3",
        "name": "sam-test-vit-b",
        "attachments": [{"source": "vit_b_decoder.pt", "sha256": sha256_of(decoder_file)} | attachment],
        "weights": {
            "pytorch_state_dict": {
                "source": "vit_b.pt",
                "sha256": sha256_of(weights),
                "architecture": {"source": "predictor_adaptor.py", "callable": "PredictorAdaptor",
                                 "kwargs": {"model_type": "vit_b"}},
                "pytorch_version": "2.1",
            }
        },
    }  # fmt: skip
    return {"rdf.yaml": yaml.safe_dump(rdf).encode(), "vit_b.pt": weights.read_bytes(),
            "vit_b_decoder.pt": decoder_file.read_bytes(),
            "predictor_adaptor.py": b"# micro-sam's adaptor\n"}  # fmt: skip


def test_micro_sam_decoder_attachment_is_loaded_and_hash_checked(tmp_path):
    torch.manual_seed(17)
    sam = build_from_config(small_vit_config(hq=False))
    decoder = AISDecoder(AISDecoderConfig(initial_features=8))
    files = micro_sam_decoder_package(tmp_path, sam, decoder)
    package = tmp_path / "micro_sam_ais.zip"
    write_zip(package, files)
    loaded = load_model(package, device="cpu", ais_decoder=True)
    for key, value in sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    for key, value in decoder.state_dict().items():
        assert torch.equal(ais_decoder_of(loaded).state_dict()[key], value), key
    folder = tmp_path / "unpacked"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    assert ais_decoder_of(load_model(folder, device="cpu")) is not None
    damaged = bytearray(files["vit_b_decoder.pt"])
    damaged[len(damaged) // 2] ^= 0xFF
    write_zip(package, files | {"vit_b_decoder.pt": bytes(damaged)})
    with pytest.raises(CheckpointError, match="vit_b_decoder.pt: sha256 .* differs"):
        load_model(package, device="cpu")
    unhashed = micro_sam_decoder_package(tmp_path, sam, decoder, sha256=None)
    write_zip(package, unhashed)
    with pytest.raises(CheckpointError, match="AIS decoder attachment 'vit_b_decoder.pt' declare no sha256"):
        load_model(package, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("which", "formats"), [("sum", ["pytorch_state_dict", "onnx"]), ("ais", ["pytorch_state_dict"])]
)
def test_bioimageio_core_test_model(package, ais_package, which, formats):
    """bioimageio.core's own check of a package: it loads each weights format (our architecture from
    sum_core.export.package_model, or the ONNX file), reproduces the test outputs and runs the declared
    input sizes. Installed with --no-deps (it pins bioimageio.spec 0.5.12 but runs with 0.5.14)."""
    core = pytest.importorskip("bioimageio.core")
    _, path = package if which == "sum" else ais_package
    for weight_format in formats:
        summary = core.test_model(str(path), weight_format=weight_format, devices=["cpu"])
        assert summary.status == "passed", summary.format()
