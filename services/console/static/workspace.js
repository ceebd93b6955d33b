// The agent's workspace: offers and assignments, the conversation (messages, notes, system
// facts collapsed), the customer panel, replies, notes, canned replies, transfer and escalate.
"use strict";

import { $, api, channelIcon, clear as clearIds, debounce, el, idempotencyKey, listOf, say, secondsUntil, since, Stale, state } from "./core.js";
import * as compose from "./compose.js";
import * as drafts from "./drafts.js";

// Timeline kinds that are words between people; anything else is a system fact.
const SPOKEN = new Set(["message_in", "message_out", "message", "reply", "note", "note_added"]);
const isNote = (e) => e.kind === "note" || e.kind === "note_added";

// --- work lists ---------------------------------------------------------------------

export function setWork(work, first = false) {
  const wasOffer = !!state.selected && state.work.offers.some((c) => c.id === state.selected);
  const before = state.work.offers;
  state.work = { offers: work.offers || [], assigned: work.assigned || [] };
  if (!first) offersEnded(before);
  if (work.agent && work.agent.status) $("status").value = work.agent.status;
  // An offer is its conversation and its deadline: the same conversation offered to her again
  // (after she declined it, or it ran out) is a new offer, announced as one.
  const offerKey = (c) => c.id + "@" + (c.offer_expires_at || "");
  const fresh = state.work.offers.filter((c) => !state.seenOffers.has(offerKey(c)));
  for (const c of state.work.offers) state.seenOffers.add(offerKey(c));
  if (fresh.length && !first) alertOffer(fresh[0]);
  if (state.wanted && find(state.wanted)) {
    const cid = state.wanted;
    const notice = state.wantedNotice;
    state.wanted = null;
    state.wantedNotice = null;
    select(cid);
    if (notice) say(notice);
    return;
  }
  if (state.selected && !find(state.selected)) {
    // Transferred, resolved or taken back by someone else: say so, and show what she had
    // written and not sent (the box goes with the conversation). Found by an audit: it
    // vanished without a word, the draft with it.
    const gone = state.selected;
    const draft = $("reply-text").value.trim();
    state.selected = null; state.customer = null; state.timeline = [];
    if (gone === state.lettingGo) state.lettingGo = null; // her own decline, resolve or transfer
    else if (wasOffer) {
      // An offer she had open and did not answer: it expired (or the router took it back), it
      // was never hers. (It was announced as "no longer yours (transferred, resolved…)".)
      say(`The offer of conversation ${gone} has ended: it expired or was taken back before you accepted it.`, true);
    } else {
      const kept = draft ? ` Your unsent text, to copy: «${draft}»` : "";
      say(`Conversation ${gone} is no longer yours (transferred, resolved or taken back).${kept}`, true);
    }
  }
  renderWork();
  renderConversation();
}

export async function refreshWork() {
  try { setWork(await api("GET", "/v1/agent/work")); } catch (err) { if (!(err instanceof Stale)) say(err.message, true); }
}

export function onEvent(kind, body) {
  if (kind === "agent_status_changed" && body.status) $("status").value = body.status;
  debounce("work", refreshWork, 100);
  if (body.conversation_id && body.conversation_id === state.selected) {
    // The customer's message is on the live stream before the projector has put it on the
    // timeline: the page reads again until it is there (a load in between found nothing new,
    // and nothing else came to read it later: found by a loaded test run).
    if (kind === "message_received" && Number.isInteger(body.seq)) {
      const before = awaited && awaited.cid === body.conversation_id ? awaited.seq : 0;
      awaited = { cid: body.conversation_id, seq: Math.max(body.seq, before) };
    }
    debounce("timeline", loadTimeline, 400);
  }
}

// The newest customer message the live stream announced for the open conversation ({cid, seq}),
// until the timeline holds it.
let awaited = null;
const AWAIT_TRIES = 20; // 0.5 s apart: the projector 10 s behind

