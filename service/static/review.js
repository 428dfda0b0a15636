// The review page: POST /score?overlay=true with the chosen images and show each verdict. No external assets.
"use strict";

const KEY_STORAGE = "prd-api-key";
const $ = (id) => document.getElementById(id);
let calibrations = {}; // category name (or "" for the global calibration) -> {map_lo, map_hi}
let chosen = [];

function headers() {
  const key = $("key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

function fmt(value, digits = 4) {
  return typeof value === "number" ? value.toPrecision(digits) : String(value);
}

async function problemText(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.title || ""}: ${body.detail || ""}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModel() {
  const response = await fetch("models", { headers: headers() });
  if (!response.ok) {
    $("model").textContent = response.status === 401 ? "API key needed" : await problemText(response);
    return;
  }
  const model = await response.json();
  $("model").textContent = `${model.name} v${model.version} · ${model.provider}`;
  const select = $("category");
  const current = select.value;
  select.replaceChildren(el("option", { value: "", textContent: "recognise it" }));
  calibrations = { "": model.global_calibration };
  for (const category of model.categories) {
    calibrations[category.name] = category;
    select.append(el("option", { value: category.name, textContent: category.name }));
  }
  select.value = current in calibrations ? current : "";
}

function similarityText(value) {
  if (typeof value === "number") return fmt(value, 3);
  if (value && typeof value === "object") {
    return Object.entries(value)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([name, sim]) => `${name} ${fmt(sim, 3)}`)
      .join(", ");
  }
  return String(value);
}

function optionalRows(result) {
  const rows = [];
  if (result.category_similarity !== undefined && result.category_similarity !== null) {
    rows.push(["category match", similarityText(result.category_similarity)]);
  }
  if (typeof result.false_alarm_probability === "number") {
    rows.push(["false-alarm probability", `${(100 * result.false_alarm_probability).toFixed(2)} %`]);
  }
  if (result.unknown_part !== undefined && result.unknown_part !== null) {
    const value = result.unknown_part;
    rows.push(["unknown part", typeof value === "boolean" ? (value ? "yes" : "no") : JSON.stringify(value)]);
  }
  return rows;
}

function legend(category) {
  const calibration = calibrations[category || ""];
  if (!calibration) return el("div");
  return el(
    "div",
    { className: "legend" },
    el("div", { className: "bar" }),
    el("div", { className: "ends" }, el("span", { textContent: `≤ ${fmt(calibration.map_lo, 3)}` }),
      el("span", { textContent: "anomaly map, calibrated per category" }),
      el("span", { textContent: `≥ ${fmt(calibration.map_hi, 3)}` })),
  );
}

function article(index, ...children) {
  const node = el("article", { className: "result" }, ...children);
  node.dataset.index = index;
  return node;
}

function renderResult(result) {
  const anomalous = result.is_anomalous;
  const meter = el("div", { className: `meter ${anomalous ? "anomalous" : ""}` }, el("span"));
  meter.firstChild.style.width = `${Math.round(100 * result.normalized_score)}%`;
  const rows = [
    ["score", `${fmt(result.score)} vs threshold ${fmt(result.threshold)}`],
    ["normalized", el("span", {}, `${fmt(result.normalized_score, 3)} (0.5 = threshold)`, meter)],
    ["category", `${result.category ?? "none"} (${result.category_source})`],
    ...optionalRows(result),
    ["tiles", String(result.tiles ?? 1)],
    ["size", `${result.width} × ${result.height} px`],
  ];
  const list = el("dl");
  for (const [name, value] of rows) list.append(el("dt", { textContent: name }), el("dd", {}, value));
  const picture = el("div");
  if (result.heatmap_png) {
    picture.append(el("img", { src: `data:image/png;base64,${result.heatmap_png}`, alt: `heatmap of ${result.filename}` }));
    picture.append(legend(result.category));
  }
  const verdict = el("p", { className: `verdict ${anomalous ? "anomalous" : "normal"}` });
  verdict.textContent = anomalous ? "ANOMALOUS" : "NORMAL";
  const text = el("div", {}, el("h2", { textContent: result.filename }), verdict, list);
  return article(result.index, picture, text);
}

function renderError(error) {
  const verdict = el("p", { className: "verdict failed", textContent: "NOT SCORED" });
  const text = el("div", {}, el("h2", { textContent: error.filename }), verdict, el("p", { textContent: `${error.kind}: ${error.detail}` }));
  return article(error.index, el("div"), text);
}

async function score() {
  if (!chosen.length) return;
  const form = new FormData();
  for (const file of chosen) form.append("files", file, file.name);
  if ($("category").value) form.append("category", $("category").value);
  $("score").disabled = true;
  setStatus(`Scoring ${chosen.length} image(s)…`);
  try {
    const response = await fetch("score?overlay=true", { method: "POST", body: form, headers: headers() });
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : {};
    const items = [...(body.results || []).map(renderResult), ...(body.errors || []).map(renderError)];
    items.sort((a, b) => a.dataset.index - b.dataset.index);
    $("results").replaceChildren(...items);
    if (response.ok) setStatus(`${body.model.name} v${body.model.version}: ${items.length} image(s) scored.`);
    else setStatus(`${response.status} ${body.title || response.statusText}: ${body.detail || ""}`, true);
  } catch (error) {
    setStatus(`The service did not answer: ${error}`, true);
  } finally {
    $("score").disabled = false;
  }
}

function choose(files) {
  chosen = [...files];
  score();
}

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("key").addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, $("key").value.trim());
    loadModel();
  });
  $("files").addEventListener("change", () => choose($("files").files));
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    score();
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files);
  });
  loadModel();
});
