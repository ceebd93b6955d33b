// Relaydesk console: plain JS modules, no build step. Signing in exchanges the token for an
// HttpOnly session cookie (POST /v1/session); the page never keeps the token itself.
"use strict";

import { $, api, debounce, every, freshState, hooks, say, Stale, state } from "./core.js";
import * as workspace from "./workspace.js";
import * as supervisor from "./supervisor.js";
import * as outbound from "./outbound.js";
import * as drafts from "./drafts.js";

// --- signing in and out -------------------------------------------------------------

async function signIn(token) {
  $("login-error").textContent = "";
  const r = await fetch("/v1/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Relaydesk-CSRF": "1" },
    body: JSON.stringify({ token }),
  });
  $("token").value = "";
  if (!r.ok) {
    $("login-error").textContent = r.status === 401 ? "That token is not valid." : "Could not sign in (HTTP " + r.status + ").";
    return;
  }
  workspace.unlockAlerts(); // a click: the one moment a page may start audio and ask to notify
  announce("in");
  await enter();
}

// Who the session is, then the pages that role sees. Fails quietly to the login form.
async function enter() {
  state.epoch += 1;
  let me;
  try {
    me = await api("GET", "/v1/agent/me");
  } catch (err) {
    if (!(err instanceof Stale)) showLogin(err.status === 401 ? "" : err.message);
    return;
  }
  state.me = me;
  state.role = me.role || (me.operator ? "operator" : "agent");
  state.agentId = me.agent ? me.agent.id : null;
  $("login").hidden = true;
  $("logout").hidden = false;
  $("who").textContent = state.agentId ? (me.agent.name || state.agentId) + (state.role === "supervisor" ? " · supervisor" : "") : (me.actor || "operator"); // a named operator token says whose (operator:maria)
  const supervises = state.role === "operator" || state.role === "supervisor";
  $("nav").hidden = !(supervises && state.agentId);
  const draft = unsent;
  unsent = null;
  drafts.dropOthers(state.agentId); // someone else's unsent replies are never given to whoever signs in here
  if (state.agentId) {
    $("status").hidden = false;
    workspace.setWork(me, true);
    if (draft && draft.agentId === state.agentId) workspace.giveBack(draft.conversation, draft.text);
    workspace.loadLists();
    every(workspace.tick, 1000);
    every(workspace.refreshCanned, 30000);
  }
  if (supervises) {
    supervisor.refresh();
    every(supervisor.refresh, 3000);
  }
  readHash();
  follow(state.epoch);
}

function showLogin(reason) {
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
  $("token").focus();
}

// What she was writing when her session ended (expired, not logged out): given back only to
// her own next sign-in in this page, kept in memory only (never in the DOM while signed out,
// never for someone else at the desk). Found by a shift audit: the draft went with the session.
let unsent = null;

// Everything the last person saw goes: DOM, memory, the stream, the URL's conversation, the cookie.
// `keepDraft`: the session ended under her (a 401), so her unsent text waits for her sign-in.
async function signOut(reason, keepDraft = false) {
  leave(reason, keepDraft);
  announce(keepDraft ? "ended" : "out");
  try {
    const r = await fetch("/v1/session", { method: "DELETE", credentials: "same-origin", headers: { "X-Relaydesk-CSRF": "1" } });
    if (!r.ok) throw new Error("HTTP " + r.status);
  } catch (err) {
    $("login-error").textContent = "The session could not be ended on the server (" + err.message + "): log out again before you leave.";
  }
}

// The page emptied to the sign-in form (this tab's part of signing out).
function leave(reason, keepDraft) {
  // Signed out here already (a draft kept from then stays kept, unless this is a Log out).
  if (!keepDraft) { unsent = null; drafts.dropOthers(null); }
  else if (state.agentId && state.selected) unsent = { agentId: state.agentId, conversation: state.selected, text: $("reply-text").value };
  else if (state.me) unsent = null;
  if (state.stream) state.stream.abort();
  for (const id of state.intervals) clearInterval(id);
  for (const id of Object.values(state.timers)) clearTimeout(id);
  Object.assign(state, freshState(), { epoch: state.epoch + 1 });
  workspace.clear();
  outbound.clear();
  supervisor.clear();
  $("who").textContent = "";
  setLive(false);
  for (const id of ["status", "logout", "nav", "agent-view", "supervisor-view"]) $(id).hidden = true;
  history.replaceState(null, "", location.pathname);
  showLogin(reason);
}

// Every tab of the browser shares the one session cookie: a sign-in or sign-out in one tab is
// followed by the others (announced through localStorage; no token in it). Found by a shift
// audit: a tab kept showing Ava's work while its commands went out as whoever signed in in
// the other tab, and a tab left open after Log out elsewhere kept showing the work.
const SESSION_KEY = "relaydesk.session";

function announce(kind) {
  try { localStorage.setItem(SESSION_KEY, kind + ":" + Date.now() + ":" + Math.random()); } catch (_) { /* storage off */ }
}