function find(cid) {
  return state.work.offers.find((c) => c.id === cid) || state.work.assigned.find((c) => c.id === cid) || null;
}

function customerName(c) {
  const who = c.customer || {};
  return who.name || who.address || c.customer_id;
}

function renderWork() {
  renderList($("offers"), state.work.offers, true);
  renderList($("assigned"), state.work.assigned, false);
  renderAlert();
}

function renderList(list, items, offers) {
  // The lists are drawn anew at every news: the item she had focused by keyboard keeps the focus.
  const focused = list.contains(document.activeElement) ? document.activeElement.closest("li") : null;
  const keep = focused ? focused.dataset.id : null;
  list.replaceChildren(...items.map((c) => {
    const who = c.customer || {};
    const tier = who.tier || c.customer_tier || "standard";
    const flags = who.flags || c.customer_flags || [];
    const req = c.requirements || {};
    const facts = ["tier " + tier, req.language || "", ...flags].filter(Boolean).join(" · ");
    // A button, so Tab reaches it and Enter or Space opens it (a bare <li> took only a mouse click: WCAG 2.1.1).
    const pick = el("button", { type: "button", className: "pick" },
      el("span", { className: "line" }, channelIcon(c.channel), el("b", { className: "name", dir: "auto", textContent: customerName(c) }),
        offers ? el("span", { className: "countdown" }) : null),
      who.name && who.address ? el("small", { className: "address", dir: "auto", textContent: who.address }) : null,
      c.subject ? el("small", { className: "subject", dir: "auto", textContent: c.subject }) : null,
      c.preview ? el("small", { className: "preview", dir: "auto", textContent: c.preview }) : null,
      el("small", { className: "facts", textContent: facts }));
    if (c.id === state.selected) pick.setAttribute("aria-current", "true");
    const item = el("li", { className: (offers ? "offer" : "assigned") + (c.id === state.selected ? " selected" : "") }, pick);
    item.dataset.id = c.id;
    if (offers && c.offer_expires_at) item.dataset.expires = c.offer_expires_at;
    item.addEventListener("click", () => select(c.id));
    return item;
  }));
  if (keep) {
    const again = [...list.children].find((li) => li.dataset.id === keep);
    if (again) again.querySelector("button.pick").focus();
  }
  tick();
}

// The banner of the newest offer, until it is opened, accepted, declined or expires.
function renderAlert() {
  const offer = state.alerted && state.work.offers.find((c) => c.id === state.alerted.id);
  const left = offer ? secondsUntil(offer.offer_expires_at) : null;
  const showing = !!offer && offer.id !== state.selected && left !== 0;
  $("alert").hidden = !showing;
  $("alert").textContent = showing ? "New offer on " + offer.channel + (left ? ": " + left + " s to accept" : "") : "";
}

// Each second: the offers' countdowns (the router takes an offer back when it expires).
export function tick() {
  renderAlert();
  if (state.selected) compose.renderMode();
  for (const node of document.querySelectorAll("#offers li[data-expires]")) {
    const left = secondsUntil(node.dataset.expires);
    const label = node.querySelector(".countdown");
    label.textContent = left > 0 ? left + " s" : "expired";
    label.classList.toggle("urgent", left <= 10);
    // The time limit is said once before it runs out (WCAG 2.2.1), not each second.
    const offer = state.work.offers.find((c) => c.id === node.dataset.id);
    if (offer && left > 0 && left <= WARN_SECONDS && !state.warned.has(offer.id)) {
      state.warned.add(offer.id);
      announceOffer("Offer from " + customerName(offer) + " on " + offer.channel + ": " + left + " seconds left to accept.");
    }
  }
  const conv = find(state.selected);
  const left = conv && conv.status === "offered" ? secondsUntil(conv.offer_expires_at) : null;
  $("countdown").textContent = left === null ? "" : left > 0 ? left + " s left to accept" : "offer expired";
}

// --- a new offer: banner, sound, browser notification ------------------------------------

