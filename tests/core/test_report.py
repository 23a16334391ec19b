"""The report answers first: the opening sentences from the metrics (with intervals, and
honest when synthetic data hurts or there is no baseline), the key figure, captions under
every figure, report.md in step, and the page checked in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from synthmri.core.answer import answer, key_figure
from synthmri.core.pipeline import run_recipe
from synthmri.core.recipe import parse_recipe

CHROMIUM = Path("/usr/bin/chromium")


def _row(train_on: str, acc: float, ci: tuple[float, float], gen: str | None = None,
         frac: float = 1.0, model: str = "cnn") -> dict[str, Any]:  # fmt: skip
    return {"classifier": model, "generator": gen, "train_on": train_on,
            "real_fraction": frac, "n_train": 40, "n_test": 60, "accuracy": acc,
            "accuracy_ci": list(ci)}  # fmt: skip


def _metrics(rows: list[dict[str, Any]], test: dict[str, int] | None = None) -> dict[str, Any]:
    counts = test or {"normal": 30, "tumor": 30}
    return {"data": {"class_counts": {"test": counts}}, "classification": rows,
            "generators": [{"generator": "gan"}, {"generator": "vae"}]}  # fmt: skip


def test_tstr_and_mixed_with_intervals() -> None:
    rows = [
        _row("real", 0.90, (0.82, 0.96)),
        _row("real", 0.60, (0.48, 0.72), frac=0.1),
        _row("synthetic", 0.63, (0.51, 0.75), gen="vae", frac=0.0),
        _row("synthetic", 0.72, (0.60, 0.80), gen="gan", frac=0.0),
        _row("mixed", 0.83, (0.73, 0.91), gen="gan", frac=0.1),
        _row("mixed", 0.91, (0.83, 0.97), gen="gan"),
    ]
    result = answer(_metrics(rows))
    assert result.sentences == [
        "Trained on gan's synthetic data alone, cnn reaches an accuracy of 72 % [60, 80] on "
        "the real test part: 80 % of the 90 % [82, 96] it reaches trained on all the real data "
        "(the intervals do not overlap).",
        "Adding it to 10 % of the real data raises cnn's accuracy from 60 % [48, 72] to "
        "83 % [73, 91] (+23 points).",
    ]
    assert result.generator == "gan" and result.task is not None
    assert "gan its best of 2 generators" in result.scope
    assert "60 real test images" in result.scope


def test_a_baseline_on_top_names_the_best_learned_generator() -> None:
    rows = [
        _row("real", 0.90, (0.82, 0.96)),
        _row("synthetic", 0.63, (0.51, 0.75), gen="vae", frac=0.0),
        _row("synthetic", 0.85, (0.75, 0.93), gen="gan", frac=0.0),
        _row("mixed", 0.92, (0.85, 0.97), gen="gan"),
    ]
    metrics = _metrics(rows)
    assert len(answer(metrics).sentences) == 2  # no baseline among the generators
    metrics["generators"][0]["baseline"] = True  # "gan" is a baseline here
    first, _, third = answer(metrics).sentences
    assert first.startswith("Trained on gan's synthetic data alone")
    assert third == (
        "The best learned generator, vae, reaches 63 % [51, 75] alone (-22 points against the "
        "baseline gan)."
    )
    metrics["generators"][0]["class_filter"] = {"normal": {"acceptance": 0.9}}
    assert answer(metrics).sentences[0].startswith(
        "Trained on gan's synthetic data alone (the samples a classifier of the real train part "
        "kept), cnn reaches"
    )


def test_synthetic_that_hurts_and_is_at_chance() -> None:
    rows = [
        _row("real", 0.85, (0.76, 0.93)),
        _row("synthetic", 0.55, (0.43, 0.67), gen="gan", frac=0.0),
        _row("mixed", 0.62, (0.50, 0.74), gen="gan"),
    ]
    first, second = answer(_metrics(rows, {"normal": 36, "tumor": 24})).sentences
    assert "not clearly better than always answering 'normal' (60 %)" in first
    assert second.startswith("Adding it to all the real data lowers cnn's accuracy from 85 %")
    assert "(-23 points; here the synthetic data hurts)" in second


def test_a_run_that_kept_a_share_of_the_train_part_says_so() -> None:
    rows = [
        _row("real", 0.80, (0.70, 0.88)),
        _row("synthetic", 0.70, (0.60, 0.80), gen="gan", frac=0.0),
        _row("mixed", 0.84, (0.76, 0.92), gen="gan"),
    ]
    metrics = _metrics(rows)
    metrics["data"]["train_fraction"] = 0.1
    first, second = answer(metrics).sentences
    assert "it reaches trained on 10 % of the real data" in first
    assert second.startswith("Adding it to 10 % of the real data raises")


def test_the_model_best_on_real_data_is_described() -> None:
    rows = [
        _row("real", 0.60, (0.48, 0.74), model="scratch"),  # says "tumor" for everything
        _row("real", 0.76, (0.64, 0.86), model="pretrained"),
        _row("synthetic", 0.60, (0.48, 0.74), gen="gan", frac=0.0, model="scratch"),
        _row("synthetic", 0.48, (0.34, 0.62), gen="gan", frac=0.0, model="pretrained"),
    ]
    result = answer(_metrics(rows, {"normal": 20, "tumor": 30}))
    (sentence,) = result.sentences
    assert sentence.startswith("Trained on gan's synthetic data alone, pretrained reaches an "
                               "accuracy of 48 % [34, 62]")  # fmt: skip
    assert "63 % of the 76 % [64, 86]" in sentence
    assert "not clearly better than always answering 'tumor' (60 %)" in sentence
    assert "pretrained is the best of 2 models on real data" in result.scope


def test_overlapping_intervals_are_called_noise() -> None:
    rows = [_row("real", 0.80, (0.70, 0.90)), _row("mixed", 0.83, (0.73, 0.92), gen="gan")]
    (sentence,) = answer(_metrics(rows)).sentences
    assert sentence.startswith("Adding gan's synthetic data to all the real data raises")
    assert "(+3 points; the intervals overlap, so this is within the noise" in sentence


def test_a_paired_interval_decides_what_is_noise() -> None:
    mixed = _row("mixed", 0.83, (0.73, 0.92), gen="gan")
    mixed.update(accuracy_gain=0.03, accuracy_gain_ci=[0.01, 0.05])
    alone = _row("synthetic", 0.78, (0.68, 0.88), gen="gan", frac=0.0)
    alone.update(accuracy_gain=-0.02, accuracy_gain_ci=[-0.06, 0.01])
    rows = [_row("real", 0.80, (0.70, 0.90)), mixed, alone]
    first, second = answer(_metrics(rows)).sentences
    assert first.endswith(
        "it reaches trained on all the real data (-2 points [-6, +1] on the same test images; "
        "within the noise of the test part)."
    )
    assert second.endswith("to 83 % [73, 92] (+3 points [+1, +5] on the same test images).")
    rows[1]["accuracy_gain"] = 0.10  # a gain against another row is not this difference's
    assert "the intervals overlap" in answer(_metrics(rows)).sentences[1]


def test_no_real_baseline_and_no_synthetic_data() -> None:
    (no_base,) = answer(_metrics([_row("synthetic", 0.7, (0.6, 0.8), gen="gan")])).sentences
    assert no_base.startswith("There is no real-data baseline in this run to compare with.")
    (only_real,) = answer(_metrics([_row("real", 0.8, (0.7, 0.9))])).sentences
    assert only_real.endswith("this run has no synthetic data to compare with.")
    assert answer({"classification": [], "segmentation": []}).sentences == []


def test_segmentation_in_dice() -> None:
    def seg(train_on: str, dice: float, gen: str | None = None) -> dict[str, Any]:
        return {"segmenter": "unet", "generator": gen, "train_on": train_on,
                "real_fraction": 1.0, "n_test": 30, "dice": dice,
                "dice_ci": [dice - 0.05, dice + 0.05]}  # fmt: skip

    result = answer({"segmentation": [seg("real", 0.70), seg("synthetic", 0.56, "gan")]})
    assert result.sentences == [
        "Trained on gan's synthetic data alone, unet reaches a Dice of 0.56 [0.51, 0.61] on "
        "the real test part: 80 % of the 0.70 [0.65, 0.75] it reaches trained on all the real "
        "data (the intervals do not overlap)."
    ]
    unsupervised = {**seg("real", 0.31), "segmenter": "vae_anomaly", "unsupervised": True}
    (only,) = answer({"segmentation": [unsupervised]}).sentences
    assert only.startswith("Without a single training mask, vae_anomaly's anomaly maps reach")


def test_key_figure(tmp_path: Path) -> None:
    grid = tmp_path / "figures" / "generate-gan-samples.png"
    rows = [_row("real", 0.9, (0.8, 0.95)), _row("synthetic", 0.7, (0.6, 0.8), gen="gan")]
    metrics = _metrics(rows)
    # one real fraction: the real-vs-synthetic grid of the generator the answer is about
    found = key_figure(metrics, answer(metrics), tmp_path, [grid])
    assert found is not None and found[0] == grid and "Look for:" in (found[1] or "")
    # several fractions: accuracy against the real fraction, drawn with a caption
    metrics = _metrics([*rows, _row("real", 0.6, (0.5, 0.7), frac=0.2),
                        _row("mixed", 0.8, (0.7, 0.9), gen="gan", frac=0.2)])  # fmt: skip
    found = key_figure(metrics, answer(metrics), tmp_path, [grid])
    assert found is not None
    path, caption = found
    assert path.name == "report-classification-vs-real-fraction.png" and path.is_file()
    assert caption is not None and caption.startswith("Accuracy on the real test part")


RECIPE = """\
name: answered
description: a study for the report test
seed: 0
data: {n: 48, size: 32}
generators: [toy_mean]
experiments:
  - name: cls
    models: [toy_intensity]
    train_on: [real, synthetic, mixed]
    real_fraction: [0.5, 1.0]
    synthetic_per_class: 12
