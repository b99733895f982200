// The live page: one WebSocket to /ws (protocol in live/server.py). Frames arrive per block as base64
// JPEGs; the player shows them at the video's frame rate and the context panel uses them as thumbnails.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { frames: [], shown: -1, fps: 16, running: false, paused: false, started: false, ws: null };

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function setRunning(running) {
  state.running = running;
  $("pause").disabled = !running;
  $("send-prompt").disabled = !running;
  $("pause").textContent = state.paused ? "Resume" : "Pause";
}

function onHello(m) {
  state.fps = m.fps;
  $("fps").textContent = m.fps;
  $("setup").textContent = `${m.backbone} · ${m.method} · window ${m.window}, sink ${m.sink_size} · ` +
    `${m.num_frames} latent frames · saves to ${m.output_folder}`;
  if (m.label) { $("label").textContent = m.label; $("label").hidden = false; }
  if (!$("prompt").value) $("prompt").value = m.prompt;
  $("connection").textContent = "connected";
  $("connection").className = "pill live";
  $("start").disabled = false;
}

function onBlock(m) {
  for (const jpeg of m.frames) state.frames.push("data:image/jpeg;base64," + jpeg);
  $("frames-received").textContent = state.frames.length;
  $("blocks-done").textContent = m.index + 1;
  $("num-blocks").textContent = m.num_blocks;
  $("progress-bar").style.width = `${(100 * (m.index + 1)) / m.num_blocks}%`;
  $("current-prompt").textContent = m.prompt;
  if (m.boundary || $("segments").children.length === 0) addSegment(m.prompt, m.index, m.switch);
  const s = m.speed;
  $("denoise-fps").textContent = s.denoise_fps.toFixed(1);
  $("total-fps").textContent = s.total_fps.toFixed(1);
  $("mean-denoise-fps").textContent = s.mean_denoise_fps.toFixed(1);
  $("mean-total-fps").textContent = s.mean_total_fps.toFixed(1);
  $("block-ms").textContent = `${s.denoise_ms.toFixed(0)} + ${s.decode_ms.toFixed(0)} decode`;
  showContext(m);
  $("save").disabled = false;
}

function addSegment(prompt, block, event) {
  const item = document.createElement("li");
  item.textContent = `from block ${block}: ${prompt}`;
  if (event) {  // what the switch did to the context (the context log's switch event)
    const shown = Object.entries(event).filter(([k]) => !["block", "first_frame", "segment", "previous_segment"].includes(k));
    const detail = document.createElement("div");
    detail.className = "hint";
    detail.textContent = "switch: " + shown.map(([k, v]) => `${k} ${Array.isArray(v) ? v.length + " frames" : v}`).join(", ");
    item.appendChild(detail);
  }
  $("segments").appendChild(item);
}

function showContext(m) {
  $("context-block").textContent = `block ${m.index} (latent frames from ${m.first_frame})`;
  $("banked").textContent = `past frames it attends (#latent frame @RoPE position)` +
    (m.num_banked == null ? "" : `; ${m.num_banked} frames in the memory bank`);
  const box = $("context");
  box.replaceChildren();
  for (const key of m.context) {
    const cell = document.createElement("div");
    cell.className = `thumb ${key.kind}`;
    cell.title = `latent frame ${key.frame}: ${key.kind}, RoPE position ${key.position}, ${key.tokens} tokens`;
    const img = document.createElement("img");
    img.src = state.frames[key.video_frame] || "";
    const caption = document.createElement("span");
    caption.textContent = `#${key.frame} @${key.position}`;
    cell.append(img, caption);
    box.appendChild(cell);
  }
}

function play() {
  if (state.shown + 1 < state.frames.length) {
    state.shown += 1;
    const img = $("video");
    img.src = state.frames[state.shown];
    if (state.shown === 0) img.onload = () => img.style.setProperty("--aspect", `${img.naturalWidth} / ${img.naturalHeight}`);
    $("frame-shown").textContent = state.shown;
  }
  setTimeout(play, 1000 / state.fps);
}

const handlers = {
  hello: onHello,
  block: onBlock,
  started(m) {
    state.frames = []; state.shown = -1; state.paused = false;
    $("segments").replaceChildren();
    $("num-blocks").textContent = m.num_blocks;
    setRunning(true);
    status("generating…");
  },
  prompt(m) {
    status(m.prompt ? `prompt queued${m.cut ? " with a hard cut" : ""}: it conditions the video from block ${m.at_block} on`
                    : "that prompt is already playing");
  },
  pause() { state.paused = true; setRunning(true); status("paused"); },
  resume() { state.paused = false; setRunning(true); status("generating…"); },
  done(m) { setRunning(false); status(`video finished (${m.blocks} blocks): save it, or Start a new one`); },
  saved(m) { status(`saved ${m.files.join(", ")} in ${m.folder}`); },
  error(m) { status(m.message, true); },
  busy(m) {
    $("busy").textContent = m.message;
    $("busy").hidden = false;
    $("connection").textContent = "busy";
    $("start").disabled = true;
  },
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  state.ws = new WebSocket(`${scheme}://${location.host}/ws`);
  state.ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    (handlers[m.type] || (() => status(`unknown message ${m.type}`, true)))(m);
  };
  state.ws.onclose = () => {
    if ($("busy").hidden) { $("connection").textContent = "disconnected"; $("connection").className = "pill"; }
    setRunning(false);
    $("start").disabled = true;
  };
}

function sendPrompt() {
  const text = $("prompt").value.trim();
  if (!text) return;
  send({ type: "prompt", prompt: text, cut: $("cut").checked });
  $("cut").checked = false;
}

$("start").disabled = true;
$("start").onclick = () => send({ type: "start", prompt: $("prompt").value.trim() });
$("pause").onclick = () => send({ type: state.paused ? "resume" : "pause" });
$("save").onclick = () => send({ type: "save" });
$("send-prompt").onclick = sendPrompt;
$("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) sendPrompt(); });
connect();
play();
