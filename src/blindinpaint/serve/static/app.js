// blindinpaint web page: open an image, detect, correct the mask, restore, compare, download.
//
// Mask convention (as everywhere in blindinpaint): 1 / white = corrupted (hole), 0 / black = valid.
// The page keeps three per-pixel layers at the image's own resolution:
//   conf      detector confidence, round(255 * P(corrupted)), from /api/detect;
//   edits     the user's strokes: 0 = none, 1 = brush (hole), 2 = eraser (valid);
//   hole      the effective mask = edits where painted, else the detection at the current threshold.
// The threshold slider re-thresholds `conf` here in the browser; /api/restore receives `hole`.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const EDIT_NONE = 0, EDIT_HOLE = 1, EDIT_VALID = 2;
  const OVERLAY_RGB = [255, 48, 72];
  const UNDO_LIMIT = 40;

  const state = {
    caps: null,             // /api/models answer
    file: null,             // the original upload (Blob), sent unchanged to the server
    stem: "image",
    width: 0, height: 0,
    source: null,           // canvas with the original pixels as the browser decodes them
    conf: null,             // Uint8Array (w*h) or null when no detection ran
    detected: null,         // Uint8Array (w*h) 0/1: the server's mask at its threshold
    serverThreshold: 0.5,
    threshold: 0.5,
    edits: null,            // Uint8Array (w*h) EDIT_*
    hole: null,             // Uint8Array (w*h) 0/1 effective mask
    overlay: null,          // canvas: red where hole, transparent elsewhere
    overlayData: null,      // its ImageData
    confView: null,         // canvas: confidence heat map
    restored: null,         // canvas with the restoration
    artifacts: null,        // canvas: GDN artifact heat map
    undo: [],
    tool: "brush",
    size: 24,
    view: "mask",
    split: 0.5,
    busy: false,
    painting: null,         // {x, y} of the last stamp while a stroke is in progress
    dragging: false,        // moving the before/after split
    urls: [],               // object URLs to revoke on the next image
  };

  const view = $("view");
  const ctx = view.getContext("2d");

  // ------------------------------------------------------------------ status line
  function setStatus(text, kind = "") {
    const el = $("status");
    el.textContent = text;
    el.className = "status" + (kind ? " " + kind : "");
    el.title = text;
  }

  function setBusy(busy, text) {
    state.busy = busy;
    if (text) setStatus(text, busy ? "busy" : "");
    updateControls();
  }

  // ------------------------------------------------------------------ server calls
  async function post(path, fields) {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) {
      if (value instanceof Blob) form.append(name, value, name + ".png");
      else form.append(name, String(value));
    }
    const answer = await fetch(path, { method: "POST", body: form });
    let body = null;
    try { body = await answer.json(); } catch (err) { body = null; }
    if (!answer.ok) {
      const detail = body && body.detail ? body.detail : answer.status + " " + answer.statusText;
      const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      error.status = answer.status;
      throw error;
    }
    return body;
  }

  function decodePng(b64) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the server sent an image the browser cannot decode"));
      img.src = "data:image/png;base64," + b64;
    });
  }

  function canvasOf(width, height) {
    const c = document.createElement("canvas");
    c.width = width;
    c.height = height;
    return c;
  }

  async function greyPixels(b64) {
    const img = await decodePng(b64);
    const c = canvasOf(img.naturalWidth, img.naturalHeight);
    const g = c.getContext("2d", { willReadFrequently: true });
    g.drawImage(img, 0, 0);
    const rgba = g.getImageData(0, 0, c.width, c.height).data;
    const out = new Uint8Array(c.width * c.height);
    for (let i = 0, j = 0; i < out.length; i++, j += 4) out[i] = rgba[j];
    return out;
  }

  // Heat colours for a probability map (dark blue -> purple -> orange -> yellow).
  function heatCanvas(values) {
    const stops = [[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]];
    const lut = new Uint8Array(256 * 3);
    for (let v = 0; v < 256; v++) {
      const t = (v / 255) * (stops.length - 1), k = Math.min(Math.floor(t), stops.length - 2), f = t - k;
      for (let ch = 0; ch < 3; ch++) lut[v * 3 + ch] = Math.round(stops[k][ch] * (1 - f) + stops[k + 1][ch] * f);
    }
    const c = canvasOf(state.width, state.height);
    const g = c.getContext("2d");
    const data = g.createImageData(state.width, state.height);
    for (let i = 0, j = 0; i < values.length; i++, j += 4) {
      const v = values[i] * 3;
      data.data[j] = lut[v]; data.data[j + 1] = lut[v + 1]; data.data[j + 2] = lut[v + 2]; data.data[j + 3] = 255;
    }
    g.putImageData(data, 0, 0);
    return c;
  }

  // ------------------------------------------------------------------ models
  async function loadCaps() {
    const el = $("model-status");
    try {
      const answer = await fetch("/api/models");
      state.caps = await answer.json();
      const r = state.caps.restore, g = state.caps.inpaint;
      const parts = [];
      if (r.loaded) parts.push((r.blind ? "restore: " : "inpaint-only: ") + shortName(r.name));
      if (g.loaded && g.name !== r.name) parts.push("inspect: " + shortName(g.name));
      if (parts.length) {
        el.textContent = parts.join(" \u00b7 ");
        el.className = "model-status ok";
      } else {
        el.textContent = "no model loaded";
        el.className = "model-status bad";
      }
      el.title = [r.error, g.error].filter(Boolean).join("\n") || [r.name, g.name].filter(Boolean).join("\n");
    } catch (err) {
      el.textContent = "server unreachable";
      el.className = "model-status bad";
    }
    updateControls();
  }

  function shortName(name) {
    if (!name) return "?";
    const parts = String(name).split(/[\\/]/).filter(Boolean);
    return parts.length ? parts[parts.length - 1] : name;
  }

  const canDetect = () => !!(state.caps && state.caps.restore.loaded && state.caps.restore.blind);
  const canRestore = () => !!(state.caps && (state.caps.restore.loaded || state.caps.inpaint.loaded));
  const canInspect = () => !!(state.caps && state.caps.inpaint.loaded);

  // ------------------------------------------------------------------ opening an image
  async function openFile(file) {
    if (!file || state.busy) return;
    const limits = state.caps && state.caps.limits;
    if (limits && file.size > limits.max_upload_mb * 1e6) {
      setStatus(`${file.name}: ${(file.size / 1e6).toFixed(1)} MB, more than the server's limit of ` +
                `${limits.max_upload_mb} MB`, "error");
      return;
    }
    let bitmap;
    try {
      bitmap = await loadBitmap(file);
    } catch (err) {
      setStatus(`${file.name}: the browser cannot display this file (${err.message}); try PNG or JPEG`, "error");
      return;
    }
    state.urls.forEach((u) => URL.revokeObjectURL(u));
    state.urls = [];
    state.file = file;
    state.stem = (file.name || "image").replace(/\.[^.]*$/, "") || "image";
    state.width = bitmap.width;
    state.height = bitmap.height;
    state.source = canvasOf(bitmap.width, bitmap.height);
    state.source.getContext("2d").drawImage(bitmap, 0, 0);
    const n = state.width * state.height;
    state.conf = null;
    state.detected = new Uint8Array(n);
    state.edits = new Uint8Array(n);
    state.hole = new Uint8Array(n);
    state.undo = [];
    state.restored = null;
    state.artifacts = null;
    state.confView = null;
    state.overlay = canvasOf(state.width, state.height);
    state.overlayData = state.overlay.getContext("2d").createImageData(state.width, state.height);
    resetDownloads();
    view.width = state.width;
    view.height = state.height;
    $("dropzone").hidden = true;
    $("canvas-wrap").hidden = false;
    document.body.dataset.state = "loaded";
    setView("mask");
    fitView();
    recompute();

    if (!canDetect()) {
      setStatus(state.caps && state.caps.restore.loaded
        ? "The loaded model is mask-given: paint the corrupted pixels, then Restore."
        : "No detection model loaded: paint the corrupted pixels, then Restore.");
      document.body.dataset.state = "detected";
      updateControls();
      return;
    }
    setBusy(true, "Detecting corrupted pixels\u2026");
    try {
      const answer = await post("/api/detect", { image: file });
      if (answer.width !== state.width || answer.height !== state.height) {
        throw new Error(`the server read ${answer.width}x${answer.height} pixels, the browser ` +
                        `${state.width}x${state.height}`);
      }
      state.conf = await greyPixels(answer.confidence);
      state.detected = await greyPixels(answer.mask);
      for (let i = 0; i < n; i++) state.detected[i] = state.detected[i] > 127 ? 1 : 0;
      state.serverThreshold = answer.threshold;
      state.threshold = answer.threshold;
      $("threshold").value = answer.threshold.toFixed(2);
      state.confView = heatCanvas(state.conf);
      recompute();
      const pct = (100 * answer.corrupted_fraction).toFixed(1);
      setBusy(false, answer.clean ? "The model judged this image clean: paint a mask to restore anyway."
                                  : `Detected ${pct}% corrupted. Correct the mask if needed, then Restore.`);
      document.body.dataset.state = "detected";
    } catch (err) {
      setBusy(false);
      setStatus("Detection failed: " + err.message, "error");
      document.body.dataset.state = "detected";
    }
  }

  async function loadBitmap(file) {
    if (window.createImageBitmap) {
      try { return await createImageBitmap(file, { imageOrientation: "from-image" }); } catch (err) { /* fall back */ }
    }
    const url = URL.createObjectURL(file);
    try {
      const img = new Image();
      await new Promise((resolve, reject) => {
        img.onload = resolve;
        img.onerror = () => reject(new Error("not a displayable image"));
        img.src = url;
      });
      return img;
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  // ------------------------------------------------------------------ mask layers
  function baseHole(i, t255, fromServer) {
    if (fromServer || !state.conf) return state.detected[i];
    return state.conf[i] > t255 ? 1 : 0;
  }

  // Recompute `hole` and the red overlay inside a rectangle (the whole image by default).
  function recompute(x0 = 0, y0 = 0, x1 = state.width, y1 = state.height) {
    if (!state.hole) return;
    const w = state.width, px = state.overlayData.data;
    const fromServer = Math.abs(state.threshold - state.serverThreshold) < 1e-9;
    const t255 = state.threshold * 255;
    for (let y = y0; y < y1; y++) {
      for (let i = y * w + x0, end = y * w + x1; i < end; i++) {
        const e = state.edits[i];
        const h = e === EDIT_HOLE ? 1 : e === EDIT_VALID ? 0 : baseHole(i, t255, fromServer);
        state.hole[i] = h;
        const j = i * 4;
        px[j] = OVERLAY_RGB[0]; px[j + 1] = OVERLAY_RGB[1]; px[j + 2] = OVERLAY_RGB[2];
        px[j + 3] = h ? 255 : 0;
      }
    }
    state.overlay.getContext("2d").putImageData(state.overlayData, 0, 0, x0, y0, x1 - x0, y1 - y0);
    if (x0 === 0 && y0 === 0 && x1 === state.width && y1 === state.height) updateStats();
    render();
  }

  function updateStats() {
    if (!state.hole) return;
    let count = 0;
    for (let i = 0; i < state.hole.length; i++) count += state.hole[i];
    $("mask-stats").textContent = `${(100 * count / state.hole.length).toFixed(1)}% of ` +
                                  `${state.width}\u00d7${state.height} px marked corrupted`;
  }

  // ------------------------------------------------------------------ painting
  function imagePoint(event) {
    const rect = view.getBoundingClientRect();
    return { x: (event.clientX - rect.left) * state.width / rect.width,
             y: (event.clientY - rect.top) * state.height / rect.height };
  }

  function stamp(cx, cy) {
    const r = state.size / 2, value = state.tool === "brush" ? EDIT_HOLE : EDIT_VALID;
    const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(state.width, Math.ceil(cx + r));
    const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(state.height, Math.ceil(cy + r));
    if (x0 >= x1 || y0 >= y1) return null;
    const r2 = Math.max(r * r, 0.25);
    for (let y = y0; y < y1; y++) {
      const dy = y + 0.5 - cy;
      for (let x = x0; x < x1; x++) {
        const dx = x + 0.5 - cx;
        if (dx * dx + dy * dy <= r2) state.edits[y * state.width + x] = value;
      }
    }
    return [x0, y0, x1, y1];
  }

  function strokeTo(p) {
    const last = state.painting;
    const dist = Math.hypot(p.x - last.x, p.y - last.y);
    const steps = Math.max(1, Math.ceil(dist / Math.max(1, state.size / 4)));
    let box = null;
    for (let s = 1; s <= steps; s++) {
      const b = stamp(last.x + (p.x - last.x) * s / steps, last.y + (p.y - last.y) * s / steps);
      if (!b) continue;
      box = box ? [Math.min(box[0], b[0]), Math.min(box[1], b[1]), Math.max(box[2], b[2]), Math.max(box[3], b[3])] : b;
    }
    state.painting = p;
    if (box) recompute(...box);
  }

  function pushUndo() {
    state.undo.push(state.edits.slice());
    if (state.undo.length > UNDO_LIMIT) state.undo.shift();
  }

  function undo() {
    if (!state.undo.length || state.busy) return;
    state.edits = state.undo.pop();
    recompute();
    updateControls();
    setStatus("Undone.");
  }

  function clearEdits() {
    if (!state.edits || state.busy) return;
    pushUndo();
    state.edits.fill(EDIT_NONE);
    recompute();
    updateControls();
  }

  view.addEventListener("pointerdown", (event) => {
    if (!state.hole || event.button !== 0) return;
    if (state.view === "result") {
      moveSplit(event);
      view.setPointerCapture(event.pointerId);
      state.dragging = true;
      return;
    }
    if (state.busy) return;
    if (state.view !== "mask") setView("mask");
    event.preventDefault();
    view.setPointerCapture(event.pointerId);
    pushUndo();
    const p = imagePoint(event);
    state.painting = p;
    const box = stamp(p.x, p.y);
    if (box) recompute(...box);
  });

  view.addEventListener("pointermove", (event) => {
    moveCursor(event);
    if (state.dragging) { moveSplit(event); return; }
    if (state.painting) strokeTo(imagePoint(event));
  });

  const endStroke = () => {
    if (state.painting) { state.painting = null; updateStats(); updateControls(); }
    state.dragging = false;
  };
  view.addEventListener("pointerup", endStroke);
  view.addEventListener("pointercancel", endStroke);
  view.addEventListener("pointerleave", () => { $("brush-cursor").hidden = true; });

  function moveCursor(event) {
    const cursor = $("brush-cursor");
    if (state.view === "result" || state.view === "artifacts") { cursor.hidden = true; return; }
    const rect = view.getBoundingClientRect();
    const scale = rect.width / state.width;
    const d = Math.max(4, state.size * scale);
    cursor.style.width = cursor.style.height = d + "px";
    cursor.style.left = (event.clientX - rect.left) + "px";
    cursor.style.top = (event.clientY - rect.top) + "px";
    cursor.className = state.tool === "eraser" ? "eraser" : "";
    cursor.hidden = false;
  }

  function moveSplit(event) {
    const rect = view.getBoundingClientRect();
    state.split = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
    $("compare").value = state.split;
    render();
  }

  // ------------------------------------------------------------------ drawing
  function render() {
    if (!state.source) return;
    const w = state.width, h = state.height;
    ctx.clearRect(0, 0, w, h);
    if (state.view === "confidence" && state.confView) {
      ctx.drawImage(state.confView, 0, 0);
    } else if (state.view === "artifacts" && state.artifacts) {
      ctx.drawImage(state.artifacts, 0, 0);
    } else if (state.view === "result" && state.restored) {
      ctx.drawImage(state.source, 0, 0);
      const split = Math.round(state.split * w);
      ctx.drawImage(state.restored, 0, 0, split, h, 0, 0, split, h);
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(Math.max(0, split - Math.max(1, w / 400)), 0, Math.max(1, w / 200), h);
    } else {
      ctx.drawImage(state.source, 0, 0);
      ctx.globalAlpha = 0.5;
      ctx.drawImage(state.overlay, 0, 0);
      ctx.globalAlpha = 1;
    }
  }

  function fitView() {
    if (!state.source) return;
    const stage = $("stage");
    const availW = stage.clientWidth - 28, availH = stage.clientHeight - 28;
    const scale = Math.min(availW / state.width, availH / state.height, 16);
    view.style.width = Math.max(1, Math.floor(state.width * scale)) + "px";
    view.style.height = Math.max(1, Math.floor(state.height * scale)) + "px";
    view.classList.toggle("pixelated", scale >= 4);
  }

  function setView(name) {
    if (name === "confidence" && !state.confView && state.source) {
      setStatus("No confidence map: detection did not run for this image.");
    }
    if (name === "result" && !state.restored) return;
    if (name === "artifacts" && !state.artifacts) return;
    state.view = name;
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.view === name);
    const compare = name === "result";
    $("compare-bar").hidden = !compare;
    $("label-before").hidden = !compare;
    $("label-after").hidden = !compare;
    view.classList.toggle("compare", compare);
    if (compare || name === "artifacts") $("brush-cursor").hidden = true;
    fitView();
    render();
  }

  // ------------------------------------------------------------------ restore / inspect
  function maskBlob() {
    const c = canvasOf(state.width, state.height);
    const g = c.getContext("2d");
    const data = g.createImageData(state.width, state.height);
    for (let i = 0, j = 0; i < state.hole.length; i++, j += 4) {
      const v = state.hole[i] ? 255 : 0;
      data.data[j] = v; data.data[j + 1] = v; data.data[j + 2] = v; data.data[j + 3] = 255;
    }
    g.putImageData(data, 0, 0);
    return new Promise((resolve) => c.toBlob(resolve, "image/png"));
  }

  async function restore() {
    if (!state.file || state.busy || !canRestore()) return;
    const useInpaint = !state.caps.restore.loaded;
    setBusy(true, useInpaint ? "Inpainting the mask\u2026" : "Restoring\u2026");
    document.body.dataset.state = "restoring";
    try {
      const answer = await post(useInpaint ? "/api/inpaint" : "/api/restore",
                                { image: state.file, mask: await maskBlob() });
      const img = await decodePng(answer.restored);
      state.restored = canvasOf(state.width, state.height);
      state.restored.getContext("2d").drawImage(img, 0, 0);
      setDownload($("download-result"), answer.restored, state.stem + "_restored.png");
      setDownload($("download-mask"), answer.mask, state.stem + "_mask.png");
      state.split = 0.5;
      $("compare").value = 0.5;
      setBusy(false, `Restored ${(100 * answer.corrupted_fraction).toFixed(1)}% of the pixels. ` +
                     "Drag on the image to compare.");
      document.body.dataset.state = "restored";
      setView("result");
    } catch (err) {
      setBusy(false);
      setStatus("Restoration failed: " + err.message, "error");
      document.body.dataset.state = "detected";
    }
  }

  async function inspect() {
    if (!state.file || state.busy || !canInspect()) return;
    setBusy(true, "Running the artifact detector\u2026");
    try {
      const image = state.restored ? await new Promise((r) => state.restored.toBlob(r, "image/png")) : state.file;
      const answer = await post("/api/inspect", { image });
      state.artifacts = heatCanvas(await greyPixels(answer.heatmap));
      setBusy(false, `Artifact map of the ${state.restored ? "restored" : "original"} image: ` +
                     `mean ${answer.mean.toFixed(3)}, max ${answer.max.toFixed(3)}.`);
      updateControls();
      setView("artifacts");
    } catch (err) {
      setBusy(false);
      setStatus("Inspection failed: " + err.message, "error");
    }
  }

  function setDownload(link, b64, name) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    state.urls.push(url);
    link.href = url;
    link.download = name;
    link.classList.remove("disabled");
    link.setAttribute("aria-disabled", "false");
  }

  function resetDownloads() {
    for (const link of [$("download-result"), $("download-mask")]) {
      link.removeAttribute("href");
      link.classList.add("disabled");
      link.setAttribute("aria-disabled", "true");
    }
  }

  // ------------------------------------------------------------------ controls
  function setTool(tool) {
    state.tool = tool;
    $("tool-brush").classList.toggle("active", tool === "brush");
    $("tool-eraser").classList.toggle("active", tool === "eraser");
    if (state.view !== "mask" && state.source) setView("mask");
  }

  function setSize(size) {
    state.size = Math.max(2, Math.min(200, Math.round(size)));
    $("brush-size").value = state.size;
    $("brush-size-value").textContent = state.size + " px";
  }

  function updateControls() {
    const loaded = !!state.source, idle = !state.busy;
    $("threshold").disabled = !(loaded && state.conf && idle);
    $("undo").disabled = !(state.undo.length && idle);
    $("clear-edits").disabled = !(loaded && idle && state.edits && state.edits.some((v) => v !== EDIT_NONE));
    $("restore").disabled = !(loaded && idle && canRestore());
    $("inspect").disabled = !(loaded && idle && canInspect());
    $("inspect").hidden = !canInspect();
    $("view-confidence").disabled = !state.confView;
    $("view-result").disabled = !state.restored;
    $("view-artifacts").disabled = !state.artifacts;
    $("view-artifacts").hidden = !canInspect();
  }

  $("file-input").addEventListener("change", (event) => {
    openFile(event.target.files[0]);
    event.target.value = "";
  });
  $("threshold").addEventListener("input", (event) => {
    state.threshold = parseFloat(event.target.value);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    if (state.view !== "mask") setView("mask");
    recompute();
  });
  $("brush-size").addEventListener("input", (event) => setSize(parseFloat(event.target.value)));
  $("tool-brush").addEventListener("click", () => setTool("brush"));
  $("tool-eraser").addEventListener("click", () => setTool("eraser"));
  $("undo").addEventListener("click", undo);
  $("clear-edits").addEventListener("click", clearEdits);
  $("restore").addEventListener("click", restore);
  $("inspect").addEventListener("click", inspect);
  $("compare").addEventListener("input", (event) => { state.split = parseFloat(event.target.value); render(); });
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => setView(b.dataset.view));
  window.addEventListener("resize", fitView);

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement && event.target.type !== "range") return;
    const key = event.key.toLowerCase();
    if ((event.ctrlKey || event.metaKey) && key === "z") { event.preventDefault(); undo(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (key === "b") setTool("brush");
    else if (key === "e") setTool("eraser");
    else if (key === "[") setSize(state.size / 1.25);
    else if (key === "]") setSize(state.size * 1.25);
    else if (key === "m") setView("mask");
    else if (key === "c" && state.confView) setView("confidence");
    else if (key === "v") setView("result");
    else return;
    event.preventDefault();
  });

  // Drop an image anywhere on the page.
  let dragDepth = 0;
  document.addEventListener("dragenter", (e) => {
    e.preventDefault();
    dragDepth++;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    if (--dragDepth <= 0) {
      dragDepth = 0;
      document.body.classList.remove("dragging");
    }
  });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    dragDepth = 0;
    document.body.classList.remove("dragging");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) openFile(file);
  });

  setSize(state.size);
  updateControls();
  loadCaps();
})();
