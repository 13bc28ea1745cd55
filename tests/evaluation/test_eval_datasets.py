"""Tests of loading evaluation samples from folders and CSV files."""

from __future__ import annotations

from pathlib import Path

import pytest

from opticam_rt.errors import InputError
from opticam_rt.evaluation.datasets import Sample, load_csv, load_folder, load_samples

CLASSES = ["tench", "goldfish", "great white shark"]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # only the name matters: images are not opened when listing
    return path


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    b = touch(tmp_path / "b.JPG")
    a = touch(tmp_path / "a.png")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden.png")
    assert load_samples(tmp_path) == [Sample(a, None, []), Sample(b, None, [])]


def test_class_subfolders_by_index_and_by_name(tmp_path: Path) -> None:
    x = touch(tmp_path / "2" / "x.jpg")
    y = touch(tmp_path / "goldfish" / "deeper" / "y.jpeg")
    z = touch(tmp_path / "z.png")
    (tmp_path / "empty-notes").mkdir()  # no image in it: its name needs no resolving
    samples = load_samples(tmp_path, CLASSES)
    assert samples == [Sample(z, None), Sample(x, 2), Sample(y, 1)]


def test_class_name_without_class_list_or_unknown_name(tmp_path: Path) -> None:
    touch(tmp_path / "goldfish" / "y.jpg")
    with pytest.raises(InputError, match="goldfish"):
        load_folder(tmp_path)
    with pytest.raises(InputError, match="goldfish"):
        load_folder(tmp_path, ["tench"])
    (tmp_path / "goldfish" / "y.jpg").unlink()
    touch(tmp_path / "7" / "y.jpg")
    with pytest.raises(InputError, match="out of range"):
        load_folder(tmp_path, CLASSES)
    assert load_folder(tmp_path)[0].label == 7  # no list: any index goes


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no image"):
        load_samples(tmp_path)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_labels_and_several_boxes(tmp_path: Path) -> None:
    a = touch(tmp_path / "imgs" / "a.jpg")
    b = touch(tmp_path / "imgs" / "b.jpg")
    c = touch(tmp_path / "c.jpg")
    csv_path = write_csv(tmp_path / "data.csv", (
        "path,label,x0,y0,x1,y1\n"
        "imgs/a.jpg,goldfish,1,2,30,40\n"
        "imgs/b.jpg,2,,,,\n"
        "imgs/a.jpg,goldfish,50,60,70.0,80\n"
        f"{c},,0,0,10,10\n"
    ))
    samples = load_samples(csv_path, CLASSES)
    assert samples == [
        Sample(a, 1, [(1, 2, 30, 40), (50, 60, 70, 80)]),
        Sample(b, 2, []),
        Sample(c, None, [(0, 0, 10, 10)]),
    ]


def test_csv_without_box_columns(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.jpg")
    csv_path = write_csv(tmp_path / "d.csv", "path,label\na.jpg,0\n")
    assert load_csv(csv_path) == [Sample(a, 0, [])]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\na.jpg,catfish\n", "catfish"),  # unknown name: named with the file
        ("path,label\nmissing.jpg,0\n", "does not exist"),
        ("path,label,x0,y0\na.jpg,0,1,2\n", "all of x0"),  # incomplete box columns
        ("path,label\na.jpg,0\na.jpg,1\n", "label"),  # conflicting labels
        ("file,class\na.jpg,0\n", "header"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    touch(tmp_path / "a.jpg")
    csv_path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(InputError, match=message) as info:
        load_samples(csv_path, CLASSES)
    assert "bad.csv" in str(info.value)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("1,2,,", "needs all of"),  # incomplete box row
        ("5,5,5,9", "empty"),  # zero-width box
        ("-3,0,4,4", "negative"),
        ("0,0,inf,4", "finite"),  # was OverflowError
        ("0,0,1e300,4", "finite"),  # was a 300-digit number
        ("0,0,nan,4", "finite"),
        ("a,b,c,d", "numbers"),
    ],
)
def test_bad_box_is_that_images_problem_naming_the_line(tmp_path: Path, box: str, message: str) -> None:
    """Issue 21, defect 4: a bad box is kept as that image's problem (file and line), the other rows load."""
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "b.jpg")
    csv_path = write_csv(tmp_path / "bad.csv", f"path,label,x0,y0,x1,y1\nb.jpg,0,0,0,4,4\na.jpg,0,{box}\n")
    good, bad = load_samples(csv_path, CLASSES)
    assert good.boxes == [(0, 0, 4, 4)] and good.box_problems == [] and good.box_sources == [f"{csv_path}:2"]
    assert bad.boxes == [] and len(bad.box_problems) == 1
    assert bad.box_problems[0].startswith(f"{csv_path}:3: ") and message in bad.box_problems[0]
    assert len(bad.box_problems[0]) < 250 and "\n" not in bad.box_problems[0]


def test_unknown_label_error_names_file_line_and_label(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    csv_path = write_csv(tmp_path / "labels.csv", "path,label\na.jpg,0\na.jpg,0\n\na.jpg,0\nb.jpg,x\n")
    touch(tmp_path / "b.jpg")
    with pytest.raises(InputError) as info:
        load_samples(csv_path, CLASSES)
    text = str(info.value)
    assert "labels.csv" in text and "'x'" in text


def test_source_must_be_a_folder_or_csv(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_samples(tmp_path / "nope")
    with pytest.raises(InputError, match="neither"):
        load_samples(touch(tmp_path / "list.txt"))
