"""Training pipeline on tiny generated data: split, dedupe, augment, labels, train + export.

No image from ../shared is used: every image is generated here. The end-to-end test trains
one epoch on 24 synthetic 64x64 images with three findings and exports a real int8 TFLite.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.lab.train.augment import AugmentConfig, augment
from kiosk.lab.train.data import (
    DataError,
    Sample,
    deduplicate,
    patient_id,
    read_label_csv,
    read_split_csv,
    split_by_patient,
    write_split_csv,
)
from kiosk.stats import auroc_or_nan as auroc
from kiosk.stats import ece_equal_mass, sens_spec, youden_threshold


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person1_virus_6.jpeg", "person1"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0001-0001-0002.jpeg", "IM-0001"),
        ("NORMAL2-IM-0123-0001.jpeg", "NORMAL2-IM-0123"),
        ("NORMAL/NORMAL2-IM-0123-0001-0001.jpeg", "NORMAL2-IM-0123"),
        ("CheXpert-v1.0/train/patient00042/study1/view1_frontal.jpg", "patient00042"),
        ("files/p10/p10000032/s50414267/abc.jpg", "p10000032"),
        ("odd-name.png", "odd-name"),
    ],
)
def test_patient_id(name: str, expected: str) -> None:
    assert patient_id(name) == expected


def _write(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((16, 16), value, np.uint8)
    cv2.imwrite(str(path), img)
    return path


def test_deduplicate_keeps_one_copy_and_drops_conflicting_labels(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.png", 10)
    a_copy = tmp_path / "z.png"
    a_copy.write_bytes(a.read_bytes())
    b = _write(tmp_path / "b.png", 20)
    b_conflict = tmp_path / "c.png"
    b_conflict.write_bytes(b.read_bytes())
    c = _write(tmp_path / "d.png", 30)
    samples = [
        Sample(a, "a.png", "p1", (1.0,), (1.0,)),
        Sample(a_copy, "z.png", "p9", (1.0,), (1.0,)),
        Sample(b, "b.png", "p2", (0.0,), (1.0,)),
        Sample(b_conflict, "c.png", "p3", (1.0,), (1.0,)),
        Sample(c, "d.png", "p4", (0.0,), (1.0,)),
    ]
    kept, dropped = deduplicate(samples)
    assert [s.name for s in kept] == ["a.png", "d.png"]
    assert sorted(s.name for s in dropped) == ["b.png", "c.png", "z.png"]
    assert all(len(s.sha256) == 64 for s in kept)


def _fake_samples(n_patients: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        label = float(rng.random() < 0.7)
        for k in range(int(rng.integers(1, 5))):
            out.append(
                Sample(
                    Path(f"x/{p}_{k}.png"), f"person{p}_x_{k}.png", f"person{p}", (label,), (1.0,)
                )
            )
    return out


def test_split_by_patient_is_disjoint_stratified_and_deterministic() -> None:
    samples = _fake_samples(400)
    split = split_by_patient(samples, (0.7, 0.15, 0.15), seed=3)
    where: dict[str, set[str]] = defaultdict(set)
    for s in split:
        where[s.patient].add(s.split)
    assert all(len(v) == 1 for v in where.values()), "a patient straddles two splits"
    patients = {sp: {p for p, v in where.items() if sp in v} for sp in ("train", "val", "holdout")}
    assert abs(len(patients["train"]) / 400 - 0.70) < 0.02
    assert abs(len(patients["val"]) / 400 - 0.15) < 0.02
    for sp in ("train", "val", "holdout"):
        pos = np.mean([s.labels[0] for s in split if s.split == sp])
        overall = np.mean([s.labels[0] for s in split])
        assert abs(pos - overall) < 0.08, f"{sp} is not stratified ({pos:.2f} vs {overall:.2f})"
    again = split_by_patient(samples, (0.7, 0.15, 0.15), seed=3)
    assert [s.split for s in again] == [s.split for s in split]
    other = split_by_patient(samples, (0.7, 0.15, 0.15), seed=4)
    assert [s.split for s in other] != [s.split for s in split]


def test_split_rejects_bad_fractions() -> None:
    with pytest.raises(DataError):
        split_by_patient(_fake_samples(5), (0.5, 0.5, 0.5))


def test_split_csv_round_trip(tmp_path: Path) -> None:
    samples = split_by_patient(_fake_samples(30), seed=1)
    for s in samples:
        _write(tmp_path / s.name, 1)
    csv_path = tmp_path / "split.csv"
    write_split_csv(samples, csv_path, ["pneumonia"])
    header = csv_path.read_text().splitlines()[0]
    assert header == "filename,label,patient,split"
    back = read_split_csv(csv_path, tmp_path)
    assert {(s.name, s.labels, s.patient, s.split) for s in back} == {
        (s.name, s.labels, s.patient, s.split) for s in samples
    }
    (tmp_path / samples[0].name).unlink()
    with pytest.raises(DataError, match="missing"):
        read_split_csv(csv_path, tmp_path)


def test_augment_keeps_shape_dtype_and_changes_pixels() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:80]
    img = ((np.sin(yy / 7.0) + np.cos(xx / 5.0)) * 60 + 128).astype(np.uint8)
    changed = 0
    for _ in range(30):
        out = augment(img, rng, AugmentConfig())
        assert out.shape == img.shape and out.dtype == np.uint8
        changed += int(np.abs(out.astype(int) - img).mean() > 1.0)
    assert changed >= 20, "augmentations almost never changed the image"
    assert augment(img, rng, AugmentConfig(enabled=False)) is img
    a = augment(img, np.random.default_rng(5), AugmentConfig())
    b = augment(img, np.random.default_rng(5), AugmentConfig())
    assert np.array_equal(a, b), "same seed must give the same augmentation"


def _label_csv(tmp_path: Path) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(
        "Path,Sex,Age,Cardiomegaly,Edema,Pleural Effusion\n"
        "train/patient1/study1/view1.jpg,F,50,1,-1,\n"
        "train/patient2/study1/view1.jpg,M,60,0,1,-1\n"
        "train/patient2/study2/view1.jpg,M,60,-1,0,1\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("policy", "labels", "masks"),
    [
        ("ones", [(1, 1, 0), (0, 1, 1), (1, 0, 1)], [(1, 1, 1)] * 3),
        ("zeros", [(1, 0, 0), (0, 1, 0), (0, 0, 1)], [(1, 1, 1)] * 3),
        ("ignore", [(1, 0, 0), (0, 1, 0), (0, 0, 1)], [(1, 0, 1), (1, 1, 0), (0, 1, 1)]),
    ],
)
def test_label_csv_uncertain_policies(
    tmp_path: Path, policy: str, labels: list, masks: list
) -> None:
    samples, cols = read_label_csv(_label_csv(tmp_path), None, policy)  # type: ignore[arg-type]
    assert cols == ["Cardiomegaly", "Edema", "Pleural Effusion"]
    assert [s.labels for s in samples] == [tuple(float(v) for v in r) for r in labels]
    assert [s.mask for s in samples] == [tuple(float(v) for v in r) for r in masks]
    assert [s.patient for s in samples] == ["patient1", "patient2", "patient2"]


def test_label_csv_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Path,Edema\na.jpg,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: Edema='2'"):
        read_label_csv(bad)
    nopath = tmp_path / "nopath.csv"
    nopath.write_text("File,Edema\na.jpg,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="no Path column"):
        read_label_csv(nopath)
    with pytest.raises(DataError, match="not found"):
        read_label_csv(_label_csv(tmp_path), ["Fracture"])


def test_metrics_match_definitions() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.6
    s = np.round(y + rng.normal(0, 1, 300), 1)
    pos, neg = s[y][:, None], s[~y][None, :]
    brute = float(((pos > neg) + 0.5 * (pos == neg)).mean())
    assert auroc(y, s) == pytest.approx(brute)
    p = rng.random(20000)
    assert ece_equal_mass(rng.random(20000) < p, p) < 0.02
    assert ece_equal_mass(np.zeros(1000), np.full(1000, 0.3)) == pytest.approx(0.3)
    scores = np.r_[np.linspace(0.0, 0.4, 50), np.linspace(0.6, 1.0, 50)]
    labels = np.r_[np.zeros(50), np.ones(50)]
    t = youden_threshold(labels, scores)
    assert 0.4 < t <= 0.6
    assert sens_spec(labels, scores, t) == (1.0, 1.0)


def _tiny_dataset(root: Path, n: int = 24, size: int = 64) -> Path:
    """Synthetic 'X-rays': finding k brightens region k; some labels uncertain or blank."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        labels = (rng.random(3) < 0.5).astype(int)
        img = rng.normal(90, 15, (size, size))
        for k in range(3):
            if labels[k]:
                img[:, k * size // 3 : (k + 1) * size // 3] += 60
        rel = f"train/patient{i // 2:05d}/study{i % 2 + 1}/view1_frontal.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), np.clip(img, 0, 255).astype(np.uint8))
        cells = [str(v) for v in labels]
        if i % 5 == 0:
            cells[1] = "-1"
        if i % 7 == 0:
            cells[2] = ""
        rows.append([rel, *cells])
    csv_path = root / "train.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Path", "Cardiomegaly", "Edema", "Pleural Effusion"])
        w.writerows(rows)
    return csv_path


