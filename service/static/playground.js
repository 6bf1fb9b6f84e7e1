// facegen playground: plain JS against the service's public HTTP API (docs/api.md); no build
// step, no dependencies, nothing fetched from anywhere but this server. Paths are relative so
// the page also works behind a proxy that serves the service under a prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const MORPH_STEPS = 16;
const MORPH_FRAME_MS = 90;
const EDIT_DELAY_MS = 200; // debounce of the attribute sliders
const EDIT_RANGE = 3; // sliders run from -EDIT_RANGE to +EDIT_RANGE (strength units of /edit)
const SERVER_SEEDS = 2 ** 31;

// A face is {label, latent (numbers), src (a PNG data URL), seed (or null)}: everything the
// page does with a face after it is shown goes through its latent, so grid faces, photos and
// temperatures mix freely.
const state = {
  model: null, // GET /models -> loaded
  attributes: [], // names from GET /models; the edit panel shows only when non-empty
  selected: [], // up to two faces; the last one is the one the sliders edit
  morph: { frames: [], index: 0, direction: 1, timer: null },
  editTimer: null,
  editUrl: null,
  generation: 0, // drops answers to requests a newer one has replaced
};

class ApiError extends Error {}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(path, { json, form, accept } = {}) {
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (accept) headers.Accept = accept;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(path, { method: body === undefined ? "GET" : "POST", headers, body });
  if (!response.ok) {
    // Errors are RFC 9457 problem+json: `detail` is the sentence written for the user.
    let message = `${path}: HTTP ${response.status}`;
    try {
      const problem = await response.json();
      message = problem.detail || problem.title || message;
    } catch (_) {
      /* not JSON: keep the status line */
    }
    throw new ApiError(message);
  }
  const version = response.headers.get("X-Model-Version");
  if (version) $("model").dataset.version = version;
  return response;
}

const png = (b64) => `data:image/png;base64,${b64}`;

function report(error) {
  setStatus(error instanceof ApiError ? error.message : `Something went wrong: ${error}`, true);
}

// ---- model -----------------------------------------------------------------------------

function attributeNames(models) {
  // The contract: GET /models lists `attributes` per model; accept it on the loaded model or
  // on the store entry of the loaded model's name.
  const loaded = models.loaded || {};
  if (Array.isArray(loaded.attributes)) return loaded.attributes;
  const entry = (models.models || {})[loaded.name];
  if (entry && Array.isArray(entry.attributes)) return entry.attributes;
  return [];
}

