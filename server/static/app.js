// songseek search page: plain JS, no build step, no CDN. The query lives in the URL so results can be shared.
"use strict";

const $ = (sel) => document.querySelector(sel);
const OPTION_KEYS = ["artist", "album", "genre", "year_min", "year_max", "tag", "tag_min", "k", "per_artist",
  "rerank", "exact"];
let selected = -1;
let lastQuery = null;  // {kind: "text", q} | {kind: "like", id} | {kind: "clip"}
let searchSeq = 0;  // the newest search; an older one answering late is dropped
let playing = null;  // the hit played last: one still loading from an earlier click stays silent
let lastClip = null;  // the clip searched last: "Apply" runs it again with the new filters

function mmss(s) {
  s = Math.round(s);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function showError(msg) {
  const box = $("#error");
  box.textContent = msg || "";
  box.hidden = !msg;
}

async function api(url, init) {
  const res = await fetch(url, Object.assign({credentials: "same-origin"}, init || {}));
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

function optionParams() {
  const form = $("#filters");
  const out = new URLSearchParams();
  for (const key of OPTION_KEYS) {
    const el = form.elements[key];
    if (!el) continue;
    if (el.type === "checkbox") { if (el.checked) out.set(key, "true"); continue; }
    if (el.value !== "" && !(key === "tag_min" && !form.elements.tag.value)) out.set(key, el.value);
  }
  return out;
}

function loadOptions(params) {
  const form = $("#filters");
  for (const key of OPTION_KEYS) {
    const el = form.elements[key];
    if (!el) continue;
    // the URL holds every option (Back/Forward included): one it does not name is at its default
    if (el.type === "checkbox") el.checked = params.get(key) === "true";
    else if (!params.has(key)) el.value = el.tagName === "SELECT" ? "" : el.defaultValue;
    else {
      if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === params.get(key))) {
        el.add(new Option(params.get(key), params.get(key)));
      }
      el.value = params.get(key);
    }
  }
}

function pushUrl(extra) {
  const params = optionParams();
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  history.pushState(null, "", "/?" + params.toString());
}

async function runFromUrl() {
  const params = new URLSearchParams(location.search);
  loadOptions(params);
  if (params.get("q")) {
    $("#q").value = params.get("q");
    await search({kind: "text", q: params.get("q")}, `/api/search?q=${encodeURIComponent(params.get("q"))}`);
    return;
  }
  $("#q").value = "";  // else Apply would run the text of an earlier search instead of this one
  if (params.get("like")) {
    const id = params.get("like");
    await search({kind: "like", id}, `/api/similar/${encodeURIComponent(id)}?`);
  } else {  // back to the empty page: no results of a search the URL no longer asks for
    searchSeq++;
    lastQuery = null;
    render([]);
    showError("");
    $("#status").textContent = "";
  }
}

async function search(query, base, init) {
  const seq = ++searchSeq;
  showError("");
  $("#status").textContent = "searching…";
  const url = base + (base.endsWith("?") ? "" : "&") + optionParams().toString();
  try {
    const t0 = performance.now();
    const data = await api(url, init);
    if (seq !== searchSeq) return;
    lastQuery = query;
    render(data.hits);
    const what = query.kind === "text" ? `“${query.q}”` : query.kind === "like" ? "more like this" : "your clip";
    $("#status").textContent = `${data.hits.length} hits for ${what} in ${Math.round(performance.now() - t0)} ms`;
  } catch (e) {
    if (seq !== searchSeq) return;
    $("#status").textContent = "";
    render([]);  // the previous query's hits are not an answer to this one
    showError(e.message);
  }
}

function render(hits) {
  const list = $("#hits");
  list.replaceChildren();
  selected = -1;
  hits.forEach((h, i) => list.append(hitItem(h, i)));
  if (hits.length) select(0);
}

