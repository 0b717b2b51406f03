// textgym labeling page. Model text is inserted with textContent only, never as HTML.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const $ = (id) => document.getElementById(id);

function withToken(path) {
  return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
}

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers["X-Textgym-Token"] = token;
  const response = await fetch(path, body === undefined ? { headers } : {
    method: "POST", headers, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function row(table, cells, header) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement(header ? "th" : "td");
    td.textContent = cell === null || cell === undefined ? "n/a" : String(cell);
    tr.appendChild(td);
  }
  table.appendChild(tr);
}

// ------------------------------------------------------------------ labeling page

const state = { rater: "", task: null, score: null, order: [], selected: 0 };
const HELP = {
  rate: "Keys 1-5 pick a score; Enter submits (outside the comment box, or Ctrl+Enter inside it).",
  rank: "Drag items, or press a number to select an item and ArrowUp / ArrowDown to move it; Enter submits.",
  edit: "Correct the completion below; Ctrl+Enter submits.",
  demo: "Write the completion you would want for this prompt; Ctrl+Enter submits.",
};
const TITLES = { rate: "Rate this completion", rank: "Rank these completions",
                 edit: "Edit this completion", demo: "Write a completion" };

function showProgress(p) {
  $("progress").textContent = `You labelled ${p.labelled_by_rater} · ${p.left_for_rater} left for you · ` +
    `${p.done} of ${p.tasks} tasks done`;
}

async function loadNext() {
  const data = await api(withToken("api/next?rater=" + encodeURIComponent(state.rater)));
  showProgress(data.progress);
  state.task = data.task;
  const section = $("task");
  if (!data.task) {
    section.hidden = true;
    setStatus("Nothing left to label. Thank you!");
    return;
  }
  setStatus("");
  section.hidden = false;
  const task = data.task;
  section.dataset.kind = task.kind;
  section.dataset.taskId = String(task.id);
  $("task-title").textContent = TITLES[task.kind];
  $("task-help").textContent = HELP[task.kind];
  $("prompt").textContent = task.prompt;
  for (const el of document.querySelectorAll(".kind")) el.hidden = true;
  if (task.kind === "rate") {
    $("rate").hidden = false;
    $("completion").textContent = task.samples[0].completion;
    $("comment").value = "";
    state.score = null;
    renderScores();
  } else if (task.kind === "rank") {
    $("rank").hidden = false;
    state.order = task.samples.slice();
    state.selected = 0;
    renderRanking();
  } else {
    $("write").hidden = false;
    $("write-title").textContent = task.kind === "edit" ? "Your corrected completion" : "Your completion";
    $("text").value = task.kind === "edit" ? task.samples[0].completion : "";
    $("text").focus();
  }
}

function renderScores() {
  const box = $("scores");
  box.replaceChildren();
  for (let s = 1; s <= 5; s++) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = String(s);
    b.setAttribute("role", "radio");
    b.setAttribute("aria-checked", String(state.score === s));
    b.addEventListener("click", () => { state.score = s; renderScores(); });
    box.appendChild(b);
  }
}

let dragFrom = null;

function renderRanking() {
  const list = $("ranking");
  list.replaceChildren();
  state.order.forEach((sample, i) => {
    const li = document.createElement("li");
    li.textContent = sample.completion;
    li.dataset.sampleId = String(sample.id);
    li.draggable = true;
    if (i === state.selected) li.classList.add("selected");
    li.addEventListener("click", () => { state.selected = i; renderRanking(); });
    li.addEventListener("dragstart", (e) => {
      dragFrom = i;
      li.classList.add("dragging");
      e.dataTransfer.setData("text/plain", String(i));
    });
    li.addEventListener("dragend", () => li.classList.remove("dragging"));
    li.addEventListener("dragover", (e) => e.preventDefault());
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      if (dragFrom !== null) move(dragFrom, i);
      dragFrom = null;
    });
    list.appendChild(li);
  });
}

function move(from, to) {
  if (to < 0 || to >= state.order.length || from === to) return;
  const [item] = state.order.splice(from, 1);
  state.order.splice(to, 0, item);
  state.selected = to;
  renderRanking();
}

async function submit() {
  const task = state.task;
  if (!task) return;
  const body = { rater: state.rater, task_id: task.id };
  if (task.kind === "rate") {
    if (state.score === null) { setStatus("Pick a score from 1 to 5 first.", true); return; }
    body.score = state.score;
    body.comment = $("comment").value;
  } else if (task.kind === "rank") {
    body.order = state.order.map((s) => s.id);
  } else {
    body.text = $("text").value;
    if (task.kind === "demo" && !body.text.trim()) { setStatus("Write something first.", true); return; }
  }
  try {
    const result = await api(withToken("api/label"), body);
    showProgress(result.progress);
    await loadNext();
  } catch (err) {
    setStatus("Not saved: " + err.message, true);
  }
}

function onKey(e) {
  const task = state.task;
  if (!task || $("task").hidden) return;
  const typing = e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement;
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey || !typing)) {
    e.preventDefault();
    submit();
    return;
  }
  if (typing) return;
  if (task.kind === "rate" && /^[1-5]$/.test(e.key)) {
    state.score = Number(e.key);
    renderScores();
  } else if (task.kind === "rank") {
    if (/^[1-9]$/.test(e.key) && Number(e.key) <= state.order.length) {
      state.selected = Number(e.key) - 1;
      renderRanking();
    } else if (e.key === "ArrowUp" || e.key === "ArrowDown") {
      e.preventDefault();
      move(state.selected, state.selected + (e.key === "ArrowUp" ? -1 : 1));
    }
  }
}

function initLabelPage() {
  $("stats-link").href = withToken("stats");
  const saved = localStorage.getItem("textgym-rater") || "";
  $("rater").value = saved;
  $("who").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.rater = $("rater").value.trim();
    if (!state.rater) return;
    localStorage.setItem("textgym-rater", state.rater);
    $("rater").blur();
    try { await loadNext(); } catch (err) { setStatus(err.message, true); }
  });
  $("submit").addEventListener("click", submit);
  document.addEventListener("keydown", onKey);
  setStatus("Enter your name to start.");
}

// ------------------------------------------------------------------ statistics page

async function initStatsPage() {
  $("label-link").href = withToken("./");
  try {
    const report = await api(withToken("api/stats"));
    for (const [key, value] of Object.entries(report.counts)) row($("counts"), [key, value]);
    for (const [key, value] of Object.entries(report.ratings)) row($("ratings"), [key, value]);
    for (const [key, value] of Object.entries(report.preferences)) row($("preferences"), [key, value]);
    row($("raters"), ["rater", "ratings", "mean", "std"], true);
    for (const [name, s] of Object.entries(report.raters)) row($("raters"), [name, s.ratings, s.mean, s.std]);
  } catch (err) {
    setStatus(err.message, true);
  }
}

if (document.body.dataset.page === "stats") initStatsPage(); else initLabelPage();