def test_one_epoch_multilabel_train_and_int8_export(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs torch (the `train` extra)")
    pytest.importorskip("tensorflow", reason="export needs tensorflow (the `train` extra)")
    from kiosk.lab.train.release import build_release
    from kiosk.lab.train.trainer import TrainConfig, train
    from kiosk.model.classifier import Classifier
    from kiosk.model.manifest import Manifest
    from kiosk.model.ood import OodDetector
    from kiosk.model.runtime import file_sha256

    csv_path = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "models"
    cfg = TrainConfig(
        out_dir=out,
        model_id="tiny-cxr",
        labels_csv=csv_path,
        uncertain="ignore",
        image_size=64,
        epochs=1,
        batch_size=8,
        freeze_blocks=0,
        pretrained=False,
        split_fractions=(0.6, 0.2, 0.2),
    )
    res = train(cfg)
    assert res.finding_codes == ("cardiomegaly", "edema", "pleural_effusion")
    assert res.state_path.is_file() and res.record_path.is_file()
    rel = build_release(
        res.state_path,
        res.split_path,
        csv_path.parent,
        out,
        "tiny-cxr",
        list(zip(res.finding_codes, res.finding_labels, strict=True)),
        image_size=64,
        calibration_count=12,
    )
    assert rel.export.port.max_abs_logits < 1e-3
    man = Manifest.load(rel.export.int8_manifest)
    assert man.finding_codes == res.finding_codes
    assert man.sha256 == file_sha256(man.model_path)
    assert man.input.height == 64
    assert all(0 < f.threshold < 1 for f in man.findings)
    clf = Classifier.from_manifest(rel.export.int8_manifest)
    assert clf.model.input.dtype == np.dtype(np.int8)
    pred = clf.predict(np.full((80, 70), 120, np.uint8))
    assert pred.logits.shape == (3,) and pred.probabilities.shape == (3,)
    assert pred.features is not None and pred.features.shape == (1280,)
    assert pred.cam is not None and pred.cam.shape == (2, 2, 3)
    det = OodDetector.load(out / man.ood["file"])
    assert det.threshold == pytest.approx(man.ood["threshold"], rel=1e-3)
    f32 = Manifest.load(rel.export.f32_manifest)
    assert f32.quantization == "float32" and f32.id == "tiny-cxr-f32"


def test_cli_imports_no_heavy_frameworks_and_evaluate_needs_data(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, kiosk.cli.model_train; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

    from click.testing import CliRunner

    from kiosk.cli.model_train import evaluate_command

    result = CliRunner().invoke(evaluate_command, ["--data", str(tmp_path / "absent")])
    assert result.exit_code != 0
    assert "is not there" in result.output and "--data" in result.output


def test_mac_count_of_lite0_matches_the_published_size() -> None:
    pytest.importorskip("torch", reason="counting MACs builds the PyTorch model (`train` extra)")
    from kiosk.lab.train.engines import count_macs

    # EfficientNet-Lite0 at 224 px is published as about 0.39 G multiply-adds (1000 classes);
    # with one output the classifier adds only 1280 of them.
    macs = count_macs(224, 1)
    assert 3.7e8 < macs < 4.0e8
    assert count_macs(224, 1000) - macs == 1280 * 999
