// cairn's settings page. Everything it shows comes from the server's JSON routes, which are the
// CLI's own code; every change goes back through them (the schema, the plan, one commit).
// No framework: the DOM, fetch and EventSource.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  head: null, // master's head as last seen
  base: null, // the head the pending edits started from (what a save is checked against)
  keys: [], // rows of /api/settings
  edits: new Map(), // key -> text as typed
  refused: new Map(), // key -> the schema's message
  vm: null,
  history: { key: "", next: null, loaded: false },
};

// ---- talking to the server -------------------------------------------------------------

async function api(path, body) {
  const options = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = { error: `${response.status} ${response.statusText}` };
  }
  return { status: response.status, data };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const short = (id) => (id ? id.slice(0, 12) : "-");

// ---- values as a user types them ------------------------------------------------------

// The text of a stored value (as /api/settings gives it) in the form the schema takes back.
function textOf(row) {
  const v = row.value;
  if (v === null || v === undefined) return "";
  switch (row.control.kind) {
    case "json":
      return JSON.stringify(v, null, 2);
    case "list":
    case "lines":
      return Array.isArray(v) ? v.join("\n") : String(v);
    case "set":
      return Array.isArray(v) ? v.join(" ") : String(v);
    default:
      return String(v);
  }
}

function shown(row, value) {
  if (value === null || value === undefined) return "(empty)";
  if (typeof value === "object" && !Array.isArray(value)) return JSON.stringify(value);
  if (Array.isArray(value)) return value.length ? value.join(", ") : "(empty)";
  return value === "" ? "(empty)" : String(value);
}

// ---- the VM ----------------------------------------------------------------------------

