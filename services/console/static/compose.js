// The reply box's extras: files (POST /v1/uploads, then the reply names them), WhatsApp
// templates with their parameter fields, and WhatsApp's 24-hour window, which decides what
// the box offers. The window is computed here from the customer's timeline (the `at` of
// their last message from this conversation's address): the API adds nothing for it.
"use strict";

import { $, api, el, listOf, Stale, state, upload } from "./core.js";

const WINDOW_MS = 24 * 3600 * 1000; // WhatsApp: free text only within 24 h of the customer's last message

// --- templates -----------------------------------------------------------------------

export async function loadTemplates() {
  try {
    state.templates = listOf(await api("GET", "/v1/templates"), "templates");
  } catch (err) {
    if (err instanceof Stale) return;
    state.templates = [];
  }
  for (const id of ["reply-template", "new-template"]) {
    const select = $(id);
    const first = select.options[0];
    select.replaceChildren(first, ...state.templates.map((t) => el("option", { value: t.name, textContent: t.name + " (" + t.language + ")" })));
  }
}

export function templateNamed(name) {
  return state.templates.find((t) => t.name === name) || null;
}

// One field per parameter, named as the template names them ({{1}} is the first).
export function showParams(container, name, onInput) {
  const template = templateNamed(name);
  container.replaceChildren(...(template ? template.parameters : []).map((p) => {
    const input = el("input", { className: "param", placeholder: p, autocomplete: "off" });
    input.dataset.param = p;
    if (onInput) input.addEventListener("input", onInput);
    return el("label", {}, p + " ", input);
  }));
}

export function paramsOf(container) {
  const out = {};
  for (const input of container.querySelectorAll("input[data-param]")) out[input.dataset.param] = input.value;
  return out;
}

// What the customer will read: the template's body with {{1}}… (or {{name}}) filled in.
export function preview(name, params) {
  const template = templateNamed(name);
  if (!template) return "";
  const values = template.parameters.map((p) => params[p] || "");
  const byKey = {};
  template.parameters.forEach((p, i) => { byKey[String(i + 1)] = values[i]; byKey[p] = values[i]; });
  if (!template.body) return "[template " + template.name + "] " + values.join(", ");
  return template.body.replace(/\{\{\s*([A-Za-z0-9_]+)\s*\}\}/g, (m, key) => (byKey[key] ? byKey[key] : m));
}

// --- WhatsApp's window -----------------------------------------------------------------

// Addresses as connectors spell them: "whatsapp:+1555…" (Twilio), "1555…" (Cloud API).
function addressKey(contact) {
  const c = (contact || "").trim().toLowerCase();
  if (c.startsWith("whatsapp:")) return "wa:" + c.replace(/\D/g, "");
  return /^\+?[\d\s()-]+$/.test(c) ? c.replace(/\D/g, "") : c;
}

// {whatsapp, lastAt}: whether the conversation is on WhatsApp, and when the customer last wrote
// from its address (any of their conversations on the same channel; null: never).
export function windowFacts(conv, entries) {
  const contacts = {};
  for (const e of entries) if (e.kind === "opened" && e.conversation_id) contacts[e.conversation_id] = (e.detail || {}).contact || "";
  const opened = entries.find((e) => e.kind === "opened" && e.conversation_id === conv.id);
  const mine = addressKey(contacts[conv.id]);
  let whatsapp = state.platforms[conv.id] === "whatsapp" || (opened && (opened.detail || {}).platform === "whatsapp") ||
    (contacts[conv.id] || "").toLowerCase().startsWith("whatsapp:");
  let lastAt = null;
  let lastPlatform = null;
  for (const e of entries) {
    if (e.kind !== "message_in") continue;
    const same = e.conversation_id === conv.id || (mine && e.channel === conv.channel && addressKey(contacts[e.conversation_id]) === mine);
    if (!same) continue;
    const at = Date.parse(e.at);
    if (lastAt === null || at >= lastAt) { lastAt = at; lastPlatform = (e.detail || {}).platform || lastPlatform; }
  }
  if (lastPlatform) whatsapp = lastPlatform === "whatsapp";
  return { whatsapp: !!whatsapp, lastAt };
}

export function setWindow(conv, entries) {
  state.window = conv ? windowFacts(conv, entries) : null;
  state.shownMode = null;
  renderMode();
}

// "text" (not WhatsApp), "both" (inside the window) or "template" (outside it).
export function replyMode() {
  const w = state.window;
  if (!w || !w.whatsapp) return "text";
  return w.lastAt !== null && Date.now() - w.lastAt <= WINDOW_MS ? "both" : "template";
}

function span(ms) {
  const h = ms / 3600000;
  return h < 1 ? Math.max(1, Math.round(ms / 60000)) + " min" : h < 48 ? Math.round(h) + " h" : (h / 24).toFixed(1) + " days";
}