export function unlockAlerts() {
  try {
    if (!state.audio && window.AudioContext) state.audio = new AudioContext();
    if (window.Notification && Notification.permission === "default") Notification.requestPermission();
  } catch (err) {
    console.warn("alerts unavailable", err);
  }
}

// What a screen reader says about offers: once per news, assertive (an offer waits for no one).
const WARN_SECONDS = 10;

function announceOffer(text) {
  $("announce-offer").textContent = text;
}

// New words in the open conversation: said politely, without moving the focus.
function announceMessage(text) {
  $("announce-message").textContent = text;
}

// Offers gone from the list with no answer of hers (expired, or taken back by the router):
// said, as their arrival was. Accepted ones are in Assigned; declined ones are her own doing.
function offersEnded(before) {
  for (const c of before) {
    if (state.work.offers.some((o) => o.id === c.id) || find(c.id) || c.id === state.lettingGo) continue;
    if (c.id === state.selected) continue; // she had it open: the message under it says so (setWork)
    announceOffer("The offer from " + customerName(c) + " on " + c.channel + " has ended: it expired or was taken back.");
  }
}

function alertOffer(offer) {
  state.alerted = offer;
  renderAlert();
  const left = secondsUntil(offer.offer_expires_at);
  announceOffer("New offer on " + offer.channel + " from " + customerName(offer) + (left ? ": " + left + " seconds to accept" : "") +
    ". It is in the Offers list.");
  beep();
  if (window.Notification && Notification.permission === "granted" && document.visibilityState !== "visible") {
    const note = new Notification("Relaydesk: new offer", { body: offer.channel + " · " + customerName(offer), tag: offer.id });
    note.onclick = () => { window.focus(); select(offer.id); note.close(); };
  }
}

function beep() {
  const audio = state.audio;
  if (!audio) return;
  if (audio.state === "suspended") audio.resume();
  const osc = audio.createOscillator();
  const gain = audio.createGain();
  osc.frequency.value = 880;
  gain.gain.setValueAtTime(0.15, audio.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.4);
  osc.connect(gain).connect(audio.destination);
  osc.start();
  osc.stop(audio.currentTime + 0.4);
}

// --- the conversation ---------------------------------------------------------------

// A conversation she just started: opened as soon as the work list has it.
export async function expect(cid, notice) {
  state.wanted = cid;
  state.wantedNotice = notice;
  await refreshWork();
}

// After the live stream was away: the open conversation's timeline and replies, read again
// (what was said meanwhile came with no event to this page).
export function reloadOpen() {
  if (!find(state.selected)) return;
  readSoFar = null; // read whole: what came meanwhile may not be after what the page had
  debounce("timeline", loadTimeline, 0);
  refreshCanned();
}

// Signed in again after her session ended: the conversation she had open, and what she had
// written in it and not sent (nothing was sent: the API refused the expired session).
export function giveBack(cid, text) {
  const kept = text.trim() ? ` Your unsent text, to copy: «${text.trim()}»` : "";
  if (!find(cid)) {
    if (kept) say(`Conversation ${cid} is no longer yours (transferred, resolved or taken back).${kept}`, true);
    return;
  }
  select(cid);
  $("reply-text").value = text;
  if (text.trim()) say("Your session had ended: your unsent text is back in the box (it was not sent).");
}

// A link's conversation: shown when it is in her work, else said why not.
export function open(cid) {
  if (find(cid)) select(cid);
  else {
    state.wanted = cid;
    say("That conversation is not offered or assigned to you (it may have been taken or resolved).", true);
  }
}

function select(cid) {
  const changed = cid !== state.selected;
  state.selected = cid;
  if (changed) {
    state.timeline = []; state.customer = null; state.canned = []; say("");
    readSoFar = null; // another conversation: its customer's timeline is read whole
    $("reply-text").value = drafts.load(state.agentId, cid); // what she wrote here and did not send
    compose.reset();
    const conv = find(cid);
    compose.setWindow(conv, []); // until the timeline says when the customer last wrote
  }
  for (const li of document.querySelectorAll("ul.work li")) {
    li.classList.toggle("selected", li.dataset.id === cid);
    const pick = li.querySelector("button.pick");
    if (pick && li.dataset.id === cid) pick.setAttribute("aria-current", "true");
    else if (pick) pick.removeAttribute("aria-current");
  }
  renderConversation();
  loadTimeline();
  loadCustomer();
  loadCanned();
}

