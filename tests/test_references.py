"""Reference captions for `mils eval`: both layouts, matching to samples, and bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mils._references import clean_text, load_references
from mils.engine import ConfigError


def _coco(path: Path, images: list[Any], annotations: list[Any]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_references_match_by_id_file_name_or_stem(tmp_path: Path) -> None:
    """A sample finds its references by its id, its input's file name, or that name's stem."""
    refs = load_references(
        _coco(
            tmp_path / "refs.json",
            [{"id": 1, "file_name": "val/cat.jpg"}, {"id": 2, "file_name": "dog.png"}],
            [
                {"image_id": 1, "caption": "A cat\non a  mat."},
                {"image_id": 1, "caption": "a sleeping cat"},
                {"image_id": 2, "caption": "a dog"},
            ],
        )
    )
    assert refs.match("cat", ()) == ["A cat on a mat.", "a sleeping cat"]
    assert refs.match("x", ["/photos/cat.jpg"]) == refs.match("cat", ())
    assert refs.match("dog-2", ["/elsewhere/dog.png"]) == ["a dog"]
    assert refs.match("bird", ["/photos/bird.jpg"]) is None


def test_a_stem_shared_by_two_files_matches_only_by_full_name(tmp_path: Path) -> None:
    """cat.jpg and cat.png are two images: "cat" alone is ambiguous and matches neither."""
    refs = load_references(
        _coco(
            tmp_path / "refs.json",
            [{"id": 1, "file_name": "cat.jpg"}, {"id": 2, "file_name": "cat.png"}],
            [{"image_id": 1, "caption": "one"}, {"image_id": 2, "caption": "two"}],
        )
    )
    assert refs.match("cat", ()) is None
    assert refs.match("cat", ["a/cat.png"]) == ["two"]


def test_folder_references_are_one_file_per_sample_one_line_each(tmp_path: Path) -> None:
    """<sample id>.txt holds a reference per line; blank lines are skipped, other files ignored."""
    (tmp_path / "scene-1.txt").write_text("a red circle\n\n  a red  disc \n")
    (tmp_path / "notes.md").write_text("not a reference")
    refs = load_references(tmp_path)
    assert refs.match("scene-1", ()) == ["a red circle", "a red disc"]
    assert refs.names == ["scene-1"]


def test_clean_text_puts_a_caption_on_one_line_without_meteor_separators() -> None:
    """Line breaks would shift the Java tokenizer's lines; `|||` splits METEOR's fields."""
    assert clean_text(" a\u2028cat |||\r\non\ta mat ") == "a cat on a mat"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "do not exist"),
        ("{not json", "are not JSON"),
        ("[1, 2]", 'have no "images" and "annotations"'),
        ('{"images": {}, "annotations": []}', '"images" is not a list'),
        ('{"images": [{"id": 1}], "annotations": []}', 'images[0] has no "file_name"'),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], '
            '"annotations": [{"image_id": 9, "caption": "x"}]}',
            "annotations[0] has image_id 9, which no entry",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a/x.jpg"}, {"id": 2, "file_name": "b/x.jpg"}], '
            '"annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "y"}]}',
            "name two images 'x.jpg'",
        ),
        ('{"images": [], "annotations": []}', "hold no caption"),
    ],
)
def test_bad_reference_files_are_refused_naming_the_file(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    """Each message names the file and what is wrong with it."""
    path = tmp_path / "refs.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="references") as caught:
        load_references(path)
    assert expected in str(caught.value) and str(path) in str(caught.value)


def test_a_folder_without_text_files_is_refused(tmp_path: Path) -> None:
    """The message says which files the folder should hold."""
    with pytest.raises(ConfigError, match=r"has no \.txt file.*<sample id>\.txt"):
        load_references(tmp_path)