function hitItem(h, i) {
  const li = document.createElement("li");
  li.className = "hit";
  li.dataset.trackId = h.track_id;
  li.dataset.start = h.start_s;
  li.dataset.end = h.end_s;
  const title = h.title || h.path.split(/[\\/]/).pop();
  li.innerHTML = `
    <div class="meta">
      <span class="title"></span> <span class="artist"></span> <span class="album"></span>
      <span class="dur"></span> <span class="score"></span> <span class="segment"></span>
    </div>
    <div class="player">
      <button class="play" type="button">▶ play segment</button>
      <audio controls preload="none"></audio>
      <button class="like" type="button">more like this</button>
    </div>
    <canvas class="wave" height="40" title="waveform (peaks computed on the server); click to play from there"></canvas>
    <canvas class="strip" height="28" title="similarity per window; click to play from there"></canvas>`;
  li.querySelector(".title").textContent = title;
  // each hit's controls named after its track: a screen reader lists more than one "play segment"
  li.querySelector(".play").setAttribute("aria-label", `play segment of ${title}`);
  li.querySelector(".like").setAttribute("aria-label", `more like ${title}`);
  li.querySelector("audio").setAttribute("aria-label", `player: ${title}`);
  li.querySelector(".artist").textContent = h.artist || "";
  li.querySelector(".album").textContent = h.album ? `· ${h.album}` : "";
  li.querySelector(".dur").textContent = `· ${mmss(h.duration_s)}`;
  li.querySelector(".score").textContent = `score ${h.score.toFixed(3)}`;
  li.querySelector(".segment").textContent = `best ${mmss(h.start_s)}–${mmss(h.end_s)}`;
  const audio = li.querySelector("audio");
  audio.src = h.audio_url;  // #t=start,end: the browser starts at the segment
  // The fragment's end stops only the first play: "play segment" stops at the end itself, unless the
  // listener has moved the playhead out of the segment meanwhile.
  audio.addEventListener("seeking", () => {
    if (audio.currentTime < h.start_s || audio.currentTime >= h.end_s) delete li.dataset.stopAtEnd;
  });
  audio.addEventListener("timeupdate", () => {
    if (li.dataset.stopAtEnd && audio.currentTime >= h.end_s) { delete li.dataset.stopAtEnd; audio.pause(); }
  });
  audio.addEventListener("error", () => audioError(audio));
  li.querySelector(".play").addEventListener("click", () => playFrom(li, h.start_s, true));
  li.querySelector(".like").addEventListener("click", () => {
    pushUrl({like: h.track_id});
    $("#q").value = "";
    search({kind: "like", id: h.track_id}, `/api/similar/${encodeURIComponent(h.track_id)}?`);
  });
  li.addEventListener("click", () => select(i));
  li.addEventListener("focusin", () => select(i));  // Tab into a hit selects it: j/k and space go on from there
  drawStrip(li, h);
  drawWave(li, h);
  return li;
}

function playFrom(li, t, stopAtEnd) {
  playing = li;
  for (const a of document.querySelectorAll("audio")) if (!li.contains(a)) a.pause();
  const audio = li.querySelector("audio");
  if (stopAtEnd) li.dataset.stopAtEnd = "1";
  else delete li.dataset.stopAtEnd;
  const start = () => {
    if (playing !== li) return;  // another hit was played while this one loaded
    audio.currentTime = t;
    // AbortError: paused before it began (another hit was played): not a failure
    audio.play().catch((e) => { if (e.name !== "AbortError") showError(`cannot play: ${e.message}`); });
  };
  if (audio.readyState >= 1) start();
  else { audio.addEventListener("loadedmetadata", start, {once: true}); audio.load(); }
}

async function audioError(audio) {
  // the element only says that it failed; the server's {error} says why (file gone, cannot be read, token)
  let msg = "cannot play this track in this browser";
  try { await api(audio.src.split("#")[0], {headers: {Range: "bytes=0-0"}}); } catch (e) { msg = `cannot play: ${e.message}`; }
  showError(msg);
}

async function drawStrip(li, h) {
  const canvas = li.querySelector(".strip");
  let url = `/api/tracks/${encodeURIComponent(h.track_id)}?`;
  if (lastQuery && lastQuery.kind === "text") url += `q=${encodeURIComponent(lastQuery.q)}&`;
  else if (lastQuery && lastQuery.kind === "like") url += `like=${encodeURIComponent(lastQuery.id)}&`;
  else $("#q").value && (url += `q=${encodeURIComponent($("#q").value)}&`);
  let data;
  try { data = await api(url); } catch (e) { return; }
  const windows = data.windows, tl = data.timeline;
  const total = Math.max(data.duration_s, windows.length ? windows[windows.length - 1].end_s : 0) || 1;
  canvas.width = canvas.clientWidth || 600;
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const segX = h.start_s / total * W, segW = Math.max(2, (h.end_s - h.start_s) / total * W);
  ctx.fillStyle = "#fbd38d";
  ctx.fillRect(segX, 0, segW, H);
  if (tl) {
    const lo = Math.min(...tl.similarity), hi = Math.max(...tl.similarity);
    windows.forEach((w, j) => {
      const v = hi > lo ? (tl.similarity[j] - lo) / (hi - lo) : 0.5;
      ctx.fillStyle = "#2b6cb0";
      const x = w.start_s / total * W, bw = Math.max(1, (w.end_s - w.start_s) / total * W - 1);
      ctx.fillRect(x, H - 2 - v * (H - 4), bw, 2 + v * (H - 4));
    });
  }
  ctx.fillStyle = "#dd6b20";  // the best segment: a bar along the top, over the similarity bars
  ctx.fillRect(segX, 0, segW, 3);
  canvas.dataset.ready = "1";
  canvas.onclick = (ev) => {
    const rect = canvas.getBoundingClientRect();
    playFrom(li, (ev.clientX - rect.left) / rect.width * total);
  };
}