function renderConversation() {
  const conv = find(state.selected);
  $("placeholder").hidden = !!conv;
  $("conversation").hidden = !conv;
  if (!conv) { renderCustomer(); clearIds("timeline", "conv-title", "conv-subject", "conv-facts"); return; }
  const req = conv.requirements || {};
  const whatsapp = state.window && state.window.whatsapp; // WhatsApp through Twilio is on the sms channel
  // The name in an isolate of its own: a customer's U+202E (or any right-to-left text) reorders only itself, not " (assigned)".
  $("conv-title").replaceChildren(channelIcon(whatsapp ? "whatsapp" : conv.channel), " ",
    el("span", { className: "name", dir: "auto", textContent: customerName(conv) }), " (" + conv.status + ")");
  $("conv-subject").textContent = conv.subject || "";
  const skills = Object.entries(req.skills || {}).map(([k, v]) => k + "≥" + v).join(", ");
  const wait = conv.waiting_since ? since(conv.waiting_since) + " waiting" : "";
  $("conv-facts").textContent = ["tier " + ((conv.customer || {}).tier || conv.customer_tier || "standard"), req.language, skills, wait].filter(Boolean).join(" · ");
  const offered = conv.status === "offered";
  $("accept").hidden = !offered;
  $("decline").hidden = !offered;
  $("resolve").hidden = offered;
  $("reply-form").hidden = offered;
  $("move").hidden = offered;
  tick();
}

async function loadTimeline(attempt = 0) {
  const conv = find(state.selected);
  if (!conv) return;
  const cid = conv.id;
  try {
    const { entries, more } = await timelineOf(conv.customer_id);
    if (state.selected !== cid) return;
    if (more) debounce("timeline", loadTimeline, 0); // past MAX_PAGES: read on from there
    compose.setWindow(conv, entries); // WhatsApp's window: from the customer's last message's `at`
    renderConversation();
    state.timeline = entries.slice(-200);
    renderTimeline();
    if ($("message").textContent.startsWith("Timeline: ")) say(""); // an earlier failure, now mended
    // A conversation just started (or just routed) may not be on the timeline yet: look again shortly.
    const spoken = entries.some((e) => e.conversation_id === cid && SPOKEN.has(e.kind));
    if (!spoken && attempt < 5) debounce("timeline", () => loadTimeline(attempt + 1), 1000);
    else if (awaited && awaited.cid === cid) {
      const last = entries.length ? entries[entries.length - 1].seq : 0;
      if (last >= awaited.seq || attempt >= AWAIT_TRIES) awaited = null;
      else debounce("timeline", () => loadTimeline(attempt + 1), 500);
    }
  } catch (err) {
    if (!(err instanceof Stale) && err.status !== 403) say("Timeline: " + err.message, true);
  }
}

// The timeline is paged oldest first, at most 1000 entries a page: a customer with a longer
// history showed only the first 1000 and never the newest messages (found by a shift audit).
const PAGE = 1000;
const MAX_PAGES = 100;

// What the page has read of the open customer's timeline ({customerId, entries}): a load reads
// only the entries after it. Found by the flood audit: every message of a flooding customer
// loaded the timeline again, read whole each time (50 requests, ~25 MB, for 50,000 messages,
// every 400 ms) to draw its last 200. Read whole again on another selection and after the
// live stream was away (a merge may bring the page entries older than what it has).
let readSoFar = null;

