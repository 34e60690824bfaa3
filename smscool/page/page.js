// The SMS automations page: a list with live counts, a two-step editor and the
// "why was this number not texted?" look-up, over the REST API of `smscool web`.
// Plain script, no build step; the token stays in this tab's sessionStorage.
"use strict";

const $ = (selector) => document.querySelector(selector);
const STEP_1_FIELDS = ["automation_id", "title", "event_type", "segment", "country",
                       "timezone", "window", "cooldown_enabled", "cooldown_ms"];
const STEP_2_FIELDS = ["message", "sender"];
const COUNT_COLUMNS = [["passed", "Sent"], ["suppressed_cooldown", "Suppressed by cooldown"],
                       ["held", "Held"], ["opted_out", "Opted out"], ["invalid", "Invalid"]];
const HELD = ["held_window", "deferred_cooldown"];
const INVALID = ["invalid_number", "unknown_automation", "missing_attribute",
                 "message_too_long", "future_trigger", "stale_trigger"];
const REFRESH_MS = 3000;

let editing = null;   // the automation being edited; null: a new one
let refreshTimer = null;

// A token in the address's fragment (`#token=…`, never sent to a server) is kept for
// this tab and taken out of the address bar.
(function takeToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("smscool-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
})();

class NeedToken extends Error {}

async function api(method, path, body) {
  const headers = {"Content-Type": "application/json"};
  const token = sessionStorage.getItem("smscool-token");
  if (token) headers.Authorization = "Bearer " + token;
  const answer = await fetch(path, {method, headers,
                                    body: body === undefined ? undefined : JSON.stringify(body)});
  if (answer.status === 401) throw new NeedToken();
  const data = await answer.json();
  return {status: answer.status, data};
}

function show(view) {
  for (const id of ["token-form", "list-view", "editor"]) $("#" + id).hidden = id !== view;
  clearInterval(refreshTimer);
  if (view === "list-view") refreshTimer = setInterval(() => refreshCounts(), REFRESH_MS);
}

function notice(text) { $("#notice").textContent = text; }

async function guarded(work) {
  try {
    await work();
  } catch (error) {
    if (error instanceof NeedToken) {
      show("token-form");
      $("#token").focus();
    } else {
      notice("The API did not answer: " + error.message);
    }
  }
}

// -- the list ------------------------------------------------------------------------

let automations = [];

async function showList() {
  const {data} = await api("GET", "/automations");
  automations = data;
  const body = $("#automations tbody");
  body.replaceChildren();
  for (const a of automations) body.append(row(a));
  $(".table-wrap").hidden = automations.length === 0;
  $("#empty").hidden = automations.length !== 0;
  const select = $("#why-automation");
  select.replaceChildren(...automations.map((a) => new Option(a.title, a.automation_id)));
  show("list-view");
  await refreshCounts();
}

function cell(text, label, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (label) td.dataset.label = label;
  if (className) td.className = className;
  return td;
}

