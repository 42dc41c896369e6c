// polymodal web page: talks to this server's REST API only (same origin, no external resources).

const $ = (id) => document.getElementById(id);
// file: the chosen image, sound or video; modality: "image", "audio" or "video", the form field it is sent in.
const state = { health: null, file: null, modality: null, apiKey: sessionStorage.getItem("polymodal-api-key") || "" };
const blobUrls = [];
// Per modality: how the page names a file of it, where a chosen one is previewed, the picker beside the drop zone.
const MEDIA = {
  image: { noun: "an image", preview: "preview" },
  audio: { noun: "a sound", preview: "sound-preview", pick: "sound-pick" },
  video: { noun: "a video", preview: "video-preview", pick: "video-pick" },
};

// ---------------------------------------------------------------------------------------------- API calls
function authHeaders() {
  return state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path.replace(/^\//, ""), {
    ...options, headers: { ...authHeaders(), ...(options.headers || {}) },
  });
  const isJson = (response.headers.get("content-type") || "").includes("application/json");
  const body = isJson ? await response.json() : null;
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

const postJson = (path, payload) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });

function fileToDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// ---------------------------------------------------------------------------------------------- feedback
function showError(error) {
  const alert = $("alert");
  alert.textContent = error.message || String(error);
  alert.hidden = false;
  if (error.status === 401) $("key-form").hidden = false;
}

function clearError() {
  $("alert").hidden = true;
}