async function timelineOf(customerId) {
  if (!readSoFar || readSoFar.customerId !== customerId) readSoFar = { customerId, entries: [] };
  const held = readSoFar;
  const path = "/v1/customers/" + encodeURIComponent(customerId) + "/timeline?limit=" + PAGE;
  const last = () => (held.entries.length ? held.entries[held.entries.length - 1].seq : null);
  for (let page = 0; page < MAX_PAGES; page++) {
    const after = last();
    const data = await api("GET", path + (after === null ? "" : "&after=" + after));
    if (readSoFar !== held) return { entries: held.entries, more: false }; // another selection meanwhile
    // Two loads at once (a retry, the live stream) must not keep an entry twice.
    const top = last(); // after the await: what another load pushed meanwhile is kept once
    const fresh = listOf(data, "entries").filter((e) => top === null || e.seq > top);
    for (const e of fresh) held.entries.push(e);
    if (!data || data.next_after == null) return { entries: held.entries, more: false };
  }
  return { entries: held.entries, more: true };
}

function renderTimeline() {
  const rows = [];
  let facts = [];
  const flush = () => { if (facts.length) rows.push(factsRow(facts)); facts = []; };
  for (const e of state.timeline) {
    if (SPOKEN.has(e.kind) && (e.text || attachmentsOf(e).length)) { flush(); rows.push(spokenRow(e)); }
    else facts.push(e);
  }
  flush();
  announceNew();
  $("timeline").replaceChildren(...rows);
  $("timeline").scrollTop = $("timeline").scrollHeight;
}

// The customer's new messages in the open conversation, said once each (the timeline is drawn
// anew at every load, so a live region on it would read it all again). The first drawing of a
// conversation is what she opened, not news.
function announceNew() {
  const cid = state.selected;
  const seqs = state.timeline.map((e) => e.seq);
  const known = state.heard && state.heard.cid === cid ? state.heard.seqs : null;
  state.heard = { cid, seqs: new Set([...(known || []), ...seqs]) };
  if (!known) return;
  const fresh = state.timeline.filter((e) => !known.has(e.seq) && e.conversation_id === cid && e.direction === "in" && SPOKEN.has(e.kind));
  if (!fresh.length) return;
  const name = customerName(find(cid) || {});
  announceMessage(fresh.map((e) => name + " wrote: " + (e.text || "") + (attachmentsOf(e).length ? " (with " + attachmentsOf(e).length + " file(s))" : "")).join(" "));
}

function attachmentsOf(e) {
  return (e.attachments || (e.detail && e.detail.attachments) || []).filter((a) => a && (a.url || a.name));
}

// What became of a reply: "sent", "failed" (with the provider's reason) or "waiting" (no
// outcome yet: the provider is slow, down or throttling). Found by an outage audit: a reply that
// never went out looked like any other, its "delivery failed" folded away among system facts.
function outcomeOf(e) {
  if (e.direction !== "out" || isNote(e) || !e.message_id) return null;
  const outcome = (kind) => state.timeline.find((o) => o.message_id === e.message_id && o.kind === kind);
  const failed = outcome("delivery_failed"); // a bounce is recorded after the reply's "sent"
  if (!failed) return outcome("message_sent") ? { state: "sent", text: "" } : { state: "waiting", text: "Not sent yet" };
  const reason = (failed.detail && failed.detail.reason) || "";
  return { state: "failed", text: "Not delivered" + (reason ? ": " + reason : "") + ". Write it again once the channel works." };
}