evaluate: [classification]
"""


@pytest.fixture
def report_run(tmp_path: Path, toy_plugins: str) -> Path:
    result = run_recipe(parse_recipe(RECIPE), out=tmp_path)
    assert result.run_dir is not None
    return result.run_dir


def test_report_opens_with_the_answer(report_run: Path) -> None:
    page = (report_run / "report.html").read_text()
    body = page[page.index("<body>") :]
    order = [body.index(s) for s in ("id='answer'", "class='key'", "<h2>classification")]
    assert order == sorted(order)
    lead = re.search(r"id='answer'><p>(.*?)</p>", body)
    assert lead is not None
    assert lead.group(1).startswith("Trained on toy_mean&#x27;s synthetic data alone")
    assert "report-classification-vs-real-fraction" in body[order[1] : order[2]]
    # every figure has a caption that says what to look for (toy figures have none: stem)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", body)
    assert len(captions) == body.count("<img ")
    assert any("Look for:" in c and "roc_curves" in c for c in captions)
    assert any("Look for:" in c and "generate-toy_mean-samples" in c for c in captions)
    # report.md says the same, in the same order
    md = (report_run / "report.md").read_text()
    assert md.index("**Trained on toy_mean's synthetic data alone") < md.index("## classification")
    assert md.index("report-classification-vs-real-fraction.png") < md.index("## classification")
    assert (report_run / "figures" / "evaluate-classification-roc_curves.txt").is_file()


def test_report_in_headless_chromium(report_run: Path, tmp_path: Path) -> None:
    """The page renders, every figure loads, no console errors, the answer and the key
    figure are on the first screen."""
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium (Debian package 'chromium') for the page test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("python package 'playwright' is not installed (page test)")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu"],
            headless=True,
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((report_run / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])"
            )
            answer_box = page.locator("#answer").bounding_box()
            key_box = page.locator("figure.key img").bounding_box()
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert images and all(ok for _, ok in images), [alt for alt, ok in images if not ok]
    assert answer_box is not None and answer_box["y"] + answer_box["height"] < 400
    assert key_box is not None and key_box["y"] < 800 and key_box["height"] > 200
    assert (tmp_path / "report.png").stat().st_size > 10_000