async function drawWave(li, h) {
  const canvas = li.querySelector(".wave");
  canvas.width = Math.min(4000, canvas.clientWidth || 600);
  let p;
  try { p = await api(`/api/tracks/${encodeURIComponent(h.track_id)}/peaks?n=${canvas.width}`); }
  catch (e) { canvas.title = `no waveform: ${e.message}`; return; }
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, mid = H / 2;
  const total = p.duration_s || 1;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fbd38d";  // the best segment behind the waveform, aligned with the strip below
  ctx.fillRect(h.start_s / total * W, 0, Math.max(2, (h.end_s - h.start_s) / total * W), H);
  ctx.fillStyle = "#4a5568";
  for (let i = 0; i < p.bins; i++) {  // whole pixels: crisp columns, no blending between neighbours
    const x0 = Math.floor(p.edges_s[i] / total * W), x1 = Math.floor(p.edges_s[i + 1] / total * W);
    const top = Math.round(mid - p.maxs[i] * mid), bottom = Math.round(mid - p.mins[i] * mid);
    ctx.fillRect(x0, top, Math.max(1, x1 - x0), Math.max(1, bottom - top));
  }
  canvas.dataset.ready = "1";
  canvas.onclick = (ev) => {
    const rect = canvas.getBoundingClientRect();
    playFrom(li, (ev.clientX - rect.left) / rect.width * total);
  };
}

function select(i) {
  const items = document.querySelectorAll("#hits .hit");
  if (!items.length) return;
  selected = Math.max(0, Math.min(items.length - 1, i));
  items.forEach((el, j) => {
    el.classList.toggle("selected", j === selected);
    if (j === selected) el.setAttribute("aria-current", "true");
    else el.removeAttribute("aria-current");
  });
  items[selected].scrollIntoView({block: "nearest"});
}

async function searchClip(file) {
  if (!file) return;
  const body = new FormData();
  body.append("file", file);
  // the excerpt to search: a clip longer than the server's limit (60 s by default) needs one
  const from = $("#clip-start").value, to = $("#clip-end").value;
  if (from !== "") body.append("start", from);
  if (to !== "") body.append("end", to);
  $("#q").value = "";
  lastClip = file;
  await search({kind: "clip"}, "/api/search/audio?", {method: "POST", body});
}

async function loadFacets() {
  try {
    const [health, facets] = await Promise.all([api("/api/health"), api("/api/facets")]);
    if (health.random_weights) {
      const w = $("#warning");
      w.textContent = "Warning: this library was built with RANDOM weights — scores mean nothing.";
      w.hidden = false;
    }
    const form = $("#filters");
    for (const [key, values] of [["artist", facets.artists], ["album", facets.albums], ["genre", facets.genres],
      ["tag", facets.tags]]) {
      const sel = form.elements[key];
      for (const v of values) if (![...sel.options].some((o) => o.value === v)) sel.add(new Option(v, v));
    }
    document.querySelectorAll(".tags").forEach((el) => { el.hidden = !facets.tags.length; });
  } catch (e) {
    showError(e.message);
  }
}

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("#q").value.trim();
  if (!q && lastClip && document.activeElement.closest("#clip-start, #clip-end")) {  // Enter in the excerpt
    searchClip(lastClip);
    return;
  }
  if (!q) { showError("type what the music sounds like"); return; }
  pushUrl({q});
  search({kind: "text", q}, `/api/search?q=${encodeURIComponent(q)}`);
});
$("#filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("#q").value.trim();
  if (q) { pushUrl({q}); search({kind: "text", q}, `/api/search?q=${encodeURIComponent(q)}`); }
  else if (lastQuery && lastQuery.kind === "like") {
    pushUrl({like: lastQuery.id});
    search(lastQuery, `/api/similar/${encodeURIComponent(lastQuery.id)}?`);
  } else if (lastQuery && lastQuery.kind === "clip" && lastClip) searchClip(lastClip);
  else showError("type what the music sounds like, or drop a clip");
});
$("#clip").addEventListener("change", (ev) => searchClip(ev.target.files[0]));
for (const el of [$("#clip-start"), $("#clip-end")]) {
  el.addEventListener("change", () => searchClip(lastClip));  // a new excerpt of the clip chosen or dropped
}
document.addEventListener("dragover", (ev) => { ev.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (ev) => {
  ev.preventDefault();
  document.body.classList.remove("dragging");
  searchClip(ev.dataTransfer.files[0]);
});
document.addEventListener("keydown", (ev) => {
  // typing, shortcuts of the browser's own (Ctrl+K ...) and space on a button or a player stay theirs
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.closest("input, select, textarea")) return;
  if (ev.key === "j" || ev.key === "k") {
    if (ev.target.closest("#hits")) ev.target.blur();  // else space would press the old hit's button
    select(selected + (ev.key === "j" ? 1 : -1));
  } else if (ev.key === " " && selected >= 0 && !ev.target.closest("button, audio, summary")) {
    ev.preventDefault();
    const li = document.querySelectorAll("#hits .hit")[selected];
    const audio = li.querySelector("audio"), t = audio.currentTime;
    const start = Number(li.dataset.start), end = Number(li.dataset.end);
    if (!audio.paused) audio.pause();
    else if (t > 0) playFrom(li, t, t >= start && t < end);  // resume; inside the segment, stop at its end
    else playFrom(li, start, true);
  }
});
window.addEventListener("popstate", runFromUrl);
loadFacets();
runFromUrl();