window.addEventListener("storage", (e) => {
  if (e.key !== SESSION_KEY || !e.newValue) return;
  const kind = e.newValue.split(":")[0];
  if (kind !== "in" && !state.me) return; // signed out here already
  // Her own sign-in elsewhere (or a session ended): what she was writing waits, as after a 401.
  leave(kind === "in" ? "" : "Signed out in another tab.", kind !== "out");
  if (kind === "in") enter();
});

hooks.unauthorized = (reason) => signOut(reason, true);

// --- the live stream (fetch: the cookie goes along; frames parsed by hand) -----------

// The dot says in words too whether the stream is up (its colour alone told nobody who cannot see it).
function setLive(on) {
  const words = on ? "live stream: connected" : "live stream: not connected";
  $("live").classList.toggle("on", on);
  $("live").title = words;
  $("live").setAttribute("aria-label", words);
}

// The API writes at least every 15 s (a ping): a stream silent for 40 s is dead without having
// said so (a laptop asleep and woken, a network that changed under it) and is opened again.
const SILENT_MS = 40000;
let resync = false; // a reconnected stream's work frame: what the gap held is read again

async function follow(epoch) {
  let opened = 0;
  while (epoch === state.epoch) {
    const ctrl = new AbortController();
    state.stream = ctrl;
    let heard = Date.now();
    const watch = setInterval(() => { if (Date.now() - heard > SILENT_MS) restartStream(ctrl); }, 5000);
    try {
      const r = await fetch("/v1/agent/stream", { credentials: "same-origin", headers: { Accept: "text/event-stream" }, signal: ctrl.signal });
      if (epoch !== state.epoch) return;
      if (r.status === 401) { signOut("Your session ended: sign in again.", true); return; }
      if (r.ok) {
        setLive(true);
        opened += 1;
        // Events of the gap are not replayed (no Last-Event-ID): the first frame, `work`, is the
        // lists as they are now, and the open conversation's timeline is loaded again with it.
        resync = opened > 1;
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done || epoch !== state.epoch) break;
          heard = Date.now();
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            onFrame(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
      }
    } catch (err) {
      // Aborted by signing out (the epoch moved on: below) or restarted as dead: open it again.
      if (err.name === "AbortError" && !ctrl.restarted) return;
    } finally {
      clearInterval(watch);
    }
    if (epoch !== state.epoch) return;
    setLive(false);
    await new Promise((done) => setTimeout(done, ctrl.restarted ? 0 : 1000));
  }
}

function restartStream(ctrl) {
  if (!ctrl || ctrl.signal.aborted) return;
  ctrl.restarted = true;
  ctrl.abort();
}

// Back online (the requests made meanwhile failed): a new stream, and with it fresh lists and timeline.
window.addEventListener("online", () => { if (state.me) restartStream(state.stream); });

function onFrame(chunk) {
  let kind = "message";
  let data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event: ")) kind = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const body = JSON.parse(data);
  if (kind === "revoked") { signOut("Your token was revoked."); return; }
  if (state.role !== "agent") debounce("supervisor", supervisor.refresh, 200);
  if (!state.agentId) return;
  if (kind === "work") {
    workspace.setWork(body);
    if (resync) { resync = false; workspace.reloadOpen(); }
    return;
  }
  workspace.onEvent(kind, body);
}

// --- pages and links ----------------------------------------------------------------

function showPage() {
  const supervises = state.role === "operator" || state.role === "supervisor";
  if (!state.me) return;
  if (!state.agentId) state.page = "supervisor";
  if (!supervises) state.page = "work";
  $("agent-view").hidden = state.page !== "work";
  $("supervisor-view").hidden = state.page !== "supervisor";
  $("nav-work").classList.toggle("current", state.page === "work");
  $("nav-supervisor").classList.toggle("current", state.page === "supervisor");
  for (const [id, page] of [["nav-work", "work"], ["nav-supervisor", "supervisor"]]) {
    if (state.page === page) $(id).setAttribute("aria-current", "page");
    else $(id).removeAttribute("aria-current");
  }
}

// #conversation=<id> (the link in Slack, Teams and email; #accept=<id> too), #supervisor, #work.
function readHash() {
  const hash = location.hash;
  const link = /^#(?:accept|conversation)=([A-Za-z0-9_-]+)$/.exec(hash);
  if (hash === "#supervisor") state.page = "supervisor";
  else if (hash === "#work" || link) state.page = "work";
  showPage();
  if (link && state.agentId) workspace.open(link[1]);
}

// --- wiring -------------------------------------------------------------------------

$("login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
$("logout").addEventListener("click", () => signOut(""));
$("status").addEventListener("change", async () => {
  try { await api("POST", "/v1/agent/status", { status: $("status").value }); say("Status: " + $("status").value); }
  catch (err) { if (!(err instanceof Stale)) say(err.message, true); }
});
window.addEventListener("hashchange", readHash);
workspace.wire();
outbound.wire();
supervisor.wire();
enter(); // a session cookie from earlier signs this browser in without a token