async function loadModel() {
  for (;;) {
    try {
      const models = await (await api("models")).json();
      const loaded = models.loaded;
      if (loaded.state === "ready") {
        state.model = loaded;
        state.attributes = attributeNames(models);
        $("model").textContent =
          `${loaded.name} v${loaded.version} · ${loaded.image_size}×${loaded.image_size} · ` +
          `latent ${loaded.latent_dim} · ${loaded.device}`;
        buildSliders();
        showRefine(loaded.max_refine_steps ?? 0);
        return;
      }
      $("model").textContent = `model ${loaded.state}: ${loaded.reason}`;
      if (loaded.state === "failed") return;
    } catch (error) {
      report(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// ---- the grid --------------------------------------------------------------------------

function faceButton(face) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "face";
  button.setAttribute("aria-pressed", String(state.selected.includes(face)));
  const img = document.createElement("img");
  img.src = face.src;
  img.alt = face.label;
  const tag = document.createElement("span");
  tag.className = "tag";
  tag.textContent = face.seed === null ? face.label : String(face.seed);
  button.append(img, tag);
  button.addEventListener("click", () => toggle(face));
  face.button = button;
  return button;
}

async function generate() {
  const seed = Number($("seed").value);
  const temperature = Number($("temperature").value);
  const n = Number($("count").value);
  const generation = ++state.generation;
  setStatus(`Generating ${n} faces from seed ${seed}…`);
  try {
    const body = { n, seed, temperature, format: "json" };
    const out = await (await api("generate", { json: body })).json();
    if (generation !== state.generation) return;
    const grid = $("grid");
    grid.replaceChildren(
      ...out.images.map((b64, i) =>
        faceButton({ label: `face seed ${out.seed + i}`, seed: out.seed + i, latent: out.latents[i], src: png(b64) }),
      ),
    );
    history.replaceState(null, "", `?seed=${out.seed}&t=${temperature}&n=${n}`);
    setStatus(`${n} faces, seeds ${out.seed}–${out.seed + n - 1}, temperature ${temperature.toFixed(2)}.`);
  } catch (error) {
    report(error);
  }
}

function newSeed() {
  const r = new Uint32Array(1);
  crypto.getRandomValues(r);
  $("seed").value = String(r[0] % SERVER_SEEDS);
  generate();
}

// ---- selection, morph ------------------------------------------------------------------

function toggle(face) {
  const at = state.selected.indexOf(face);
  if (at >= 0) state.selected.splice(at, 1);
  else state.selected.push(face);
  if (state.selected.length > 2) state.selected.shift();
  for (const f of document.querySelectorAll(".face")) f.setAttribute("aria-pressed", "false");
  for (const f of state.selected) if (f.button) f.button.setAttribute("aria-pressed", "true");
  renderSelection();
  if (state.selected.length === 2) morph(state.selected[0], state.selected[1]);
  else stopMorph(true);
  resetSliders();
}

function renderSelection() {
  $("selection-empty").hidden = state.selected.length > 0;
  $("selection").replaceChildren(
    ...state.selected.map((face) => {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.className = "big";
      img.src = face.src;
      img.alt = `selected ${face.label}`;
      const caption = document.createElement("figcaption");
      caption.textContent = face.label;
      figure.append(img, caption);
      return figure;
    }),
  );
  $("edit").hidden = state.attributes.length === 0 || state.selected.length === 0;
  if (!$("edit").hidden) $("edited").src = current().src;
}

function current() {
  return state.selected[state.selected.length - 1];
}

async function morph(a, b) {
  stopMorph(false);
  setStatus(`Morphing ${a.label} → ${b.label}…`);
  const body = { start: { latent: a.latent }, end: { latent: b.latent }, steps: MORPH_STEPS, format: "json" };
  try {
    const out = await (await api("interpolate", { json: body })).json();
    if (state.selected[0] !== a || state.selected[1] !== b) return; // the selection moved on
    state.morph.frames = out.images.map(png);
    state.morph.index = 0;
    state.morph.direction = 1;
    $("morph-scrub").max = String(state.morph.frames.length - 1);
    $("morph").hidden = false;
    showFrame(0);
    playMorph();
    setStatus(`Morph: ${out.images.length} frames (slerp) from ${a.label} to ${b.label}.`);
  } catch (error) {
    report(error);
  }
}

function showFrame(i) {
  state.morph.index = i;
  $("morph-frame").src = state.morph.frames[i];
  $("morph-frame").dataset.frame = String(i);
  $("morph-scrub").value = String(i);
}

function playMorph() {
  stopMorph(false);
  $("morph-play").textContent = "Pause";
  state.morph.timer = setInterval(() => {
    const m = state.morph;
    const last = m.frames.length - 1;
    if (m.index + m.direction > last || m.index + m.direction < 0) m.direction = -m.direction; // ping-pong
    showFrame(m.index + m.direction);
  }, MORPH_FRAME_MS);
}

function stopMorph(hide) {
  clearInterval(state.morph.timer);
  state.morph.timer = null;
  $("morph-play").textContent = "Play";
  if (hide) $("morph").hidden = true;
}

// ---- attribute editing (POST /edit) -----------------------------------------------------

function buildSliders() {
  $("sliders").replaceChildren(
    ...state.attributes.map((name) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: -EDIT_RANGE, max: EDIT_RANGE, step: 0.1, value: 0 });
      input.dataset.attribute = name;
      input.setAttribute("aria-label", name);
      const output = document.createElement("output");
      output.textContent = "0.0";
      input.addEventListener("input", () => {
        output.textContent = Number(input.value).toFixed(1);
        clearTimeout(state.editTimer);
        state.editTimer = setTimeout(edit, EDIT_DELAY_MS);
      });
      label.append(name.replaceAll("_", " "), input, output);
      return label;
    }),
  );
  renderSelection();
}

function resetSliders() {
  for (const input of $("sliders").querySelectorAll("input")) {
    input.value = "0";
    input.nextElementSibling.textContent = "0.0";
  }
  clearTimeout(state.editTimer);
  if (current()) $("edited").src = current().src;
}

async function edit() {
  const face = current();
  if (!face) return;
  const attributes = {};
  for (const input of $("sliders").querySelectorAll("input")) {
    const v = Number(input.value);
    if (v !== 0) attributes[input.dataset.attribute] = v;
  }
  if (Object.keys(attributes).length === 0) {
    $("edited").src = face.src;
    return;
  }
  try {
    const response = await api("edit", { json: { latent: face.latent, attributes }, accept: "image/png" });
    const blob = await response.blob();
    if (face !== current()) return;
    if (state.editUrl) URL.revokeObjectURL(state.editUrl);
    state.editUrl = URL.createObjectURL(blob);
    $("edited").src = state.editUrl;
    const what = Object.entries(attributes).map(([k, v]) => `${k} ${v > 0 ? "+" : ""}${v}`);
    setStatus(`Edited ${face.label}: ${what.join(", ")}.`);
  } catch (error) {
    report(error);
  }
}

