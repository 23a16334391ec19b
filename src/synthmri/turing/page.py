"""The rater's page of the visual Turing test: one self-contained HTML file, vanilla JS.

``render_page(images, title, kit_id)`` fills the template with the blinded images (inline
base64 PNGs, so the page works from ``file://`` and can be mailed as one file; no network).
The rater sees one image at a time, answers Real or Synthetic (buttons, or keys R / S),
moves with the arrow keys (or Back / Next), can change any answer, sees progress, and
downloads the answers as ``answers.json`` (``[{"image": "img_001.png", "answer":
"real"}, ...]``) and ``answers.csv``. Answers are also kept in the browser's localStorage,
so closing the tab loses nothing.
"""

from __future__ import annotations

import base64
import html
import json

__all__ = ["render_page"]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline';
               script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>
  :root { --bg: #f4f5f7; --card: #fff; --ink: #1d2330; --muted: #6b7280; --real: #2563eb;
          --syn: #b45309; --line: #d9dce3; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         background: var(--bg); color: var(--ink); }
  header { padding: 14px 24px; background: var(--card); border-bottom: 1px solid var(--line);
           display: flex; align-items: baseline; gap: 18px; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  header p { margin: 0; color: var(--muted); }
  main { max-width: 980px; margin: 18px auto; padding: 0 16px; display: grid;
         grid-template-columns: minmax(0, 1fr) 260px; gap: 18px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
          padding: 16px; }
  #viewer { text-align: center; }
  #counter { color: var(--muted); margin-bottom: 8px; }
  #frame { background: #000; border-radius: 6px; display: flex; align-items: center;
           justify-content: center; width: min(100%, 68vh); aspect-ratio: 1 / 1;
           margin: 0 auto; overflow: hidden; }
  #image { width: 100%; height: 100%; object-fit: contain; }
  .answer-row { display: flex; gap: 12px; margin-top: 14px; }
  .answer-row button { flex: 1; font-size: 17px; padding: 14px 10px; border-radius: 8px;
                       border: 2px solid var(--line); background: #fff; cursor: pointer; }
  #btn-real.chosen { background: var(--real); color: #fff; border-color: var(--real); }
  #btn-synthetic.chosen { background: var(--syn); color: #fff; border-color: var(--syn); }
  #btn-real:hover { border-color: var(--real); } #btn-synthetic:hover { border-color: var(--syn); }
  .nav-row { display: flex; justify-content: space-between; margin-top: 10px; }
  .nav-row button, .side button { padding: 8px 12px; border-radius: 6px; cursor: pointer;
                                  border: 1px solid var(--line); background: #fff; }
  kbd { border: 1px solid var(--line); border-bottom-width: 2px; border-radius: 4px;
        padding: 0 5px; font-size: 12px; background: #fafafa; color: var(--ink); }
  .bar { height: 10px; background: #e5e7eb; border-radius: 5px; overflow: hidden; }
  #bar-fill { height: 100%; width: 0; background: #10b981; transition: width .2s; }
  #dots { display: grid; grid-template-columns: repeat(10, minmax(0, 1fr)); gap: 4px;
          margin: 12px 0; }
  .dot { height: 18px; min-width: 0; border-radius: 3px; background: #e5e7eb; border: 0;
         padding: 0; cursor: pointer; }
  .dot.real { background: var(--real); } .dot.synthetic { background: var(--syn); }
  .dot.current { outline: 2px solid var(--ink); outline-offset: 1px; }
  .side button.download { width: 100%; margin-top: 8px; font-weight: 600; }
  .side p { margin: 6px 0; color: var(--muted); font-size: 13px; }
  #status { min-height: 1.4em; font-size: 13px; color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <p>Is each brain MRI slice <b>real</b> or <b>synthetic</b>? Half of the images are of each
     kind; the order is random.</p>
</header>
<main>
  <section class="card" id="viewer">
    <div id="counter"></div>
    <div id="frame"><img id="image" alt="MRI slice to rate"></div>
    <div class="answer-row">
      <button id="btn-real" type="button">Real <kbd>R</kbd></button>
      <button id="btn-synthetic" type="button">Synthetic <kbd>S</kbd></button>
    </div>
    <div class="nav-row">
      <button id="btn-prev" type="button">&larr; Back</button>
      <button id="btn-next" type="button">Next &rarr;</button>
    </div>
  </section>
  <aside class="card side">
    <div id="progress-text"></div>
    <div class="bar"><div id="bar-fill"></div></div>
    <div id="dots"></div>
    <p>Keys: <kbd>R</kbd> real, <kbd>S</kbd> synthetic, <kbd>&larr;</kbd> <kbd>&rarr;</kbd>
       move. Click a square to jump; you can change any answer.</p>
    <button class="download" id="btn-json" type="button">Download answers (JSON)</button>
    <button class="download" id="btn-csv" type="button">Download answers (CSV)</button>
    <div id="status"></div>
    <p>Send <b>answers.json</b> back to the study team.</p>
  </aside>
</main>
<script id="kit-data" type="application/json">__DATA__</script>
<script>
(function () {
  "use strict";
  var kit = JSON.parse(document.getElementById("kit-data").textContent);
  var images = kit.images;
  var storeKey = "synthmri-turing-" + kit.id;
  var answers = {};
  try { answers = JSON.parse(window.localStorage.getItem(storeKey) || "{}") || {}; }
  catch (e) { answers = {}; }
  var current = 0;
  var el = function (id) { return document.getElementById(id); };
  var dots = [];

  images.forEach(function (item, i) {
    var b = document.createElement("button");
    b.className = "dot"; b.type = "button"; b.title = item.name;
    b.addEventListener("click", function () { go(i); });
    el("dots").appendChild(b); dots.push(b);
  });

  function save() {
    try { window.localStorage.setItem(storeKey, JSON.stringify(answers)); } catch (e) {}
  }
  function answeredCount() {
    return images.filter(function (it) { return answers[it.name]; }).length;
  }
  function render() {
    var item = images[current];
    el("image").src = item.src;
    el("image").setAttribute("data-name", item.name);
    el("counter").textContent = "Image " + (current + 1) + " of " + images.length;
    var a = answers[item.name] || "";
    el("btn-real").classList.toggle("chosen", a === "real");
    el("btn-synthetic").classList.toggle("chosen", a === "synthetic");
    el("btn-prev").disabled = current === 0;
    el("btn-next").disabled = current === images.length - 1;
    var done = answeredCount();
    el("progress-text").textContent = "Answered " + done + " / " + images.length;
    el("bar-fill").style.width = (100 * done / images.length) + "%";
    dots.forEach(function (d, i) {
      var v = answers[images[i].name] || "";
      d.className = "dot" + (v ? " " + v : "") + (i === current ? " current" : "");
    });
  }
  function go(i) { current = Math.max(0, Math.min(images.length - 1, i)); render(); }
  function answer(value) {
    answers[images[current].name] = value; save();
    el("status").textContent = "";
    if (current < images.length - 1) { go(current + 1); } else { render(); }
    if (answeredCount() === images.length) {
      el("status").textContent = "All images answered - please download your answers.";
    }
  }
  function rows() {
    return images.map(function (it) {
      return { image: it.name, answer: answers[it.name] || null };
    });
  }
  function download(name, text, type) {
    var blob = new Blob([text], { type: type });
    var url = URL.createObjectURL(blob);
    var a = document.createElement("a");
    a.href = url; a.download = name; document.body.appendChild(a); a.click();
    setTimeout(function () { URL.revokeObjectURL(url); a.remove(); }, 1000);
    var missing = images.length - answeredCount();
    el("status").textContent = "Saved " + name + (missing ? " (" + missing + " unanswered)" : "");
  }
  el("btn-real").addEventListener("click", function () { answer("real"); });
  el("btn-synthetic").addEventListener("click", function () { answer("synthetic"); });
  el("btn-prev").addEventListener("click", function () { go(current - 1); });
  el("btn-next").addEventListener("click", function () { go(current + 1); });
  el("btn-json").addEventListener("click", function () {
    download("answers.json", JSON.stringify(rows(), null, 1) + "\\n", "application/json");
  });
  el("btn-csv").addEventListener("click", function () {
    var lines = ["image,answer"].concat(rows().map(function (r) {
      return r.image + "," + (r.answer || "");
    }));
    download("answers.csv", lines.join("\\n") + "\\n", "text/csv");
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var k = ev.key.toLowerCase();
    if (k === "r") { answer("real"); }
    else if (k === "s") { answer("synthetic"); }
    else if (ev.key === "ArrowLeft") { go(current - 1); }
    else if (ev.key === "ArrowRight") { go(current + 1); }
    else { return; }
    ev.preventDefault();
  });
  render();
})();
</script>
</body>
</html>
"""


def render_page(images: list[tuple[str, bytes]], title: str, kit_id: str) -> str:
    """The rater page for ``(file name, PNG bytes)`` pairs, in the order shown."""
    data = {
        "id": kit_id,
        "images": [
            {"name": name, "src": "data:image/png;base64," + base64.b64encode(png).decode()}
            for name, png in images
        ],
    }
    payload = json.dumps(data).replace("</", "<\\/")
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)
