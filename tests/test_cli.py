"""The `fastes sketch` command: outputs, summary, exit status, errors a user can act on."""
from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fastes.cli import main, sample_images


@pytest.fixture()
def mixed_folder(tmp_path, sample_paths):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(sample_paths[0], d / "a.jpg")
    shutil.copy(sample_paths[1], d / "sub" / "b.jpg")
    shutil.copy(sample_paths[2], d / "sub" / "a.jpg")  # same stem, other folder
    cv2.imwrite(str(d / "blank.png"), np.full((200, 200), 128, np.uint8))  # no face
    (d / "notes.jpg").write_text("not an image")  # unreadable
    (d / "readme.txt").write_text("ignored: not an image suffix")
    return d


def test_sketch_folder_mixed(mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["sketch", str(mixed_folder), "--out", str(out), "--landmarks"])
    err = capsys.readouterr().err
    assert rc == 1  # one input failed
    assert "notes.jpg" in err
    assert "4 images, 3 faces, 1 images without a face, 1 unreadable files" in err
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert names == [
        "a_face0.png", "a_landmarks.png", "blank_landmarks.png",
        "sub/a_face0.png", "sub/a_landmarks.png", "sub/b_face0.png", "sub/b_landmarks.png",
    ]
    sk = cv2.imread(str(out / "a_face0.png"), cv2.IMREAD_UNCHANGED)
    assert sk.shape == (250, 250) and set(np.unique(sk)) == {0, 255}
    assert not list(out.rglob("*.tmp"))


def test_sketch_default_inputs_are_the_bundled_samples(tmp_path, capsys):
    rc = main(["sketch", "--out", str(tmp_path / "o"), "--size", "64"])
    err = capsys.readouterr().err
    assert rc == 0
    n = len(sample_images())
    assert f"{n} images, {n} faces, 0 images without a face, 0 unreadable files" in err
    assert "CC BY 4.0" in err
    sk = cv2.imread(str(next((tmp_path / "o").glob("*_face0.png"))), cv2.IMREAD_UNCHANGED)
    assert sk.shape == (64, 64)


def test_same_file_twice_does_not_overwrite(tmp_path, sample_paths, capsys):
    rc = main(["sketch", str(sample_paths[0]), str(sample_paths[0]), "--out", str(tmp_path)])
    assert rc == 0
    stem = sample_paths[0].stem
    assert (tmp_path / f"{stem}_face0.png").exists() and (tmp_path / f"{stem}_2_face0.png").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["sketch"],  # --out missing
        ["sketch", "--out", "x", "--size", "4"],
        ["sketch", "--out", "x", "--thickness", "0"],
        ["sketch", "--out", "x", "--detect-size", "8"],
        ["sketch", "--out", "x", "--size", "ten"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        rc = main(args)
        raise SystemExit(rc)
    assert e.value.code == 2


def test_missing_input_is_a_failed_input_not_a_crash(tmp_path, capsys):
    rc = main(["sketch", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "nope.jpg: no such file" in err and "Traceback" not in err


def test_empty_folder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["sketch", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no image files" in capsys.readouterr().err


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["sketch", "--out", str(f)]) == 2


def test_console_script_help():
    exe = shutil.which("fastes")
    cmd = [exe] if exe else [sys.executable, "-m", "fastes"]
    r = subprocess.run(cmd + ["sketch", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--landmarks" in r.stdout and "usage error" in r.stdout
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "sketch" in r.stdout


def test_evaluate_takes_shipped_model_names(tmp_path, sample_paths, capsys):
    import json

    from fastes.pipeline import shipped_models

    if not shipped_models():
        pytest.skip("no shipped model in models/")
    m = tmp_path / "m.csv"
    m.write_text("path,class4,dataset\n" + "".join(f"{p},positive,london\n" for p in sample_paths[:2]))
    rc = main(["evaluate", str(m), "--model", "default", "--json", str(tmp_path / "e.json"), "--no-progress"])
    assert rc == 0
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["n"] == 2 and e["detected"] == 2
    assert main(["evaluate", str(m), "--model", "no_such_model", "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err
    rc = main(["evaluate", str(m), "--model", "default", "--tta", "4", "--json", str(tmp_path / "t.json"),
               "--no-progress"])
    assert rc == 0 and json.loads((tmp_path / "t.json").read_text())["tta"] == 4
    assert main(["evaluate", str(m), "--model", "default", "--tta", "-1", "--no-progress"]) == 2
    assert "--tta" in capsys.readouterr().err
