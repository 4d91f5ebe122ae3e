"""BioImage.IO packages (issue 17): export validates with bioimageio.spec, its ONNX weights reproduce its
test tensors, and sum_core.load_model reads packages (ours and micro-sam's layout) with sha256 checks."""

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
from sum_core.modeling import ImageEmbedding, build_from_config

ort = pytest.importorskip("onnxruntime")
spec = pytest.importorskip("bioimageio.spec")
from sum_core.export import export_bioimageio  # noqa: E402
from sum_core.export.bioimageio import sha256_of  # noqa: E402


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
    assert [t.id for t in descr.inputs] == ["image", "point_coords", "point_labels"]
    assert [t.id for t in descr.outputs] == ["masks", "scores", "uncertainty"]
    cited = " ".join(c.text for c in descr.cite)
    assert all(title in cited for title in ("Segment Anything.", "in High Quality", "Uncertainty-aware Fine-tuning"))
    assert str(descr.license) == "Apache-2.0" and descr.covers


def test_onnx_weights_reproduce_the_test_outputs(package):
    """The package's test outputs are our torch model's; its ONNX graph computes them again."""
    _, path = package
    files = members(path)
    tensors = {name[5:-4]: np.load(io.BytesIO(data)) for name, data in files.items() if name.startswith("test_")}
    session = ort.InferenceSession(files["model.onnx"], providers=["CPUExecutionProvider"])
    feeds = {name: tensors[name] for name in ("image", "point_coords", "point_labels")}
    for name, actual in zip(["masks", "scores", "uncertainty"], session.run(None, feeds)):
        expected = tensors[name]
        assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max(), name
    assert (tensors["masks"] > 0).any()  # the click's object is segmented (a non-empty mask)


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
    coords, labels = (torch.from_numpy(np.load(folder / f"test_{k}.npy")) for k in ("point_coords", "point_labels"))
    with torch.no_grad():  # the library's decode step on the loaded model gives the package's test scores
        emb, early = from_folder.image_encoder(from_folder.preprocess(image))
        embedding = ImageEmbedding(emb, early, None, (1024, 1024), (1024, 1024))
        out = from_folder.decode(embedding, (coords[:, :1], labels[:, :1]), task=1)  # decode pads itself
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
