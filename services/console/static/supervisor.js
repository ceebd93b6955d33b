// The supervisor page (#supervisor): queues and why they wait, agents with load and status,
// open conversations to move, the team's canned replies to keep. For operator and supervisor tokens.
"use strict";

import { $, api, channelIcon, duration, el, listOf, MOST, PAGE, say, since, Stale, state } from "./core.js";

const STATUSES = ["available", "away", "offline"];

export async function refresh() {
  if (!state.me || state.role === "agent") return;
  const epoch = state.epoch;
  const pages = state.supervisor.pages;
  const [queues, agents, conversations, canned] = await Promise.allSettled([
    api("GET", "/v1/queues"), api("GET", pagePath("/v1/agents", pages.agents)),
    api("GET", pagePath("/v1/conversations", pages.conversations)), api("GET", "/v1/canned-replies"),
  ]);
  if (epoch !== state.epoch) return;
  const sup = state.supervisor;
  if (queues.status === "fulfilled") sup.queues = queues.value;
  if (agents.status === "fulfilled") { sup.agents = listOf(agents.value, "agents"); paged(pages.agents, agents.value, sup.agents); }
  if (state.skills === null) {
    try { state.skills = listOf(await api("GET", "/v1/skills"), "skills"); } catch (err) { state.skills = null; }
    if (epoch !== state.epoch) return;
  }
  if (canned.status === "fulfilled") sup.canned = listOf(canned.value, "canned_replies");
  if (conversations.status === "fulfilled") {
    sup.conversations = listOf(conversations.value, "conversations").filter((c) => c.status !== "resolved");
    paged(pages.conversations, conversations.value, sup.conversations);
  }
  const failed = [queues, agents, conversations].find((r) => r.status === "rejected" && !(r.reason instanceof Stale));
  // A failure is said; success leaves the last command's answer in place.
  if (failed) say("Could not refresh: " + failed.reason.message, true, "sup-message");
  render();
}

// A page of a list (found by a scale audit: with 80,000 open conversations and 5,000 agents the page
// asked for every one every 3 s and drew a row, and a menu of every agent, for each: the tab froze).
function pagePath(path, page) {
  return path + "?limit=" + page.shown + (page.cursor ? "&cursor=" + encodeURIComponent(page.cursor) : "");
}

function paged(page, answer, items) {
  page.total = answer && typeof answer.total === "number" ? answer.total : items.length;
  page.next = answer && answer.next_cursor ? answer.next_cursor : null;
}

// "Show more" adds a page's rows up to the API's largest page; past it, the next rows replace these.
function more(name) {
  const page = state.supervisor.pages[name];
  if (page.shown < MOST) page.shown = Math.min(MOST, page.shown + PAGE);
  else if (page.next) page.cursor = page.next;
  refresh();
}

function first(name) {
  const page = state.supervisor.pages[name];
  page.cursor = null;
  page.shown = PAGE;
  refresh();
}

function renderPaging(name, what, count) {
  const page = state.supervisor.pages[name];
  const whence = page.cursor ? "further " : "";
  $(name + "-shown").textContent = "Showing " + count + " " + whence + "of " + page.total + " " + what + ".";
  const button = $(name + "-more");
  button.hidden = !page.next;
  button.textContent = page.shown < MOST ? "Show more" : "Next " + MOST;
  $(name + "-first").hidden = !page.cursor;
}

// Re-rendered only when the data changed, so a menu someone is opening is not replaced under them.
const shown = {};
function changed(name, data) {
  const text = JSON.stringify(data);
  if (shown[name] === text) return false;
  shown[name] = text;
  return true;
}

function render() {
  const sup = state.supervisor;
  const queues = sup.queues || { queues: [], held_for_agents: [] };
  if (changed("queues", queues)) renderQueues(queues);
  const withoutTimes = sup.conversations.map((c) => ({ ...c, waiting_since: undefined }));
  if (changed("agents", sup.agents)) renderAgents(sup.agents);
  if (changed("conversations", [withoutTimes, sup.agents.map((a) => [a.id, a.status])])) renderConversations();
  if (changed("canned", sup.canned || [])) renderCanned(sup.canned || []);
  for (const node of document.querySelectorAll("#open-conversations td.waiting[data-since]")) node.textContent = since(node.dataset.since);
  renderPaging("agents", "agents", sup.agents.length);
  renderPaging("conversations", "open conversations (oldest first)", sup.conversations.length);
}