function row(a) {
  const tr = document.createElement("tr");
  tr.dataset.automation = a.automation_id;
  const recipients = a.event_type ? a.event_type + (a.segment ? " · " + a.segment : "") : "named by the trigger";
  tr.append(cell(a.title, "Title"), cell(recipients + " (" + a.country + ")", "Recipients"),
            cell(a.cooldown_enabled ? duration(a.cooldown_ms) : "off", "Cooldown"),
            cell(a.enabled ? "enabled" : "disabled", "Status", a.enabled ? "" : "off"));
  for (const [key, label] of COUNT_COLUMNS) {
    const td = cell("…", label, "count");
    td.dataset.count = key;
    tr.append(td);
  }
  const actions = document.createElement("td");
  const edit = button("Edit", () => guarded(() => showEditor(a)));
  edit.setAttribute("aria-label", "Edit " + a.title);
  const toggle = button(a.enabled ? "Disable" : "Enable", () => guarded(async () => {
    await api("POST", `/automations/${encodeURIComponent(a.automation_id)}/${a.enabled ? "disable" : "enable"}`);
    notice(`${a.title}: ${a.enabled ? "disabled" : "enabled"}.`);
    await showList();
  }));
  toggle.setAttribute("aria-label", toggle.textContent + " " + a.title);
  toggle.className = "secondary small";
  edit.className = "small";
  actions.append(edit, " ", toggle);
  tr.append(actions);
  return tr;
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

function summed(counts, key) {
  const names = key === "held" ? HELD : key === "invalid" ? INVALID : [key];
  return names.reduce((sum, name) => sum + (counts[name] || 0), 0);
}

async function refreshCounts() {
  await guarded(async () => {
    for (const a of automations) {
      const {status, data} = await api("GET", `/automations/${encodeURIComponent(a.automation_id)}/counts`);
      if (status !== 200) continue;
      const tr = document.querySelector(`tr[data-automation="${CSS.escape(a.automation_id)}"]`);
      if (!tr) continue;
      for (const td of tr.querySelectorAll("td[data-count]")) {
        const key = td.dataset.count;
        td.textContent = `${summed(data.last_hour, key)} (${summed(data.last_day, key)})`;
      }
    }
  });
}

function duration(ms) {
  for (const [unit, size] of [["d", 86400000], ["h", 3600000], ["min", 60000]]) {
    if (ms % size === 0) return ms / size + " " + unit;
  }
  return ms + " ms";
}

// -- the editor ----------------------------------------------------------------------

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

function showEditor(a) {
  editing = a;
  clearErrors();
  notice("");
  $("#editor-title").textContent = a ? "Edit " + a.title : "Create automation";
  $("#id-field").hidden = Boolean(a);
  $("#automation_id").value = "";
  for (const name of ["title", "event_type", "segment", "country", "timezone", "message", "sender"]) {
    $("#" + name).value = a && a[name] != null ? a[name] : "";
  }
  if (!a) $("#country").value = "DK";
  const hours = a ? a.sending_hours : {days: DAYS.slice(0, 5), start: "09:00", end: "20:00"};
  $("#always").checked = a ? hours === null : false;
  for (const box of document.querySelectorAll("input[name=day]")) {
    box.checked = hours ? hours.days.includes(box.value) : true;
  }
  if (hours) { $("#window-start").value = hours.start; $("#window-end").value = hours.end === "24:00" ? "00:00" : hours.end; }
  $("#cooldown_enabled").checked = a ? a.cooldown_enabled : false;
  if (a && a.cooldown_ms > 0) {
    const unit = [86400000, 3600000, 60000].find((size) => a.cooldown_ms % size === 0) || 60000;
    $("#cooldown-unit").value = String(unit);
    $("#cooldown-amount").value = String(Math.round(a.cooldown_ms / unit));
  }
  syncCooldown();
  syncWindow();
  show("editor");
  step(1);
  check();
  (a ? $("#title") : $("#automation_id")).focus();
}

function step(n) {
  $("#step-1").hidden = n !== 1;
  $("#step-2").hidden = n !== 2;
  $("#step-1-mark").className = n === 1 ? "current" : "";
  $("#step-2-mark").className = n === 2 ? "current" : "";
}

// The interval can be given only while the box is ticked.
function syncCooldown() {
  const on = $("#cooldown_enabled").checked;
  $("#cooldown-amount").disabled = !on;
  $("#cooldown-unit").disabled = !on;
}

function syncWindow() {
  const always = $("#always").checked;
  for (const input of document.querySelectorAll("#window-parts input")) input.disabled = always;
}

function windowSpec() {
  if ($("#always").checked) return "always";
  const days = [...document.querySelectorAll("input[name=day]:checked")].map((b) => b.value);
  const hours = `${$("#window-start").value}-${$("#window-end").value}`;
  return (days.length === 7 ? "daily" : days.join(",")) + " " + hours;
}

function fields() {
  const text = (id) => $("#" + id).value.trim();
  const optional = (id) => text(id) || null;
  const on = $("#cooldown_enabled").checked;
  const amount = Number($("#cooldown-amount").value);
  return {
    title: text("title"), event_type: optional("event_type"), segment: optional("segment"),
    country: text("country"), timezone: optional("timezone"), window: windowSpec(),
    cooldown_enabled: on,
    cooldown_ms: on ? Math.round(amount * Number($("#cooldown-unit").value)) : (editing ? editing.cooldown_ms : 0),
    message: $("#message").value, sender: text("sender"),
  };
}

function clearErrors() {
  for (const p of document.querySelectorAll("#editor .error")) p.textContent = "";
  for (const input of document.querySelectorAll("#editor [aria-invalid]")) input.removeAttribute("aria-invalid");
}

const FIELD_INPUT = {window: "window-start", cooldown_ms: "cooldown-amount", cooldown_enabled: "cooldown_enabled"};

// Each error beside its field; the first one's step is shown and its field focused.
function showErrors(errors) {
  clearErrors();
  let first = null;
  for (const {field, error} of errors) {
    const place = document.getElementById(field + "-error") || $("#form-error");
    place.textContent = place.id === "form-error" ? `${field}: ${error}` : error;
    const input = document.getElementById(FIELD_INPUT[field] || field);
    if (input && place.id !== "form-error") input.setAttribute("aria-invalid", "true");
    if (!first) first = {field, input};
  }
  if (first) {
    step(STEP_1_FIELDS.includes(first.field) ? 1 : 2);
    if (first.input) first.input.focus();
  }
}

// What the server says of the fields so far: the time zone, the message's facts.
async function check(fieldsGiven) {
  const {data} = await api("POST", "/check", fieldsGiven || fields());
  $("#zone-shown").textContent = data.zone || "—";
  const length = data.message_length;
  const attributes = data.attributes.length ? data.attributes.map((n) => `{${n}}`).join(", ") : "none";
  $("#message-facts").textContent =
    `Attributes: ${attributes} · ${length.encoding}, ${length.units} ${length.encoding === "GSM-7" ? "characters" : "UTF-16 units"}, ` +
    `${length.parts} SMS ${length.parts === 1 ? "part" : "parts"}`;
  return data.errors;
}

async function next() {
  const all = fields();
  const given = Object.fromEntries(Object.entries(all).filter(([name]) => STEP_1_FIELDS.includes(name)));
  const errors = await check({...given, message: all.message});
  if (!editing && !$("#automation_id").value.trim()) {
    errors.unshift({field: "automation_id", error: "an automation needs an id"});
  }
  if (errors.length) { showErrors(errors); return; }
  clearErrors();
  step(2);
  $("#message").focus();
}

async function save(event) {
  event.preventDefault();
  const body = fields();
  const {status, data} = editing
    ? await api("PATCH", `/automations/${encodeURIComponent(editing.automation_id)}`, body)
    : await api("POST", "/automations", {automation_id: $("#automation_id").value.trim(), ...body});
  if (status >= 400) {
    showErrors(data.errors || [{field: data.field || "form", error: data.error}]);
    return;
  }
  await showList();
  notice(`Saved: ${data.title}.`);
  $("#create").focus();
}

async function why(event) {
  event.preventDefault();
  const id = $("#why-automation").value;
  const number = $("#why-number").value.trim();
  const {status, data} = await api("GET", `/automations/${encodeURIComponent(id)}/why?number=${encodeURIComponent(number)}`);
  const answer = $("#why-answer");
  $("#why-number-error").textContent = status === 400 ? data.error : "";
  answer.replaceChildren();
  if (status !== 200) return;
  const heading = document.createElement("p");
  heading.textContent = data.decisions.length
    ? `${data.e164} (${data.tag}), newest first:`
    : `No decisions for ${data.e164} (${data.tag}) in the last day.`;
  const list = document.createElement("ol");
  for (const d of data.decisions) {
    const item = document.createElement("li");
    // The cause in words with its time as a clock reads it; else the decision's sentence.
    const why = d.cause
      ? `it got an SMS from ${d.cause.origin} at ${new Date(d.cause.at_ms).toLocaleString()} (ref ${d.cause.ref})`
      : d.detail;
    item.textContent = `${new Date(d.decided_at_ms).toLocaleString()}: ${d.outcome.replace(/_/g, " ")} — ${why}`;
    list.append(item);
  }
  answer.append(heading, list);
}

// -- wiring --------------------------------------------------------------------------

$("#create").addEventListener("click", () => guarded(() => showEditor(null)));
$("#home").addEventListener("click", (event) => { event.preventDefault(); guarded(showList); });
$("#cooldown_enabled").addEventListener("change", syncCooldown);
$("#always").addEventListener("change", () => { syncWindow(); guarded(() => check()); });
$("#country").addEventListener("change", () => guarded(() => check()));
$("#timezone").addEventListener("change", () => guarded(() => check()));
$("#message").addEventListener("input", () => guarded(() => check()));
$("#next").addEventListener("click", () => guarded(next));
$("#back").addEventListener("click", () => { step(1); $("#title").focus(); });
$("#cancel-1").addEventListener("click", () => guarded(showList));
// Enter in a field of the first step goes on to the next; in the second, it saves.
$("#editor").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => ($("#step-2").hidden ? next() : save(event)));
});
$("#why-form").addEventListener("submit", (event) => guarded(() => why(event)));
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("smscool-token", $("#token").value);
  guarded(showList);
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("#editor").hidden) guarded(showList);
});
guarded(showList);
