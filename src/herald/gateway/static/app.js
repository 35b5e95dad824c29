// Herald dashboard: polls /stats and /topics, follows a topic over the WebSocket /ws.
"use strict";

const $ = (sel) => document.querySelector(sel);
const tokenInput = $("#token");
tokenInput.value = sessionStorage.getItem("herald-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("herald-token", tokenInput.value.trim());
  if (tail.ws) startTail();
});

function authHeaders() {
  const t = tokenInput.value.trim();
  return t ? { Authorization: "Bearer " + t } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function text(value) {
  if (value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

// A message's payload for display: "text" (text), "data" (a JSON value), "data_b64" (bytes).
function payload(m) {
  if ("text" in m) return m.text;
  if ("data" in m) return JSON.stringify(m.data);
  if ("data_b64" in m) return "base64:" + m.data_b64;
  return "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// -- counters and the chart ---------------------------------------------------------------
const CARDS = [
  ["published", "published via gateway"], ["delivered", "frames delivered"],
  ["ws_clients", "WebSocket clients"], ["sse_clients", "SSE clients"],
  ["reconnects", "Redis reconnects", true], ["gaps", "gaps", true],
  ["history_lost", "history lost", true], ["dropped", "dropped", true],
  ["slow_disconnects", "slow clients cut", true], ["refused", "refused", true],
];

function renderCards(stats) {
  const values = { ...stats.gateway, reconnects: stats.client.reconnects };
  $("#cards").replaceChildren(...CARDS.map(([key, label, warn]) =>
    el("div", { class: "card" + (warn && values[key] > 0 ? " bad" : ""), "data-key": key },
      el("b", {}, values[key] ?? 0), el("span", {}, label))));
  $("#uptime").textContent = "up " + Math.round(stats.gateway.uptime) + " s";
}

function drawChart(series) {
  const canvas = $("#chart");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, w, h);
  const values = series.map((p) => p[1]);
  const max = Math.max(10, ...values);
  const pad = 28;
  ctx.strokeStyle = "#26313d"; ctx.fillStyle = "#8b98a5"; ctx.font = "11px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + (h - pad) * (i / 4);
    ctx.beginPath(); ctx.moveTo(pad + 20, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(String(Math.round(max * (1 - i / 4))), 0, y + 4);
  }
  if (!values.length) return;
  const step = (w - pad - 20) / Math.max(1, values.length - 1);
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = pad + 20 + i * step, y = pad / 2 + (h - pad) * (1 - v / max);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.strokeStyle = "#4fb3ff"; ctx.lineWidth = 2; ctx.stroke();
  ctx.lineTo(pad + 20 + (values.length - 1) * step, h - pad / 2);
  ctx.lineTo(pad + 20, h - pad / 2); ctx.closePath();
  ctx.fillStyle = "rgba(79,179,255,.12)"; ctx.fill();
  $("#rate-now").textContent = "now " + values[values.length - 1] + "/s";
}

async function refreshStats() {
  try {
    const stats = await api("/stats");
    renderCards(stats);
    drawChart(stats.rates.series);
    const status = $("#status");
    status.textContent = stats.client.connected ? "connected" : "Redis unreachable";
    status.className = "pill " + (stats.client.connected ? "ok" : "bad");
  } catch (err) {
    $("#status").textContent = "error: " + err.message;
    $("#status").className = "pill bad";
  }
}

// -- topics, groups, dead letters -------------------------------------------------------------
let selected = null;

function policyText(policy) {
  return Object.entries(policy).map(([k, v]) => k + "=" + v).join(" ") || "—";
}

async function refreshTopics() {
  try {
    const data = await api("/topics");
    const rows = data.topics.map((t) => el("tr", { class: "clickable", "data-topic": t.topic, onclick: () => select(t.topic) },
      el("td", {}, t.topic), el("td", { class: "kind-" + t.kind }, t.kind), el("td", {}, policyText(t.policy)),
      el("td", {}, t.subscribers), el("td", {}, t.gateway_clients), el("td", {}, t.rate)));
    $("#topics tbody").replaceChildren(...rows);
    $("#patterns").textContent = data.patterns + " pattern subscription(s) on the server";
  } catch (err) { /* shown by the status pill */ }
  if (selected) refreshDetail();
}

function select(topic) { selected = topic; $("#detail").hidden = false; refreshDetail(); }

async function refreshDetail() {
  const topic = selected;
  const info = await api("/topics/" + encodeURIComponent(topic)).catch(() => null);
  if (!info || topic !== selected) return;
  $("#detail-name").textContent = topic;
  $("#detail-body").textContent = info.kind === "durable"
    ? `${info.length} entries, ${info.pending} pending, ${info.dead_letters} dead letters`
    : `${info.kind} topic: ${info.subscribers} subscriber connection(s)`;
  $("#groups tbody").replaceChildren(...(info.groups || []).map((g) =>
    el("tr", {}, el("td", {}, g.name), el("td", {}, g.pending), el("td", {}, g.lag ?? "?"), el("td", {}, g.consumers.length))));
  if (info.kind !== "durable") { $("#dead tbody").replaceChildren(); return; }
  const dead = await api("/topics/" + encodeURIComponent(topic) + "/dead?limit=50").catch(() => ({ dead_letters: [] }));
  $("#dead tbody").replaceChildren(...dead.dead_letters.map((d) =>
    el("tr", {}, el("td", {}, d.offset), el("td", {}, d.reason), el("td", {}, d.deliveries),
      el("td", {}, payload(d.message)),
      el("td", {}, el("button", { type: "button", onclick: () => replay([d.offset]) }, "replay")))));
}

async function replay(offsets) {
  try {
    await api("/topics/" + encodeURIComponent(selected) + "/dead/replay", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(offsets ? { offsets } : {}),
    });
  } catch (err) { alert("replay refused: " + err.message); }  // e.g. no replay or publish grant
  refreshDetail();
}
$("#replay-all").addEventListener("click", () => replay(null));

// -- publish ------------------------------------------------------------------------------------
$("#publish").addEventListener("submit", async (event) => {
  event.preventDefault();
  const topic = $("#pub-topic").value.trim();
  const body = $("#pub-body").value;
  let isJson = true;
  try { JSON.parse(body); } catch { isJson = false; }
  try {
    const ack = await api("/topics/" + encodeURIComponent(topic), {
      method: "POST", headers: { "Content-Type": isJson ? "application/json" : "text/plain" }, body,
    });
    $("#pub-result").textContent = `sent to ${ack.receivers} receiver(s)` + (ack.offset !== undefined ? `, offset ${ack.offset}` : "");
  } catch (err) { $("#pub-result").textContent = "refused: " + err.message; }
});

// -- live tail over the WebSocket ----------------------------------------------------------------
const tail = { ws: null, name: null, retry: 0 };
const TAIL_MAX = 200;

function tailLine(frame) {
  const list = $("#tail-list");
  let item;
  if (frame.type === "message") {
    const stamp = frame.ts ? new Date(frame.ts * 1000).toLocaleTimeString() : "";
    item = el("li", { class: "tail-msg" }, el("span", { class: "t" }, stamp + " " + frame.topic),
      payload(frame) + (frame.offset !== undefined ? "  @" + frame.offset : ""));
  } else if (frame.type === "gap" || frame.type === "history_lost" || frame.type === "error") {
    item = el("li", { class: "event" }, frame.type + ": " + (frame.reason || frame.message || ""));
  } else {
    return;
  }
  list.prepend(item);
  while (list.children.length > TAIL_MAX) list.lastChild.remove();
}

function startTail() {
  if (tail.ws) { tail.ws.onclose = null; tail.ws.close(); }
  const name = $("#tail-topic").value.trim();
  if (!name) return;
  tail.name = name;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = tokenInput.value.trim();
  const ws = new WebSocket(`${scheme}//${location.host}/ws` + (token ? "?token=" + encodeURIComponent(token) : ""));
  tail.ws = ws;
  $("#tail-state").textContent = "connecting…";
  ws.onopen = () => {
    tail.retry = 0;
    ws.send(JSON.stringify({ op: "subscribe", topic: name, id: 1 }));
  };
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    for (const frame of Array.isArray(data) ? data : [data]) {
      if (frame.type === "subscribed") $("#tail-state").textContent = "following " + name;
      tailLine(frame);
    }
  };
  ws.onclose = (event) => {
    $("#tail-state").textContent = `disconnected (${event.code} ${event.reason}), retrying…`;
    tailLine({ type: "gap", reason: "tail disconnected: messages may be missed" });
    tail.retry = Math.min(tail.retry + 1, 5);
    setTimeout(() => { if (tail.ws === ws) startTail(); }, 500 * tail.retry);
  };
}
$("#tail").addEventListener("submit", (event) => { event.preventDefault(); startTail(); });

refreshStats(); refreshTopics(); startTail();
setInterval(refreshStats, 1000);
setInterval(refreshTopics, 2000);