function showVm(vm) {
  state.vm = vm;
  const line = $("vm");
  let text;
  if (!vm.up) {
    text = "VM: not running (cairn up is not running)";
  } else {
    const backend = [vm.backend, vm.accel].filter(Boolean).join(", ");
    text = `VM: ${vm.state}${backend ? ` (${backend})` : ""} · applied ${short(vm.applied)}`;
  }
  line.textContent = text;
  line.className = vm.up ? vm.state : "stopped";
  const banner = $("banner");
  const error = vm.error;
  if (vm.up && error && error.commit && error.commit === vm.attempted) {
    banner.textContent = `The guest could not apply ${short(error.commit)}: ${
      error.key ? `${error.key}: ` : ""
    }${error.message}`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

// ---- settings --------------------------------------------------------------------------

function control(row) {
  const c = row.control;
  const id = `in-${row.key}`;
  const current = state.edits.has(row.key) ? state.edits.get(row.key) : textOf(row);
  const described = `sum-${row.key} err-${row.key}`;
  const changed = () => edited(row);
  switch (c.kind) {
    case "readonly":
      return el("output", { id, text: shown(row, row.value) });
    case "bool":
      return el("input", {
        id, type: "checkbox", "aria-describedby": described,
        checked: current === "true", onchange: changed,
      });
    case "choice": {
      const select = el("select", { id, "aria-describedby": described, onchange: changed });
      for (const choice of c.choices) {
        select.append(el("option", { value: choice, text: choice, selected: choice === current }));
      }
      return select;
    }
    case "set": {
      const chosen = new Set(current.split(/[\s,]+/).filter(Boolean));
      const set = el("fieldset", { id, "aria-describedby": described });
      set.append(el("legend", { class: "visually-hidden", text: row.key }));
      for (const choice of c.choices) {
        const box = el("input", {
          type: "checkbox", id: `${id}-${choice}`, value: choice,
          checked: chosen.has(choice), onchange: changed,
        });
        set.append(el("label", { for: `${id}-${choice}` }, box, ` ${choice}`));
      }
      return set;
    }
    case "size": {
      // MiB in the tree; shown in GiB when it is a whole number of them.
      const typed = current.trim();
      let number = typed, unit = "M";
      const m = typed.match(/^(\d+)\s*([MGT])?i?B?$/i);
      if (m) {
        number = m[1];
        unit = (m[2] || "M").toUpperCase();
        if (unit === "M" && Number(number) > 0 && Number(number) % 1024 === 0) {
          number = String(Number(number) / 1024);
          unit = "G";
        }
      }
      const wrap = el("span", { class: "size" });
      wrap.append(
        el("input", { id, type: "number", min: "0", step: "1", value: number,
          "aria-describedby": described, oninput: changed }),
        el("label", { for: `${id}-unit`, class: "visually-hidden", text: `${row.key} unit` }),
      );
      const select = el("select", { id: `${id}-unit`, onchange: changed });
      for (const [u, name] of [["M", "MiB"], ["G", "GiB"], ["T", "TiB"]]) {
        select.append(el("option", { value: u, text: name, selected: u === unit }));
      }
      wrap.append(select);
      return wrap;
    }
    case "int":
      return el("input", { id, type: "number", step: "1", value: current,
        "aria-describedby": described, oninput: changed });
    case "list":
    case "lines":
    case "json": {
      const rows = Math.min(12, Math.max(3, current.split("\n").length + 1));
      return el("textarea", {
        id, rows: String(rows), spellcheck: "false", class: c.kind === "json" ? "mono" : "mono",
        "aria-describedby": described, oninput: changed,
      }, document.createTextNode(current));
    }
    default:
      return el("input", { id, type: "text", value: current, spellcheck: "false",
        "aria-describedby": described, oninput: changed });
  }
}

// The text the control holds now, in the form the schema takes.
function typedText(row) {
  const id = `in-${row.key}`;
  const node = $(id);
  switch (row.control.kind) {
    case "bool":
      return node.checked ? "true" : "false";
    case "set":
      return [...node.querySelectorAll("input:checked")].map((b) => b.value).join(" ");
    case "size": {
      const n = node.value.trim();
      const unit = $(`${id}-unit`).value;
      return unit === "M" ? n : `${n}${unit}`;
    }
    default:
      return node.value;
  }
}

// Whether two texts mean the same value, as far as the page can tell without the server.
function same(row, a, b) {
  if (row.control.kind === "json") {
    try {
      return JSON.stringify(JSON.parse(a)) === JSON.stringify(JSON.parse(b));
    } catch (_) {
      return false;
    }
  }
  if (row.control.kind === "size") {
    const mib = (t) => {
      const m = String(t).trim().match(/^(\d+)\s*([MGT])?/i);
      if (!m) return NaN;
      const scale = { M: 1, G: 1024, T: 1024 * 1024 }[(m[2] || "M").toUpperCase()];
      return Number(m[1]) * scale;
    };
    return mib(a) === mib(b);
  }
  const norm = (t) => String(t).split(/[\s,]+/).filter(Boolean).join(" ");
  return ["list", "set"].includes(row.control.kind) ? norm(a) === norm(b) : a.trim() === b.trim();
}

let planTimer = null;

function edited(row) {
  const text = typedText(row);
  if (same(row, text, textOf(row))) state.edits.delete(row.key);
  else state.edits.set(row.key, text);
  if (state.edits.size && !state.base) state.base = state.head;
  if (!state.edits.size) state.base = null;
  // A JSON value the browser cannot parse says so at once; the server says the rest.
  if (row.control.kind === "json" && state.edits.has(row.key)) {
    try {
      JSON.parse(text);
    } catch (e) {
      state.refused.set(row.key, `${row.key}: not JSON: ${e.message}`);
    }
  }
  markRows();
  clearTimeout(planTimer);
  planTimer = setTimeout(updatePlan, 250);
}

function markRows() {
  for (const row of state.keys) {
    const box = $(`row-${row.key}`);
    if (!box) continue;
    box.classList.toggle("edited", state.edits.has(row.key));
    const error = $(`err-${row.key}`);
    error.textContent = state.refused.get(row.key) || "";
    const input = $(`in-${row.key}`);
    if (input) input.setAttribute("aria-invalid", state.refused.has(row.key) ? "true" : "false");
  }
  const any = state.edits.size > 0;
  $("save").disabled = !any || state.refused.size > 0;
  $("discard").disabled = !any;
}

async function updatePlan() {
  if (!state.edits.size) {
    state.refused.clear();
    $("plan").textContent = "No changes.";
    markRows();
    return;
  }
  const values = Object.fromEntries(state.edits);
  const { status, data } = await api("/api/plan", { base: state.base, values });
  state.refused.clear();
  if (status === 200) {
    $("plan").textContent = data.words;
  } else if (data.refused) {
    for (const [key, message] of Object.entries(data.refused)) state.refused.set(key, message);
    $("plan").textContent = "Refused: see the fields marked.";
  } else {
    $("plan").textContent = data.error || `error ${status}`;
  }
  markRows();
}

function renderSettings() {
  const keys = $("keys");
  keys.replaceChildren();
  for (const row of state.keys) {
    const c = row.control;
    const name = el("div", { class: "name" });
    if (["set", "readonly"].includes(c.kind)) name.append(el("span", { class: "label", text: row.key }));
    else name.append(el("label", { for: `in-${row.key}`, text: row.key }));
    name.append(el("span", { class: "badge", title: "what a change does", text: row.apply }));
    if (row.changed) name.append(el("span", { class: "badge changed", text: "changed" }));
    if (row.invalid) name.append(el("span", { class: "badge invalid", text: "refused by the schema" }));
    const details = el("details", {},
      el("summary", { text: "Details" }),
      el("p", { text: row.description }),
      el("p", { text: `Default: ${shown(row, row.default)}. Allowed: ${c.allowed}.` }),
    );
    if (Object.keys(row.options || {}).length) {
      details.append(el("p", { text: `Options: ${Object.entries(row.options).map(([k, v]) => `${k}=${shown(row, v)}`).join(", ")}` }));
    }
    keys.append(el("div", { class: "key", id: `row-${row.key}` },
      name,
      el("div", { class: "control" }, control(row)),
      el("p", { class: "summary", id: `sum-${row.key}`, text: row.summary }),
      el("p", { class: "error", id: `err-${row.key}`, role: "alert", text: row.invalid || "" }),
      el("p", { class: "conflict", id: `conflict-${row.key}`, hidden: true }),
      details,
    ));
  }
  markRows();
}

async function loadSettings() {
  const { status, data } = await api("/api/settings");
  if (status !== 200) {
    $("keys").textContent = data.error || `error ${status}`;
    return;
  }
  const before = new Map(state.keys.map((r) => [r.key, JSON.stringify(r.value)]));
  const first = state.keys.length === 0;
  state.keys = data.keys;
  state.head = data.head;
  $("head").textContent = short(data.head);
  showVm(data.vm);
  if (first) {
    renderSettings();
    fillKeyChooser();
    return;
  }
  // A value changed elsewhere: fields not being edited show it; an edited field keeps the
  // edit and says what master has now (saving it is then a conflict the server refuses).
  for (const row of state.keys) {
    const changed = before.get(row.key) !== JSON.stringify(row.value);
    if (!changed) continue;
    if (state.edits.has(row.key)) {
      const note = $(`conflict-${row.key}`);
      note.textContent = `Changed elsewhere to ${shown(row, row.value)} while you were editing.`;
      note.hidden = false;
    } else {
      const holder = $(`row-${row.key}`).querySelector(".control");
      holder.replaceChildren(control(row));
      $(`row-${row.key}`).classList.add("updated");
    }
  }
}

async function save(event) {
  event.preventDefault();
  if (!state.edits.size) return;
  const values = Object.fromEntries(state.edits);
  const message = $("message").value;
  $("save").disabled = true;
  const { status, data } = await api("/api/save", { base: state.base, values, message });
  const result = $("save-result");
  state.refused.clear();
  if (status === 200) {
    result.textContent = data.created
      ? `Saved: commit ${short(data.commit)}${data.rebased ? " (on a newer head)" : ""}.`
      : "Already so: no commit made.";
    state.edits.clear();
    state.base = null;
    $("message").value = "";
    for (const note of document.querySelectorAll(".conflict")) note.hidden = true;
    state.keys = [];
    await loadSettings();
    $("plan").textContent = "No changes.";
  } else if (status === 409 && data.conflict) {
    const c = data.conflict;
    const note = $(`conflict-${c.key}`);
    const text = `Not saved: ${c.key} changed on master to ${c.theirs} since you started. Your edit is kept; discard it, or save again to replace that value.`;
    if (note) {
      note.textContent = text;
      note.hidden = false;
    }
    result.textContent = text;
    // Saving again means it: the edit is now made on the head that has the other value.
    state.base = c.head;
    state.head = c.head;
  } else if (data.refused) {
    for (const [key, message] of Object.entries(data.refused)) state.refused.set(key, message);
    result.textContent = data.refused[""] || "Refused: see the fields marked. Nothing was committed.";
  } else {
    result.textContent = data.error || `error ${status}`;
  }
  markRows();
}

function discard() {
  state.edits.clear();
  state.refused.clear();
  state.base = null;
  for (const note of document.querySelectorAll(".conflict")) note.hidden = true;
  renderSettings();
  $("plan").textContent = "No changes.";
  $("save-result").textContent = "";
}

// ---- history ---------------------------------------------------------------------------

function fillKeyChooser() {
  const chooser = $("history-key");
  for (const row of state.keys) chooser.append(el("option", { value: row.key, text: `changes of ${row.key}` }));
}

function commitItem(c) {
  const changes = el("ul", { class: "changes" });
  for (const ch of c.changes) {
    changes.append(el("li", {},
      el("code", { text: ch.key }), ": ",
      el("code", { text: ch.old === null ? "(absent)" : ch.old || "(empty)" }), " → ",
      el("code", { text: ch.new === null ? "(absent)" : ch.new || "(empty)" }),
      ch.apply ? el("span", { class: "badge", text: ch.apply }) : null,
    ));
  }
  if (!c.changes.length && !c.parents.length) changes.append(el("li", { text: "the first commit: every key at its default" }));
  const diff = el("div", { class: "diff", hidden: true });
  const item = el("li", { class: "commit", id: `commit-${c.id}` },
    el("header", {},
      el("code", { title: c.id, text: short(c.id) }),
      el("time", { datetime: new Date(c.time * 1000).toISOString(), text: c.date }),
      el("span", { text: c.author }),
    ),
    el("p", { class: "message", text: c.message }),
    changes,
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => toggleDiff(c.id, diff), text: "Diff" }),
      el("button", { type: "button", onclick: () => rollback(c), text: "Roll back to this" }),
    ),
    diff,
  );
  return item;
}