// ---- upload (POST /reconstruct) --------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function drawFace(face, width, height) {
  // `face` is in pixels of the photo as viewed (EXIF rotation applied), as the <img> shows it.
  const svg = $("face-overlay");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  if (!face) return;
  const [left, top, right, bottom] = face.box;
  const stroke = Math.max(width, height) / 150;
  const rect = document.createElementNS(SVG, "rect");
  for (const [k, v] of Object.entries({ x: left, y: top, width: right - left, height: bottom - top })) {
    rect.setAttribute(k, String(v));
  }
  Object.entries({ fill: "none", stroke: "#f08c00", "stroke-width": stroke }).forEach(([k, v]) =>
    rect.setAttribute(k, String(v)),
  );
  svg.append(rect);
  for (const [x, y] of Object.values(face.landmarks)) {
    const dot = document.createElementNS(SVG, "circle");
    Object.entries({ cx: x, cy: y, r: stroke * 1.5, fill: "#1f6feb" }).forEach(([k, v]) =>
      dot.setAttribute(k, String(v)),
    );
    svg.append(dot);
  }
}

function showRefine(max) {
  // Only the step counts this server allows (FACEGEN_MAX_REFINE_STEPS); none: no control.
  for (const option of $("refine").options) option.hidden = Number(option.value) > max;
  $("refine-label").hidden = max === 0;
}

async function upload() {
  const file = $("photo").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  form.append("pair", "true");
  form.append("format", "json");
  if ($("align").value) form.append("align", $("align").value);
  const steps = Number($("refine").value);
  if (steps > 0) form.append("refine", String(steps));
  setStatus(`Reconstructing ${file.name}${steps > 0 ? ` (refining ${steps} steps)` : ""}…`);
  try {
    const out = await (await api("reconstruct", { form })).json();
    const view = $("photo-view");
    if (view.src.startsWith("blob:")) URL.revokeObjectURL(view.src);
    view.src = URL.createObjectURL(file);
    await view.decode().catch(() => undefined); // a format the browser cannot show: no preview
    const face = out.faces[0];
    drawFace(face, view.naturalWidth, view.naturalHeight);
    $("face-info").textContent = face
      ? `Face found (score ${face.score.toFixed(3)}), aligned by its eyes, nose and mouth.`
      : "Not aligned: the model's fixed crop.";
    $("crop").src = png(out.inputs[0]);
    $("recon").src = png(out.images[0]);
    const mine = { label: `photo ${file.name}`, seed: null, latent: out.latents[0], src: png(out.images[0]) };
    const button = $("recon-button");
    button.onclick = () => toggle(mine);
    button.setAttribute("aria-pressed", "false");
    mine.button = button;
    $("upload-result").hidden = false;
    const how = out.refine > 0 ? `, refined ${out.refine} steps` : "";
    setStatus(`Reconstructed ${file.name}${how}. Tap the reconstruction to morph or edit it.`);
  } catch (error) {
    report(error);
  }
}

// ---- wiring ----------------------------------------------------------------------------

function init() {
  const params = new URLSearchParams(location.search);
  const seed = Number.parseInt(params.get("seed") ?? "", 10);
  const r = new Uint32Array(1);
  crypto.getRandomValues(r);
  $("seed").value = String(Number.isInteger(seed) && seed >= 0 ? seed : r[0] % SERVER_SEEDS);
  const t = Number.parseFloat(params.get("t") ?? "");
  if (t > 0 && t <= 2) $("temperature").value = String(t);
  if (["4", "9", "16", "25"].includes(params.get("n"))) $("count").value = params.get("n");
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  $("api-key").value = sessionStorage.getItem("facegen-api-key") || "";

  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  $("new-seed").addEventListener("click", newSeed);
  $("temperature").addEventListener("input", () => {
    $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  });
  $("temperature").addEventListener("change", generate);
  $("count").addEventListener("change", generate);
  $("morph-play").addEventListener("click", () => (state.morph.timer ? stopMorph(false) : playMorph()));
  $("morph-scrub").addEventListener("input", () => {
    stopMorph(false);
    showFrame(Number($("morph-scrub").value));
  });
  $("edit-reset").addEventListener("click", resetSliders);
  $("photo").addEventListener("change", upload);
  $("align").addEventListener("change", upload);
  $("refine").addEventListener("change", upload);
  $("api-key").addEventListener("change", () => sessionStorage.setItem("facegen-api-key", $("api-key").value));

  loadModel().then(() => {
    if (state.model) generate();
  });
}

init();