async function busy(button, work) {
  clearError();
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// ---------------------------------------------------------------------------------------------- start-up
async function loadHealth() {
  const health = await api("/health");
  state.health = health;
  const info = $("model-info");
  info.textContent = health.model;
  for (const capability of health.capabilities) info.append(el("span", { class: "badge", text: capability }));
  if (health.index) info.append(el("span", { class: "badge", text: `${health.index.size.toLocaleString()} items` }));
  $("key-form").hidden = !health.auth_required;
  $("api-key").value = state.apiKey;

  // Show only what this model (and index) can do, and the kinds of file it takes.
  const can = health.endpoints;
  $("image-section").hidden = !(can["/classify"] || can["/answer"] || can["/caption"] || can["/search"]);
  $("search-section").hidden = !can["/search"];
  $("generate-section").hidden = !can["/generate"];
  $("predict-section").hidden = !(can["/predict"] && health.predictor);
  if (can["/predict"] && health.predictor) predictForm(health.predictor);
  if (can["/generate"]) {
    // The inputs stop where this server's per-request limits do.
    for (const [id, limit] of [["gen-n", health.limits.max_generate_images], ["gen-steps", health.limits.max_generate_steps]]) {
      $(id).max = String(limit);
      $(id).value = String(Math.min(Number($(id).value), limit));
    }
  }
  const offered = Object.keys(MEDIA).filter((modality) => accepted()[modality]);
  if (offered.some((modality) => modality !== "image")) {
    for (const modality of offered) if (MEDIA[modality].pick) $(MEDIA[modality].pick).hidden = false;
    $("image-title").textContent = `Ask about ${wanted()}`;
    $("drop-what").textContent = `Drop ${wanted()} here`;
    $("file").accept = offered.map((modality) => `${modality}/*`).join(",");
  }
  showActions();
}

// The modalities the model takes for ``capability``: its towers, and for embed clips by frames too.
function takesFor(capability) {
  const own = (state.health.media || {})[capability] || [];
  return capability === "embed" && state.health.video_embedding ? [...own, "video"] : own;
}

// Which modalities the page offers files of: what the model embeds, or captions / answers about.
function accepted() {
  const any = (modality) => state.health.capabilities.some((capability) => takesFor(capability).includes(modality));
  return { image: any("image"), audio: takesFor("embed").includes("audio"), video: any("video") };
}

// "an image", "an image or a sound", "an image, a sound or a video": the files the page takes.
function wanted() {
  const nouns = Object.keys(MEDIA).filter((modality) => accepted()[modality]).map((modality) => MEDIA[modality].noun);
  return nouns.length > 1 ? `${nouns.slice(0, -1).join(", ")} or ${nouns[nouns.length - 1]}` : nouns[0] || "a file";
}

// An action shows when the server can do it and the model takes the chosen file's modality for it.
function showActions() {
  const can = state.health.endpoints;
  const takes = (capability) => !state.modality || takesFor(capability).includes(state.modality);
  $("classify-form").hidden = !(can["/classify"] && takes("embed"));
  $("similar-button").hidden = !(can["/search"] && takes("embed"));
  $("answer-form").hidden = !(can["/answer"] && takes("answer"));
  $("caption-button").hidden = !(can["/caption"] && takes("caption"));
}

// ---------------------------------------------------------------------------------------------- search
async function mediaSrc(url) {
  if (!state.apiKey) return url.replace(/^\//, "");
  // <img src>, <audio src> and <video src> cannot send the key: fetch the file ourselves and show it from a blob URL.
  const response = await fetch(url.replace(/^\//, ""), { headers: authHeaders() });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  const blobUrl = URL.createObjectURL(await response.blob());
  blobUrls.push(blobUrl);
  return blobUrl;
}

function hitName(hit) {
  if (hit.path) return hit.path.split(/[\\/]/).pop();
  return `#${hit.id}`;
}

async function renderHits(hits) {
  blobUrls.splice(0).forEach((url) => URL.revokeObjectURL(url));
  const list = $("results");
  list.replaceChildren();
  for (const hit of hits) {
    const name = hitName(hit);
    let visual;
    if (hit.thumbnail_url) {
      visual = el("img", { alt: hit.text || name, loading: "lazy", decoding: "async" });
      visual.src = await mediaSrc(hit.thumbnail_url);
    } else if (hit.video_url) {
      // A media fragment starts the player at the segment's moment (Range requests let it seek there).
      const player = el("video", { controls: "", muted: "", playsinline: "", preload: "metadata", "aria-label": `Play ${name}` });
      player.src = (await mediaSrc(hit.video_url)) + (hit.start != null ? `#t=${hit.start}` : "");
      visual = player;
    } else if (hit.audio_url) {
      const player = el("audio", { controls: "", preload: "metadata", "aria-label": `Play ${name}` });
      player.src = await mediaSrc(hit.audio_url);
      visual = el("div", { class: "sound-item" }, el("span", { class: "sound-label", text: hit.text || `♪ ${name}` }), player);
    } else {
      visual = el("div", { class: "text-item", text: hit.text || name });
    }
    const meta = el("div", { class: "meta" },
      el("span", { class: "name", title: hit.path || hit.text || name, text: name }));
    if (hit.start != null) {
      meta.append(el("span", { class: "moment", title: "segment, in seconds", text: `${hit.start}–${hit.end} s` }));
    }
    meta.append(el("span", { class: "score", title: "cosine similarity", text: hit.score.toFixed(3) }));
    list.append(el("li", { class: "hit", "data-id": String(hit.id) }, visual, meta));
  }
}

async function search(payload, label) {
  const status = $("search-status");
  status.textContent = "Searching…";
  const started = performance.now();
  const result = await postJson("/search", { ...payload, k: Number($("k").value) });
  await renderHits(result.hits);
  const ms = Math.round(performance.now() - started);
  status.textContent = `${result.hits.length} results for ${label} (${ms} ms)`;
}

// ---------------------------------------------------------------------------------------------- generate
async function generate(prompt) {
  const status = $("generate-status");
  status.textContent = "Generating…";
  const n = Number($("gen-n").value);
  const started = performance.now();
  const result = await postJson("/generate", {
    text: prompt,
    n,
    steps: Number($("gen-steps").value),
    guidance: Number($("gen-guidance").value),
    seed: Number($("gen-seed").value),
    sampler: $("gen-sampler").value,
  });
  const grid = $("generated");
  grid.replaceChildren();
  for (const image of result.images) {
    const picture = el("img", { alt: `${image.text} (image ${image.image_index + 1} of ${n})`, decoding: "async" });
    picture.src = `data:image/png;base64,${image.image}`;
    const meta = el("div", { class: "meta" }, el("span", { class: "name", text: `#${image.image_index + 1}` }));
    grid.append(el("li", { class: "hit" }, picture, meta));
  }
  const ms = Math.round(performance.now() - started);
  status.textContent = `${result.images.length} images for “${prompt}”, seed ${$("gen-seed").value} (${ms} ms)`;
}

// ---------------------------------------------------------------------------------------------- predict
const MEDIA_KINDS = ["image", "audio", "video"];

// One input per column the predictor reads: a file picker for media, a number box for numbers, else a text box.
function predictForm(predictor) {
  const classes = predictor.classes.length ? `: ${predictor.classes.join(", ")}` : "";
  $("predict-about").textContent = `Predicts “${predictor.label}” (${predictor.problem}${classes}). Empty fields are missing values.`;
  const fields = $("predict-fields");
  fields.replaceChildren();
  predictor.columns.filter((column) => column.kind !== "ignore").forEach((column, i) => {
    const input = el("input", { id: `predict-${i}`, "data-column": column.name, "data-kind": column.kind });
    if (MEDIA_KINDS.includes(column.kind)) {
      input.type = "file";
      input.accept = `${column.kind}/*`;
    } else {
      input.type = column.kind === "numeric" ? "number" : "text";
      if (column.kind === "numeric") input.step = "any";
      input.autocomplete = "off";
    }
    fields.append(el("label", { for: input.id }, `${column.name} `, el("span", { class: "kind", text: column.kind }), input));
  });
}

async function predictRow() {
  const row = {};
  for (const input of $("predict-fields").querySelectorAll("input")) {
    const { column, kind } = input.dataset;
    if (MEDIA_KINDS.includes(kind)) {
      if (input.files[0]) row[column] = await fileToDataUrl(input.files[0]);
    } else if (input.value.trim()) {
      row[column] = kind === "numeric" ? Number(input.value) : input.value;
    }
  }
  return row;
}

async function predict() {
  const result = await postJson("/predict", { rows: [await predictRow()] });
  const [first] = result.predictions;
  const shown = Array.isArray(first.prediction) ? first.prediction.join(", ") || "(none)" : String(first.prediction);
  const output = $("predict-output");
  output.replaceChildren();
  const bars = el("div");
  if (first.probabilities) {
    const ranked = Object.entries(first.probabilities).sort((a, b) => b[1] - a[1]);
    renderLabels(ranked.map(([label, score]) => ({ label, score })), bars);
  }
  output.append(el("p", { class: "prediction" }, `${result.label}: `, el("strong", { text: shown })), bars);
}

// ---------------------------------------------------------------------------------------------- file actions
function setFile(file) {
  if (!file) return;
  const modality = Object.keys(MEDIA).find((m) => file.type.startsWith(`${m}/`));
  if (!modality || !accepted()[modality]) {
    showError(new Error(`${file.name} is not ${wanted()}`));
    return;
  }
  clearError();
  state.file = file;
  state.modality = modality;
  const preview = $(MEDIA[modality].preview);
  for (const old of Object.values(MEDIA).map((m) => $(m.preview))) {
    if (old.src.startsWith("blob:")) URL.revokeObjectURL(old.src);
    old.removeAttribute("src");
    old.hidden = true;
  }
  preview.src = URL.createObjectURL(file);
  if (modality === "image") preview.alt = `Selected image: ${file.name}`;
  else preview.setAttribute("aria-label", `Selected ${modality === "audio" ? "sound" : modality}: ${file.name}`);
  preview.hidden = false;
  $("drop-text").hidden = modality === "image";
  $("image-output").replaceChildren();
  showActions();
}

function requireFile() {
  if (!state.file) throw new Error(`Choose or drop ${wanted()} first.`);
  return state.file;
}

function mediaForm(fields) {
  const form = new FormData();
  form.append(state.modality, requireFile());
  for (const [key, values] of Object.entries(fields)) {
    for (const value of [].concat(values)) form.append(key, value);
  }
  return form;
}

function renderLabels(labels, target = $("image-output")) {
  const bars = el("ul", { class: "bars", "aria-label": "Classification" });
  for (const { label, score } of labels) {
    const percent = (100 * score).toFixed(1);
    const fill = el("div", { class: "fill" });
    fill.style.width = `${percent}%`;
    bars.append(el("li", { class: "bar" },
      el("span", { text: label }),
      el("div", { class: "track", role: "presentation" }, fill),
      el("span", { class: "value", text: `${percent}%` })));
  }
  target.replaceChildren(bars);
}

function renderText(text) {
  $("image-output").replaceChildren(el("p", { class: "answer", text }));
}

function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("query").value.trim();
    if (query) busy(event.submitter || $("search-form").querySelector("button"), () => search({ text: query }, `“${query}”`));
  });

  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if (prompt) busy(event.submitter || $("generate-form").querySelector("button"), () => generate(prompt));
  });

  const drop = $("drop");
  $("file").addEventListener("change", (event) => setFile(event.target.files[0]));
  $("audio-file").addEventListener("change", (event) => setFile(event.target.files[0]));
  $("video-file").addEventListener("change", (event) => setFile(event.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("dragging"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("dragging"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    setFile(event.dataTransfer.files[0]);
  });

  $("classify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const labels = $("labels").value.split(",").map((s) => s.trim()).filter(Boolean);
    busy(event.submitter, async () => {
      const result = await api("/classify", { method: "POST", body: mediaForm({ labels }) });
      renderLabels(result.labels);
    });
  });
  $("answer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy(event.submitter, async () => {
      const result = await api("/answer", { method: "POST", body: mediaForm({ question: $("question").value }) });
      renderText(result.answer);
    });
  });
  $("caption-button").addEventListener("click", (event) => busy(event.currentTarget, async () => {
    const result = await api("/caption", { method: "POST", body: mediaForm({}) });
    renderText(result.caption);
  }));
  $("similar-button").addEventListener("click", (event) => busy(event.currentTarget, async () => {
    const file = requireFile();
    await search({ [state.modality]: await fileToDataUrl(file) }, file.name);
    $("search-section").scrollIntoView({ behavior: "smooth" });
  }));

  $("predict-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy(event.submitter || $("predict-form").querySelector("button"), predict);
  });

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    sessionStorage.setItem("polymodal-api-key", state.apiKey);
    clearError();
  });
}

wire();
loadHealth().catch(showError);