// Called on every timeline load and each second (the window closes while the page is open).
export function renderMode() {
  const mode = replyMode();
  const w = state.window;
  if (mode === state.shownMode && mode !== "both") return;
  state.shownMode = mode;
  const note = $("window-note");
  note.hidden = mode === "text";
  note.className = mode === "template" ? "window closed" : "window open";
  if (mode === "both") {
    note.textContent = "WhatsApp: the customer wrote " + span(Date.now() - w.lastAt) + " ago. Free text or files for " +
      span(w.lastAt + WINDOW_MS - Date.now()) + " more; a template any time.";
  } else if (mode === "template") {
    const since = w.lastAt === null ? "has not written from this number" : "last wrote " + span(Date.now() - w.lastAt) + " ago";
    note.textContent = "Outside WhatsApp's 24-hour window (the customer " + since + "): only a template can be sent.";
  } else note.textContent = "";
  $("reply-templates").hidden = mode === "text";
  $("reply-attach").hidden = mode === "template";
  document.querySelector("#reply-form .canned").hidden = mode === "template";
  $("send").textContent = mode === "template" ? "Send template" : "Send to customer";
  $("reply-text").placeholder = mode === "template" ? "An internal note for the team (the customer can get only a template now)"
    : "Write to the customer, or an internal note for the team";
  if (mode === "text") resetTemplate();
}

// --- the reply's body ----------------------------------------------------------------

// What "Send" posts to /reply; null when there is nothing to send. Throws with the reason
// when the box holds something that cannot go as it is.
export function replyBody(text) {
  const mode = replyMode();
  const name = mode === "text" ? "" : $("reply-template").value;
  if (mode === "template" && !name) throw new Error("Outside WhatsApp's 24-hour window: pick a template to send.");
  if (name) {
    if (mode === "both" && text.trim()) throw new Error("Send the text or the template, not both: clear one of them.");
    if (state.files.length) throw new Error("A template goes without files: remove them, or send them as a reply of their own.");
    return { template: name, parameters: paramsOf($("reply-params")) };
  }
  if (!text.trim() && !state.files.length) return null;
  const body = { text };
  if (state.files.length) body.attachments = state.files.map((f) => f.id);
  return body;
}

// After a reply went, or when another conversation opens.
export function reset() {
  state.files = [];
  renderFiles();
  resetTemplate();
  $("reply-file").value = "";
}

function resetTemplate() {
  $("reply-template").value = "";
  $("reply-params").replaceChildren();
  $("template-preview").textContent = "";
}

// --- files -----------------------------------------------------------------------------

function renderFiles() {
  $("reply-files").replaceChildren(...state.files.map((f) => {
    const remove = el("button", { type: "button", className: "remove", textContent: "remove", title: "remove " + f.name });
    remove.setAttribute("aria-label", "remove " + f.name); // each file's button says which file it removes
    remove.addEventListener("click", () => { state.files = state.files.filter((x) => x.id !== f.id); renderFiles(); });
    return el("li", { className: "file" }, el("span", { textContent: f.name + " (" + size(f.size) + ")" }), " ", remove);
  }));
}

function size(bytes) {
  return bytes < 1024 ? bytes + " B" : bytes < 1048576 ? Math.round(bytes / 1024) + " KB" : (bytes / 1048576).toFixed(1) + " MB";
}

async function attach(files, say) {
  const cid = state.selected;
  for (const file of files) {
    try {
      say("Uploading " + file.name + "…");
      const stored = await upload(file);
      if (state.selected !== cid) return; // another conversation opened meanwhile: not for it
      state.files.push({ id: stored.id, name: stored.name, size: stored.size, content_type: stored.content_type });
      renderFiles();
      say("Attached " + stored.name + ".");
    } catch (err) {
      if (err instanceof Stale) return;
      say(file.name + ": " + err.message, true);
    }
  }
}

export function wire(say) {
  $("reply-file").addEventListener("change", async () => {
    const files = Array.from($("reply-file").files || []);
    await attach(files, say);
    $("reply-file").value = "";
  });
  const showPreview = () => { $("template-preview").textContent = preview($("reply-template").value, paramsOf($("reply-params"))); };
  $("reply-template").addEventListener("change", () => {
    say("");
    showParams($("reply-params"), $("reply-template").value, showPreview);
    showPreview();
  });
}

export function clear() {
  state.window = null;
  state.shownMode = null;
  reset();
  for (const id of ["reply-template", "new-template"]) $(id).replaceChildren($(id).options[0]);
  $("window-note").hidden = true;
  $("window-note").textContent = "";
  $("reply-templates").hidden = true;
}
