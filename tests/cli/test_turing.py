"""``synthmri turing make|score``: a blinded kit from two folders, a rater's answers scored."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from synthmri.core.phantoms import write_phantoms

Cli = Callable[..., tuple[int, str, str]]


def _answer(key: Path, answers: Path, wrong: int) -> None:
    """A rater who answers every image, wrongly for the first ``wrong`` of the key."""
    flip = {"real": "synthetic", "synthetic": "real"}
    entries = json.loads(key.read_text())["images"]
    rows = [
        {"image": e["image"], "answer": flip[e["truth"]] if i < wrong else e["truth"]}
        for i, e in enumerate(entries)
    ]
    answers.write_text(json.dumps(rows))


def test_turing_cli_make_and_score(cli: Cli, tmp_path: Path) -> None:
    real, syn, out = tmp_path / "real", tmp_path / "syn", tmp_path / "kit"
    write_phantoms(real, 8, 32, seed=0)
    write_phantoms(syn, 8, 32, seed=1)
    code, _, err = cli(
        "turing", "make", "--real", str(real), "--synthetic", str(syn), "--n", "8",
        "--out", str(out), "--seed", "1", "--size", "32",
    )  # fmt: skip
    assert code == 0, err
    assert len(list((out / "rater").glob("img_*.png"))) == 8 and (out / "key.json").is_file()
    answers, scores = tmp_path / "answers.json", tmp_path / "scores.json"
    _answer(out / "key.json", answers, wrong=2)
    code, printed, err = cli("turing", "score", str(answers), str(out / "key.json"),
                             "--out", str(scores))  # fmt: skip
    assert code == 0, err
    for label in ("Real as Real", "Real as Synthetic", "Synthetic as Real",
                  "Synthetic as Synthetic", "accuracy"):  # fmt: skip
        assert label in printed
    data = json.loads(scores.read_text())
    assert data["accuracy"] == pytest.approx(6 / 8) and data["n"] == 8
    table = tmp_path / "scores.csv"
    assert cli("turing", "score", str(answers), str(out / "key.json"), "--out", str(table))[0] == 0
    with open(table, newline="") as fh:
        assert dict(csv.reader(fh))["accuracy"] == str(6 / 8)
    code, _, err = cli("turing", "score", str(tmp_path / "nope.json"), str(out / "key.json"))
    assert code == 2 and "not found" in err
    code, _, err = cli("turing", "make", "--real", str(tmp_path / "nope"),
                       "--synthetic", str(syn), "--out", str(tmp_path / "k2"))  # fmt: skip
    assert code == 2