async function toggleDiff(id, box) {
  if (!box.hidden) {
    box.hidden = true;
    return;
  }
  const { status, data } = await api(`/api/commit/${id}`);
  box.replaceChildren();
  if (status !== 200) {
    box.textContent = data.error || `error ${status}`;
  } else if (!data.changes.length) {
    box.textContent = "No key changed in this commit.";
  } else {
    for (const ch of data.changes) {
      const text = (v) => (v === null ? "(absent)" : typeof v === "string" ? v : JSON.stringify(v, null, 2));
      box.append(
        el("p", {}, el("strong", { text: ch.key }), ch.apply ? ` (${ch.apply})` : ""),
        el("pre", { class: "old", text: `- ${text(ch.old_full)}` }),
        el("pre", { class: "new", text: `+ ${text(ch.new_full)}` }),
      );
    }
  }
  box.hidden = false;
}

async function loadHistory(more = false) {
  const params = new URLSearchParams({ limit: "50" });
  if (state.history.key) params.set("key", state.history.key);
  if (more && state.history.next) params.set("from", state.history.next);
  const { status, data } = await api(`/api/history?${params}`);
  const list = $("commits");
  if (!more) list.replaceChildren();
  if (status !== 200) {
    list.append(el("li", { text: data.error || `error ${status}` }));
    return;
  }
  for (const c of data.commits) list.append(commitItem(c));
  state.history.next = data.next;
  state.history.loaded = true;
  $("older").hidden = !data.next;
}

