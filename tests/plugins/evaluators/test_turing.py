"""The visual Turing test: kit, score, the turing_kit evaluator, and the page in Chromium."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from synthmri.core.errors import ConfigError, DataError
from synthmri.core.interfaces import EvalInputs
from synthmri.core.phantoms import make_phantoms
from synthmri.core.plugins import get_plugin
from synthmri.core.training import RunContext
from synthmri.plugins.evaluators.turing import (
    TuringKitEvaluator,
    load_key,
    make_kit,
    score_answers,
)

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    real = make_phantoms(16, 32, seed=0).images
    # "synthetic": blurred, darker phantoms of another seed, at another size (48 px)
    syn = make_phantoms(16, 48, seed=9).images * 0.6
    return {"real": real, "synthetic": syn}


def _write_answers(path: Path, key: Path, wrong: set[str] = frozenset(), skip: int = 0) -> None:
    """Answers: correct except for the images in ``wrong``; the last ``skip`` left blank."""
    truth = load_key(key)
    flip = {"real": "synthetic", "synthetic": "real"}
    rows = []
    for i, (name, t) in enumerate(sorted(truth.items())):
        answer = None if i >= len(truth) - skip else (flip[t] if name in wrong else t)
        rows.append({"image": name, "answer": answer})
    path.write_text(json.dumps(rows))


def test_kit_is_blinded_and_round_trips(images: dict[str, torch.Tensor], tmp_path: Path) -> None:
    key_path = make_kit(
        images["real"], images["synthetic"], tmp_path / "kit", n=10, seed=3, size=40
    )
    rater = tmp_path / "kit" / "rater"
    assert key_path == tmp_path / "kit" / "key.json" and rater.is_dir()
    pngs = sorted(rater.glob("*.png"))
    assert [p.name for p in pngs] == [f"img_{i:03d}.png" for i in range(1, 11)]
    assert sorted(os.listdir(rater)) == [*(p.name for p in pngs), "index.html"]
    key = json.loads(key_path.read_text())
    truths = [e["truth"] for e in key["images"]]
    assert truths.count("real") == 5 and truths.count("synthetic") == 5
    # the files give nothing away: same mode, size, range, no metadata
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "L" and im.size == (40, 40) and not im.info.get("text")
            lo, hi = im.getextrema()
            assert lo == 0 and hi == 255
    page = (rater / "index.html").read_text()
    embedded = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
    assert set(embedded) == {"id", "images"}
    assert [set(e) for e in embedded["images"]] == [{"name", "src"}] * 10
    assert [e["name"] for e in embedded["images"]] == [p.name for p in pngs]
    assert "http://" not in page and "https://" not in page
    # same seed -> same kit; refuses to overwrite
    with pytest.raises(ConfigError):
        make_kit(images["real"], images["synthetic"], tmp_path / "kit", n=10, seed=3, size=40)
    again = make_kit(images["real"], images["synthetic"], tmp_path / "kit2", n=10, seed=3, size=40)
    assert json.loads(again.read_text())["images"] == key["images"]

    answers = tmp_path / "answers.json"
    wrong = [e["image"] for e in key["images"] if e["truth"] == "synthetic"][:2]
    _write_answers(answers, key_path, wrong=set(wrong), skip=1)
    s = score_answers(answers, key_path)
    last_truth = sorted(load_key(key_path).items())[-1][1]
    assert s.n == 9 and s.n_unanswered == 1
    assert s.synthetic_as_real == 2
    assert s.real_as_real + s.synthetic_as_synthetic == 7
    assert s.real_as_synthetic == 0
    assert (s.real_as_real == 5) == (last_truth != "real")
    assert s.accuracy == pytest.approx(7 / 9)


def test_score_statistics_match_scipy(images: dict[str, torch.Tensor], tmp_path: Path) -> None:
    from scipy.stats import beta, binomtest

    key_path = make_kit(images["real"], images["synthetic"], tmp_path, n=16, seed=0, size=32)
    answers = tmp_path / "answers.json"
    _write_answers(answers, key_path)  # a perfect rater
    s = score_answers(answers, key_path)
    assert s.accuracy == 1.0 and s.real_as_real == s.synthetic_as_synthetic == 8
    assert s.p_value == pytest.approx(2 * 0.5**16)
    assert s.accuracy_ci[0] == pytest.approx(beta.ppf(0.025, 16, 1))  # Clopper-Pearson
    assert s.accuracy_ci[1] == 1.0
    # a rater who calls everything real: chance
    truth = load_key(key_path)
    answers.write_text(json.dumps([{"image": k, "answer": "real"} for k in truth]))
    s = score_answers(answers, key_path)
    assert (s.real_as_real, s.synthetic_as_real, s.accuracy) == (8, 8, 0.5)
    assert s.p_value == pytest.approx(binomtest(8, 16, 0.5).pvalue) and s.p_value == 1.0
    # the CSV the page downloads scores the same
    with open(tmp_path / "answers.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "answer"])
        w.writerows([k, "real"] for k in truth)
    assert score_answers(tmp_path / "answers.csv", key_path).accuracy == 0.5


def test_score_rejects_bad_files(images: dict[str, torch.Tensor], tmp_path: Path) -> None:
    key_path = make_kit(images["real"], images["synthetic"], tmp_path, n=6, seed=0, size=32)
    bad = tmp_path / "bad.json"
    cases = {
        "{not json": "not a valid JSON",
        json.dumps({"x": 1}): "list",
        json.dumps([{"image": "img_999.png", "answer": "real"}]): "not in the key",
        json.dumps([{"image": "img_001.png", "answer": "maybe"}]): "not real or synthetic",
        json.dumps([{"image": "img_001.png", "answer": None}]): "no image is answered",
    }
    for text, message in cases.items():
        bad.write_text(text)
        with pytest.raises(DataError, match=message):
            score_answers(bad, key_path)
    with pytest.raises(DataError, match="not found"):
        score_answers(tmp_path / "missing.json", key_path)
    bad.write_text(json.dumps([]))
    with pytest.raises(DataError, match="not a Turing key"):
        score_answers(key_path, bad)


def test_kit_needs_enough_images(images: dict[str, torch.Tensor], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs"):
        make_kit(images["real"][:3], images["synthetic"], tmp_path, n=10)


def test_turing_kit_evaluator_writes_into_the_run(tmp_path: Path) -> None:
    data = make_phantoms(24, 32, seed=0)
    syn = make_phantoms(12, 32, seed=5)
    inputs = EvalInputs(
        train=data.subset(range(12)),
        val=data.subset([]),
        test=data.subset(range(12, 24)),
        synthetic={"dcgan": syn},
    )
    run = RunContext(tmp_path, seed=0)
    out = TuringKitEvaluator({"n": 10, "size": 32}).evaluate(inputs, run)
    assert out == {}
    kit = tmp_path / "turing" / "dcgan"
    assert (kit / "key.json").is_file() and (kit / "rater" / "index.html").is_file()
    assert len(list((kit / "rater").glob("img_*.png"))) == 10
    sources = {e["source"] for e in json.loads((kit / "key.json").read_text())["images"]}
    assert {s.rsplit(":", 1)[0] for s in sources} == {"phantom:seed=0", "phantom:seed=5"}
    assert (tmp_path / "turing" / "README.txt").is_file()
    assert TuringKitEvaluator().evaluate(inputs, RunContext()) == {}  # no run dir: nothing


def test_the_kit_is_reached_through_the_registry() -> None:
    cls = get_plugin("evaluator", "turing_kit")
    assert cls is TuringKitEvaluator
    assert cls.make_kit is make_kit and cls.score_answers is score_answers


# ----------------------------------------------------------------------------- the page


def _browser():
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium (Debian package 'chromium') for the page test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("python package 'playwright' is not installed (page test)")
    return sync_playwright


def test_rater_page_in_headless_chromium(images: dict[str, torch.Tensor], tmp_path: Path) -> None:
    sync_playwright = _browser()
    n = 10
    key_path = make_kit(images["real"], images["synthetic"], tmp_path / "kit", n=n, seed=2, size=64)
    truth = load_key(key_path)
    names = sorted(truth)
    page_url = (tmp_path / "kit" / "rater" / "index.html").resolve().as_uri()
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            context = browser.new_context(
                accept_downloads=True, viewport={"width": 1100, "height": 820}
            )
            page = context.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_url)
            assert page.locator("#counter").inner_text() == f"Image 1 of {n}"
            planned: dict[str, str] = {}
            for i, name in enumerate(names):
                assert page.locator("#image").get_attribute("data-name") == name
                # answer correctly, except the 3rd and 4th; alternate clicks and keys
                flip = {"real": "synthetic", "synthetic": "real"}
                answer = flip[truth[name]] if i in (2, 3) else truth[name]
                if i % 2:
                    page.keyboard.press("r" if answer == "real" else "s")
                else:
                    page.click(f"#btn-{answer}")
                planned[name] = answer
            assert page.locator("#progress-text").inner_text() == f"Answered {n} / {n}"
            # go back once and change the answer there
            page.keyboard.press("ArrowLeft")
            back = names[-2]
            assert page.locator("#image").get_attribute("data-name") == back
            changed = "synthetic" if planned[back] == "real" else "real"
            page.keyboard.press("r" if changed == "real" else "s")
            planned[back] = changed
            # arrows move both ways; a chosen answer is highlighted
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowRight")
            assert page.locator("#image").get_attribute("data-name") == names[-1]
            assert "chosen" in page.locator(f"#btn-{planned[names[-1]]}").get_attribute("class")
            page.screenshot(path="/tmp/turing.png", full_page=True)
            with page.expect_download() as info:
                page.click("#btn-json")
            download = info.value
            assert download.suggested_filename == "answers.json"
            answers = tmp_path / "answers.json"
            download.save_as(answers)
            with page.expect_download() as info_csv:
                page.click("#btn-csv")
            csv_path = tmp_path / "answers.csv"
            info_csv.value.save_as(csv_path)
        finally:
            browser.close()
    rows = json.loads(answers.read_text())
    assert rows == [{"image": k, "answer": planned[k]} for k in names]
    s = score_answers(answers, key_path)
    correct = sum(planned[k] == truth[k] for k in names)
    assert s.n == n and s.accuracy == pytest.approx(correct / n)
    real_as_syn = sum(truth[k] == "real" and planned[k] == "synthetic" for k in names)
    syn_as_real = sum(truth[k] == "synthetic" and planned[k] == "real" for k in names)
    assert (s.real_as_synthetic, s.synthetic_as_real) == (real_as_syn, syn_as_real)
    assert score_answers(csv_path, key_path) == s
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests)  # no network