function cell(value) {
  return el("td", {}, value instanceof Node ? value : String(value ?? ""));
}

function renderQueues(data) {
  $("queues").tBodies[0].replaceChildren(...listOf(data, "queues").map((q) => {
    const e = q.eligible;
    const eligible = e ? e.online + " online of " + e.total + ", " + e.with_free_capacity + " with room" : "—";
    return el("tr", { className: q.blocking ? "blocked" : "" },
      cell(channelIcon(q.channel)), cell(Object.entries(q.skills || {}).map(([k, v]) => k + "≥" + v).join(", ") || "—"),
      cell(q.language || "any"), cell(q.min_tier), cell(q.customer_tier), cell(q.waiting),
      cell(duration(q.oldest_wait_seconds)), cell(q.sla_at_risk ?? 0), cell(q.sla_breached ?? 0),
      cell(eligible), el("td", { className: "blocking", textContent: q.blocking || "" }));
  }));
  const held = data.held_for_agents || [];
  $("held").textContent = held.length ? "Held for their agent: " + held.map((h) => h.agent_id + " " + h.waiting).join(", ") : "";
}

function renderAgents(agents) {
  $("agents").tBodies[0].replaceChildren(...agents.map((a) => {
    const load = Object.entries(a.load || {}).map(([k, v]) => k + " " + v + "/" + ((a.capacity || {})[k] || 0)).join(", ") || "—";
    const pick = el("select", { className: "set-status", ariaLabel: "status of " + (a.name || a.id) },
      ...STATUSES.map((s) => el("option", { value: s, textContent: s, selected: s === a.status })));
    pick.addEventListener("change", () => setStatus(a.id, pick.value));
    const row = el("tr", { className: a.active === false ? "inactive" : "" },
      cell((a.name || a.id) + (a.active === false ? " (deactivated)" : "")), el("td", { className: "status st-" + a.status, textContent: a.status }),
      cell(a.tier), cell(load), cell(Math.round((a.occupancy || 0) * 100) + "%"), cell(pick));
    row.dataset.id = a.id;
    return row;
  }));
}

function renderConversations() {
  const sup = state.supervisor;
  const targets = [
    ...sup.agents.filter((a) => a.active !== false).map((a) => ["agent:" + a.id, "agent " + (a.name || a.id) + " (" + a.status + ")"]),
    ...(state.skills || skillsFromQueues()).map((s) => ["skill:" + s, "skill " + s]),
  ];
  $("open-conversations").tBodies[0].replaceChildren(...sup.conversations.map((c) => {
    // Its choices are made when it is first used: a menu of every agent in every row was
    // rows × agents elements (100 × 5,000: half a million) at each change.
    const pick = el("select", { className: "move-to", ariaLabel: "move " + c.id + " to" }, el("option", { value: "", textContent: "—" }));
    const fill = () => {
      if (pick.options.length > 1) return;
      pick.append(...targets.map(([value, label]) => el("option", { value, textContent: label })));
    };
    for (const event of ["focus", "pointerdown", "keydown"]) pick.addEventListener(event, fill);
    const button = el("button", { className: "move", textContent: "Move", ariaLabel: "Move " + c.id });
    button.addEventListener("click", () => move(c.id, pick.value));
    const row = el("tr", {}, cell(c.id), cell(channelIcon(c.channel)), cell(c.status), cell(c.agent_id || "—"),
      waitingCell(c.waiting_since), el("td", {}, pick, " ", button));
    row.dataset.id = c.id;
    return row;
  }));
}