function spokenRow(e) {
  const other = e.conversation_id && e.conversation_id !== state.selected ? " other" : "";
  const outcome = outcomeOf(e);
  const cls = (isNote(e) ? "note" : e.direction === "out" ? "out" : "in") + other + (outcome && outcome.state !== "sent" ? " " + outcome.state : "");
  const who = isNote(e) ? "internal note" + (e.agent_id ? " · " + e.agent_id : "") : e.direction === "out" ? (e.agent_id || "agent") : "customer";
  const links = attachmentsOf(e).map((a) => {
    // Only the API's own (authorised) links open; a provider's raw reference would not.
    const usable = a.url && (a.url.startsWith("/") || /^https?:\/\//.test(a.url));
    return usable ? el("a", { className: "attachment", href: a.url, target: "_blank", rel: "noopener", textContent: a.name || "attachment" })
      : el("span", { className: "attachment" }, el("bdi", { textContent: a.name || "attachment" }), " (not available)");
  });
  return el("li", { className: cls }, el("span", { className: "text", dir: "auto", textContent: e.text || "" }), ...links,
    el("small", { textContent: who + " · " + new Date(e.at).toLocaleTimeString() }),
    outcome && outcome.text ? el("small", { className: "outcome", textContent: outcome.text }) : null);
}

function factsRow(facts) {
  const label = (e) => e.kind.replaceAll("_", " ");
  const summary = el("summary", { textContent: facts.map(label).join(" · ") });
  const items = facts.map((e) => el("li", { textContent: new Date(e.at).toLocaleTimeString() + " " + label(e) + (e.agent_id ? " · " + e.agent_id : "") }));
  return el("li", { className: "facts" }, el("details", {}, summary, el("ul", {}, ...items)));
}

// --- the customer panel -------------------------------------------------------------

async function loadCustomer() {
  const conv = find(state.selected);
  if (!conv) return;
  const cid = conv.id;
  try {
    let customer = await api("GET", "/v1/customers/" + encodeURIComponent(conv.customer_id));
    // Merged into another: the agent works with the customer that stands for it now.
    for (let hops = 0; customer && customer.merged_into && hops < 8; hops++) {
      customer = await api("GET", "/v1/customers/" + encodeURIComponent(customer.merged_into));
    }
    if (state.selected !== cid) return;
    state.customer = customer;
  } catch (err) {
    if (err instanceof Stale) return;
    state.customer = null;
  }
  renderCustomer();
}

function renderCustomer() {
  const c = state.customer;
  const conv = find(state.selected);
  $("customer-panel").hidden = !c || !conv;
  if (!c || !conv) { clearIds("cust-name", "cust-tier", "cust-facts", "cust-identities", "cust-history"); return; }
  $("cust-name").textContent = c.name || (conv.customer || {}).name || c.customer_id;
  $("cust-tier").replaceChildren(el("span", { className: "tier tier-" + (c.tier || "standard"), textContent: c.tier || "standard" }),
    ...(c.flags || []).map((f) => el("span", { className: "flag", textContent: f.replaceAll("_", " ") })));
  const facts = [["language", c.preferred_language], ["customer id", c.customer_id]];
  const crm = c.crm_id ? (c.crm_url ? el("a", { href: c.crm_url, target: "_blank", rel: "noopener", textContent: c.crm_id }) : c.crm_id) : null;
  const dl = [];
  for (const [k, v] of facts) if (v) dl.push(el("dt", { textContent: k }), el("dd", { textContent: v }));
  if (crm) dl.push(el("dt", { textContent: "CRM" }), el("dd", {}, crm));
  $("cust-facts").replaceChildren(...dl);
  $("cust-identities").replaceChildren(...(c.identities || []).map((i) => el("li", { dir: "auto", textContent: typeof i === "string" ? i : i.address || JSON.stringify(i) })));
  const history = (c.conversations || c.previous_conversations || []).filter((h) => (h.conversation_id || h.id) !== state.selected);
  $("cust-history").replaceChildren(...(history.length ? history.map((h) => el("li", {},
    channelIcon(h.channel), " " + (h.status || "") + " · " + (h.opened_at || h.last_activity_at ? new Date(h.opened_at || h.last_activity_at).toLocaleDateString() : "") +
    (h.agent_id ? " · " + h.agent_id : ""))) : [el("li", { className: "none", textContent: "none" })]));
}

// --- canned replies and the pick lists ------------------------------------------------

// Loaded when a conversation opens, again when she opens the list and every 30 s: supervisors
// add, change and remove the team's replies during her shift (PUT /v1/canned-replies/{id}), and
// a list loaded hours ago offered a removed reply and lacked a new one (found by a shift audit).
export function refreshCanned() {
  if (state.selected) loadCanned();
}

async function loadCanned() {
  const cid = state.selected;
  if (!cid) return;
  try {
    // Filled in for this conversation ({customer.name} …); the plain list when that is missing.
    let data;
    try { data = await api("GET", "/v1/conversations/" + encodeURIComponent(cid) + "/canned-replies"); }
    catch (err) { if (err instanceof Stale || err.status !== 404) throw err; data = await api("GET", "/v1/canned-replies"); }
    if (state.selected !== cid) return;
    state.canned = listOf(data, "canned_replies").length ? listOf(data, "canned_replies") : listOf(data, "replies");
  } catch (err) {
    // Not loaded: the list stands as it was (empty for a conversation just opened).
    if (err instanceof Stale || state.selected !== cid) return;
  }
  // Redrawn only when it changed, so a list she is opening is not replaced under her.
  const shown = cid + " " + JSON.stringify(state.canned);
  if ($("canned").dataset.shown === shown) return;
  $("canned").dataset.shown = shown;
  $("canned").replaceChildren(el("option", { value: "", textContent: state.canned.length ? "—" : "none" }),
    ...state.canned.map((c) => el("option", { value: c.id, textContent: c.title })));
}

// Every agent, for the transfer menu: GET /v1/agents answers a page at a time (at most 1000).
async function wholeRoster() {
  let agents = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const data = await api("GET", "/v1/agents?limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    agents = agents.concat(listOf(data, "agents"));
    cursor = data && data.next_cursor ? data.next_cursor : null;
    if (!cursor) break;
  }
  return agents;
}

export async function loadLists() {
  const [agents, skills] = await Promise.allSettled([wholeRoster(), api("GET", "/v1/skills")]);
  if (agents.status === "fulfilled") state.roster = agents.value;
  compose.loadTemplates();
  if (skills.status === "fulfilled") state.skills = listOf(skills.value, "skills").map((s) => (typeof s === "string" ? s : s.name));
  const others = (state.roster || []).filter((a) => a.id !== state.agentId && a.active !== false);
  $("to-agent").replaceChildren(el("option", { value: "", textContent: "—" }),
    ...others.map((a) => el("option", { value: a.id, textContent: (a.name || a.id) + " (" + a.status + ")" })));
  $("to-skill").replaceChildren(el("option", { value: "", textContent: "—" }),
    ...(state.skills || []).map((s) => el("option", { value: s, textContent: s })));
}

// --- commands -----------------------------------------------------------------------

// Actions after which the conversation leaves her lists: its going is no news to her.
const LETTING_GO = new Set(["decline", "resolve", "transfer", "escalate"]);

// Words to the customer or the team go with an Idempotency-Key, the same one while the outcome
// of the last try is unknown (no answer: the network dropped; a 5xx: "retry"): sending again
// then answers the first reply instead of sending it twice (found by a shift audit: a flaky
// network and a second click gave the customer the reply twice). An answer, or other words, is a new key.
const ONCE = new Set(["reply", "notes"]);

function keyFor(path, cid, body) {
  const text = JSON.stringify(body);
  const last = state.sending[path];
  if (last && last.cid === cid && last.body === text) return last.key;
  state.sending[path] = { cid, body: text, key: idempotencyKey() };
  return state.sending[path].key;
}

async function act(path, body, done) {
  const cid = state.selected;
  if (!cid) return false;
  if (LETTING_GO.has(path)) state.lettingGo = cid;
  const headers = ONCE.has(path) ? { "Idempotency-Key": keyFor(path, cid, body || {}) } : undefined;
  try {
    try {
      await api("POST", "/v1/conversations/" + encodeURIComponent(cid) + "/" + path, body || {}, headers);
    } catch (err) {
      if (headers && err.status && err.status < 500) delete state.sending[path]; // refused: known, not kept
      throw err;
    }
    if (headers) delete state.sending[path];
    say(done);
    await refreshWork();
    debounce("timeline", loadTimeline, 300);
    focusAfter(path);
    return true;
  } catch (err) {
    if (state.lettingGo === cid) state.lettingGo = null;
    if (err instanceof Stale) return false;
    const unknown = headers && !err.status; // fetch failed: the request may have arrived
    say(unknown ? "No answer from the server (" + err.message + "): it may have gone. Send again: it will not go twice." : err.message, true);
    return false;
  }
}

// The button she pressed may be gone (Accept and Decline hide, a resolved conversation leaves):
// the focus goes where the work goes on, not to the top of the page (WCAG 2.4.3).
function focusAfter(path) {
  if (path === "accept" && !$("reply-form").hidden) { $("reply-text").focus(); return; }
  if (!LETTING_GO.has(path) || find(state.selected)) return;
  const next = document.querySelector("#offers button.pick, #assigned button.pick");
  (next || $("new-open")).focus();
}

export function wire() {
  $("accept").addEventListener("click", () => act("accept", {}, "Accepted."));
  $("decline").addEventListener("click", () => act("decline", {}, "Declined."));
  $("resolve").addEventListener("click", async () => {
    const cid = state.selected;
    if (await act("resolve", {}, "Resolved.")) drafts.drop(state.agentId, cid); // nothing left to answer
  });
  $("reply-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("reply-text").value;
    let body;
    try { body = compose.replyBody(text); } catch (err) { say(err.message, true); return; }
    if (!body) return;
    const sent = body.template ? "Template sent." : body.attachments ? "Reply sent with " + body.attachments.length + " file(s)." : "Reply sent.";
    const cid = state.selected;
    if (await act("reply", body, sent)) {
      if (!body.template) { // outside the window the box holds a note draft
        $("reply-text").value = "";
        drafts.drop(state.agentId, cid);
      }
      compose.reset();
    }
  });
  $("add-note").addEventListener("click", async () => {
    const text = $("reply-text").value;
    const cid = state.selected;
    if (text.trim() && await act("notes", { text }, "Note added (the customer does not see it).")) {
      $("reply-text").value = "";
      drafts.drop(state.agentId, cid);
    }
  });
  $("reply-text").addEventListener("input", () => drafts.save(state.agentId, state.selected, $("reply-text").value));
  compose.wire(say);
  $("canned").addEventListener("focus", refreshCanned);
  $("canned").addEventListener("change", () => {
    const picked = state.canned.find((c) => c.id === $("canned").value);
    if (picked) {
      $("reply-text").value = picked.text;
      drafts.save(state.agentId, state.selected, picked.text);
    }
    $("canned").value = "";
  });
  $("transfer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const body = { note: $("note").value };
    if ($("to-agent").value) body.to_agent = $("to-agent").value;
    else if ($("to-skill").value) body.to_skill = $("to-skill").value;
    else if ($("to-tier").value) body.to_tier = Number($("to-tier").value);
    else { say("Pick an agent, a skill or a tier.", true); return; }
    act("transfer", body, "Transferred.");
  });
  $("escalate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act("escalate", { to_tier: Number($("esc-tier").value), reason: $("esc-reason").value }, "Escalated.");
  });
}

// Signing out: every region that showed someone's work is emptied (state is already fresh).
export function clear() {
  clearIds("offers", "assigned", "timeline", "conv-title", "conv-subject", "conv-facts", "countdown", "message", "alert",
    "announce-offer", "announce-message",
    "cust-name", "cust-tier", "cust-facts", "cust-identities", "cust-history", "to-agent", "to-skill");
  $("canned").replaceChildren(el("option", { value: "", textContent: "—" }));
  delete $("canned").dataset.shown;
  for (const id of ["reply-text", "note", "esc-reason"]) $(id).value = "";
  compose.clear();
  $("alert").hidden = true;
  $("conversation").hidden = true;
  $("placeholder").hidden = false;
  $("customer-panel").hidden = true;
  $("move").open = false;
}
