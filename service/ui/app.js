// The search page: upload or drop an image, show its nearest catalogue items.
// Every id and metadata value reaches the page through textContent or an attribute
// set from a checked URL, never as HTML, so catalogue data cannot inject markup.
"use strict";

const $ = (selector) => document.querySelector(selector);
const form = $("#search-form");
const fileInput = $("#file");
const dropZone = $("#drop-zone");
const results = $("#results");
const template = $("#card-template");

function showStatus(text) {
  $("#status").textContent = text;
}

function showError(text) {
  const box = $("#error");
  box.textContent = text;
  box.hidden = !text;
}

// Thumbnails come from metadata.image: only http(s) URLs and paths on this server qualify.
function safeImageUrl(value) {
  if (typeof value !== "string" || value === "") return null;
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function describe(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function renderCard(hit) {
  const card = template.content.firstElementChild.cloneNode(true);
  card.dataset.id = hit.id;
  card.querySelector(".id").textContent = hit.id;
  card.querySelector(".distance").textContent = `distance ${hit.distance}`;
  const thumbUrl = safeImageUrl(hit.metadata.image);
  if (thumbUrl) {
    const img = card.querySelector("img");
    img.src = thumbUrl;
    img.alt = describe(hit.metadata.name ?? hit.id);
    img.hidden = false;
    card.querySelector(".no-image").hidden = true;
  }
  const list = card.querySelector(".metadata");
  for (const [key, value] of Object.entries(hit.metadata)) {
    if (key === "image") continue;
    const term = document.createElement("dt");
    term.textContent = key;
    const detail = document.createElement("dd");
    detail.textContent = describe(value);
    list.append(term, detail);
  }
  card.querySelector(".similar").addEventListener("click", () => searchSimilar(hit.id));
  return card;
}

function renderHits(hits) {
  results.replaceChildren(...hits.map(renderCard));
}

async function callApi(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

function neighbours() {
  const k = Number.parseInt($("#k").value, 10);
  return Number.isFinite(k) && k > 0 ? k : 12;
}

async function searchImage(file) {
  showError("");
  const preview = $("#query-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("#drop-hint").textContent = file.name;
  showStatus("Searching…");
  const data = new FormData();
  data.append("image", file);
  try {
    const body = await callApi(`/search?k=${neighbours()}`, { method: "POST", body: data });
    renderHits(body.hits);
    const t = body.timings;
    showStatus(`${body.count} results · code ${body.code} · decode ${t.decode_ms.toFixed(1)} ms, ` +
               `encode ${t.encode_ms.toFixed(1)} ms, search ${t.search_ms.toFixed(2)} ms`);
  } catch (error) {
    results.replaceChildren();
    showStatus("");
    showError(error.message);
  }
}

async function searchSimilar(id) {
  showError("");
  showStatus("Searching…");
  try {
    const body = await callApi(`/items/${encodeURIComponent(id)}/similar?k=${neighbours()}`);
    renderHits(body.hits);
    showStatus(`${body.count} items similar to ${body.id}`);
  } catch (error) {
    showStatus("");
    showError(error.message);
  }
}

async function showStats() {
  try {
    const stats = await callApi("/stats");
    $("#stats").textContent = `${stats.count} items · ${stats.bits}-bit codes · model ${stats.model_fingerprint}`;
  } catch {
    // the page still works without the header line
  }
}

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) searchImage(fileInput.files[0]);
});
form.addEventListener("submit", (event) => event.preventDefault());
for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
}
for (const type of ["dragleave", "drop"]) {
  dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"));
}
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) searchImage(file);
});
showStats();