// The file's replies are shown, not changed (the API refuses: change them in [console]).
function renderCanned(replies) {
  $("canned-replies").tBodies[0].replaceChildren(...replies.map((r) => {
    const team = r.source === "team";
    const actions = el("td", {});
    if (team) {
      const edit = el("button", { className: "edit-canned", textContent: "Edit", ariaLabel: "Edit " + r.id });
      edit.addEventListener("click", () => {
        $("canned-id").value = r.id; $("canned-title").value = r.title; $("canned-text").value = r.text;
        $("canned-text").focus(); // to the form it filled: a keyboard user edits on from there
      });
      const remove = el("button", { className: "remove-canned", textContent: "Remove", ariaLabel: "Remove " + r.id });
      remove.addEventListener("click", () => removeCanned(r.id));
      actions.append(edit, " ", remove);
    }
    const row = el("tr", {}, cell(r.id), cell(r.title), el("td", { className: "canned-text", textContent: r.text }),
      cell(team ? "team" : "config file"), actions);
    row.dataset.id = r.id;
    return row;
  }));
}

async function saveCanned(ev) {
  ev.preventDefault();
  const id = $("canned-id").value.trim();
  try {
    await api("PUT", "/v1/canned-replies/" + encodeURIComponent(id), { title: $("canned-title").value, text: $("canned-text").value });
    say("Saved canned reply " + id + ".", false, "canned-message");
    $("canned-form").reset();
  } catch (err) {
    if (!(err instanceof Stale)) say(err.message, true, "canned-message");
  }
  refresh();
}

async function removeCanned(id) {
  try {
    await api("DELETE", "/v1/canned-replies/" + encodeURIComponent(id));
    say("Removed canned reply " + id + ".", false, "canned-message");
  } catch (err) {
    if (!(err instanceof Stale)) say(err.message, true, "canned-message");
  }
  refresh();
}

function waitingCell(iso) {
  const node = el("td", { className: "waiting", textContent: iso ? since(iso) : "" });
  if (iso) node.dataset.since = iso;
  return node;
}

function skillsFromQueues() {
  const names = new Set();
  for (const q of listOf(state.supervisor.queues, "queues")) for (const k of Object.keys(q.skills || {})) names.add(k);
  for (const a of state.supervisor.agents) for (const k of Object.keys(a.skills || {})) names.add(k);
  return [...names].sort();
}

async function setStatus(agentId, status) {
  try {
    await api("POST", "/v1/agents/" + encodeURIComponent(agentId) + "/status", { status, reason: "set by a supervisor" });
    say(agentId + " is " + status + ".", false, "sup-message");
  } catch (err) {
    if (!(err instanceof Stale)) say(err.message, true, "sup-message");
  }
  refresh();
}

async function move(cid, target) {
  if (!target) { say("Pick an agent or a skill to move " + cid + " to.", true, "sup-message"); return; }
  const [kind, name] = [target.slice(0, target.indexOf(":")), target.slice(target.indexOf(":") + 1)];
  const body = kind === "agent" ? { to_agent: name } : { to_skill: name };
  body.note = "moved by a supervisor";
  try {
    await api("POST", "/v1/conversations/" + encodeURIComponent(cid) + "/transfer", body);
    say("Moved " + cid + " to " + kind + " " + name + ".", false, "sup-message");
  } catch (err) {
    if (!(err instanceof Stale)) say(err.message, true, "sup-message");
  }
  refresh();
}

export function wire() {
  $("canned-form").addEventListener("submit", saveCanned);
  for (const name of ["agents", "conversations"]) {
    $(name + "-more").addEventListener("click", () => more(name));
    $(name + "-first").addEventListener("click", () => first(name));
  }
}

export function clear() {
  for (const key of Object.keys(shown)) delete shown[key];
  for (const id of ["queues", "agents", "open-conversations", "canned-replies"]) $(id).tBodies[0].replaceChildren();
  $("held").textContent = "";
  for (const name of ["agents", "conversations"]) {
    $(name + "-shown").textContent = "";
    $(name + "-more").hidden = true;
    $(name + "-first").hidden = true;
  }
  $("sup-message").textContent = "";
  $("canned-message").textContent = "";
  $("canned-form").reset();
}