async function rollback(c) {
  const { status, data } = await api("/api/rollback/plan", { commit: c.id, base: state.head });
  if (status !== 200) {
    alert(data.error || `error ${status}`);
    return;
  }
  const base = state.head;
  $("confirm-text").textContent = `A new commit with the configuration of ${short(c.id)} (${c.summary}). History is kept.`;
  $("confirm-plan").textContent = data.words;
  $("confirm-message").value = "";
  const dialog = $("confirm");
  dialog.returnValue = "";
  dialog.showModal();
  dialog.addEventListener("close", async function once() {
    dialog.removeEventListener("close", once);
    if (dialog.returnValue !== "ok") return;
    const message = $("confirm-message").value;
    const done = await api("/api/rollback", { commit: c.id, base, message });
    if (done.status !== 200) alert(done.data.error || done.data.refused?.[""] || `error ${done.status}`);
  });
}

// ---- tabs and live updates --------------------------------------------------------------

function selectTab(which) {
  for (const name of ["settings", "history"]) {
    const tab = $(`tab-${name}`);
    const on = name === which;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(name).hidden = !on;
  }
  if (which === "history" && !state.history.loaded) loadHistory();
}

function live() {
  const events = new EventSource("/api/events");
  events.addEventListener("head", (e) => {
    if (e.data === state.head) return;
    loadSettings();
    if (state.history.loaded) loadHistory();
  });
  events.addEventListener("vm", (e) => showVm(JSON.parse(e.data)));
}

document.addEventListener("DOMContentLoaded", () => {
  $("tab-settings").addEventListener("click", () => selectTab("settings"));
  $("tab-history").addEventListener("click", () => selectTab("history"));
  $("settings-form").addEventListener("submit", save);
  $("discard").addEventListener("click", discard);
  $("older").addEventListener("click", () => loadHistory(true));
  $("history-key").addEventListener("change", (e) => {
    state.history.key = e.target.value;
    state.history.next = null;
    loadHistory();
  });
  // Arrow keys move between the two tabs, as a tab list does.
  $("tab-settings").parentElement.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const next = $("tab-settings").getAttribute("aria-selected") === "true" ? "history" : "settings";
      selectTab(next);
      $(`tab-${next}`).focus();
    }
  });
  loadSettings().then(live);
});
