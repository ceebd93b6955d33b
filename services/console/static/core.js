// The console's shared pieces: its one state, API calls, small DOM helpers.
// Everything on screen is rendered from `state`; signing out replaces it with a fresh one.
"use strict";

export const $ = (id) => document.getElementById(id);

// Sent on every call: the API refuses a cookie-signed command without it (CSRF, services/api/session.py).
const CSRF = { "X-Relaydesk-CSRF": "1" };

export const PAGE = 100; // rows a list shows at first, and adds with "Show more"
export const MOST = 1000; // the API's largest page

function freshPage() {
  return { shown: PAGE, cursor: null, total: 0, next: null };
}

export function freshState() {
  return {
    epoch: 0, // bumped at every sign-in and sign-out: answers of an earlier session are dropped
    me: null,
    role: null, // "agent" | "supervisor" | "operator"
    agentId: null,
    page: "work", // "work" | "supervisor"
    work: { offers: [], assigned: [] },
    seenOffers: new Set(),
    alerted: null, // the newest offer, for the banner
    warned: new Set(), // offers whose last seconds were announced (workspace.js)
    heard: null, // {cid, seqs}: the open conversation's entries already shown, so only new ones are announced
    selected: null,
    lettingGo: null, // the conversation she just declined, resolved or moved: its going is not news
    wanted: null,
    wantedNotice: null, // said once the wanted conversation opens
    timeline: [],
    customer: null,
    canned: [],
    templates: [], // WhatsApp templates (GET /v1/templates)
    files: [], // the reply's uploaded files: [{id, name, size, content_type}]
    platforms: {}, // conversation id -> platform, for conversations started in this session
    window: null, // the selected conversation's {whatsapp, lastAt} (compose.js)
    shownMode: null,
    newKey: null, // the Idempotency-Key of the new conversation being written (outbound.js)
    sending: {}, // "reply" | "notes" -> {cid, body, key}: kept while the outcome is unknown (workspace.js)
    roster: null, // agents for transfer (null: could not be loaded)
    skills: null,
    // Agents and open conversations come a page at a time (GET ...?limit=&cursor=): `pages` holds,
    // for each, how many are shown, from which cursor (null: the first), the total and the next cursor.
    supervisor: { queues: null, agents: [], conversations: [], canned: [], pages: { agents: freshPage(), conversations: freshPage() } },
    stream: null,
    timers: {},
    intervals: [],
    audio: null,
  };
}

export const state = freshState();

// Set by console.js: what to do when the API says the session is no longer valid.
export const hooks = { unauthorized: () => {} };

export class Stale extends Error {}

// A 401 while signed in: the session expired (12 h) or was ended elsewhere. The page goes to
// the sign-in form (keeping her unsent text for her own next sign-in, console.js), and the
// call is Stale: its caller must not write the API's "missing bearer token" into the fresh page.
function sessionEnded(r) {
  if (r.status !== 401 || !state.me) return;
  hooks.unauthorized("Your session ended: sign in again.");
  throw new Stale("the session ended");
}

export async function api(method, path, body, extraHeaders) {
  const epoch = state.epoch;
  const headers = { ...CSRF, ...(extraHeaders || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch (_) { /* an empty body */ }
  // Signed out (or in as someone else) while this was on its way: its answer is not shown.
  if (epoch !== state.epoch) throw new Stale("signed out meanwhile");
  sessionEnded(r);
  if (!r.ok) {
    const err = new Error(data.error || "HTTP " + r.status);
    err.status = r.status;
    err.data = data;
    throw err;
  }
  return data;
}

// A file for a reply: its bytes as the body (POST /v1/uploads), answered with its upload id.
export async function upload(file) {
  const epoch = state.epoch;
  const r = await fetch("/v1/uploads?name=" + encodeURIComponent(file.name), {
    method: "POST",
    headers: { ...CSRF, "Content-Type": file.type || "application/octet-stream" },
    credentials: "same-origin",
    body: file,
  });
  let data = {};
  try { data = await r.json(); } catch (_) { /* an empty body */ }
  if (epoch !== state.epoch) throw new Stale("signed out meanwhile");
  sessionEnded(r);
  if (!r.ok) {
    const err = new Error(data.error || "HTTP " + r.status);
    err.status = r.status;
    throw err;
  }
  return data;
}

// A key per command the person means once: a retry of the same form sends the same key.
export function idempotencyKey() {
  return window.crypto && crypto.randomUUID ? crypto.randomUUID() : Date.now() + "-" + Math.random().toString(16).slice(2);
}

export function say(text, isError, id = "message") {
  const node = $(id);
  node.textContent = text;
  node.className = isError ? "error" : "";
}

// Runs the last fn asked for `name` once, `ms` after the first call since it last ran (a call
// asking for sooner moves it sooner), not `ms` after the last call. Found by the flood audit:
// the timer began again at every call, so while one customer wrote faster than every 100 ms the
// agent's work list (her new offers too) and every supervisor's board never reloaded.
const pending = {}; // name -> {due, fn}: what runs when state.timers[name] fires

export function debounce(name, fn, ms) {
  const due = Date.now() + ms;
  const held = pending[name];
  if (held && state.timers[name] !== undefined && held.due <= due) { held.fn = fn; return; }
  clearTimeout(state.timers[name]);
  const entry = { due, fn };
  pending[name] = entry;
  state.timers[name] = setTimeout(() => {
    if (pending[name] === entry) { delete pending[name]; delete state.timers[name]; }
    entry.fn();
  }, ms);
}

export function every(fn, ms) {
  state.intervals.push(setInterval(fn, ms));
}

export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function clear(...ids) {
  for (const id of ids) $(id).replaceChildren();
}

// A short badge per channel (text, so no icon font or image is needed).
const CHANNELS = { email: "✉", sms: "SMS", whatsapp: "WA", chat: "chat", webchat: "chat", social: "soc", voice: "tel" };

export function channelIcon(channel) {
  const name = channel || "?";
  return el("span", { className: "ch ch-" + name.replace(/[^a-z0-9]/gi, ""), title: name, textContent: CHANNELS[name] || name });
}

export function secondsUntil(iso) {
  return iso ? Math.max(0, Math.round((Date.parse(iso) - Date.now()) / 1000)) : null;
}

export function since(iso) {
  if (!iso) return "";
  return duration((Date.now() - Date.parse(iso)) / 1000);
}

// "42 s", "12 min", "3 h": a wait read at a glance (found by a shift audit: "10800 s").
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  return s < 90 ? s + " s" : s < 5400 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
}

export function listOf(data, key) {
  // Lists come bare or wrapped ({"agents": [...]}); a missing one is empty.
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data[key])) return data[key];
  return [];
}
