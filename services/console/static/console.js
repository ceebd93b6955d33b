// Relaydesk agent console: plain JS, no build step. The token stays in sessionStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "relaydesk.token";
const state = {
  token: sessionStorage.getItem(KEY) || "",
  me: null,
  agentId: null,
  work: { offers: [], assigned: [] },
  selected: null,
  wanted: null,
  stream: null,
  timers: {},
};

function auth() {
  return { Authorization: "Bearer " + state.token };
}

async function api(method, path, body) {
  const headers = auth();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = {};
  try { data = await r.json(); } catch (_) { /* empty body */ }
  if (r.status === 401 && path !== "/v1/agent/me") logout("Your token is no longer valid.");
  if (!r.ok) {
    const err = new Error(data.error || "HTTP " + r.status);
    err.status = r.status;
    throw err;
  }
  return data;
}

function say(text, isError) {
  const node = $("message");
  node.textContent = text;
  node.className = isError ? "error" : "";
}

function debounce(name, fn, ms) {
  clearTimeout(state.timers[name]);
  state.timers[name] = setTimeout(fn, ms);
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
}

// --- login -------------------------------------------------------------------------

async function login(token) {
  state.token = token;
  try {
    state.me = await api("GET", "/v1/agent/me");
  } catch (err) {
    state.token = "";
    sessionStorage.removeItem(KEY);
    $("login-error").textContent = err.status === 401 ? "That token is not valid." : err.message;
    return;
  }
  sessionStorage.setItem(KEY, token);
  $("login").hidden = true;
  $("logout").hidden = false;
  if (state.me.operator) {
    $("who").textContent = "operator";
    $("operator-view").hidden = false;
    refreshOperator();
    setInterval(refreshOperator, 3000);
  } else {
    state.agentId = state.me.agent.id;
    $("who").textContent = state.me.agent.name || state.agentId;
    $("agent-view").hidden = false;
    $("status").hidden = false;
    setWork(state.me);
  }
  follow();
}

function logout(reason) {
  sessionStorage.removeItem(KEY);
  state.token = "";
  if (state.stream) state.stream.abort();
  $("agent-view").hidden = true;
  $("operator-view").hidden = true;
  $("status").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
}

// --- live stream (fetch, since EventSource cannot send a bearer header) --------------

async function follow() {
  while (state.token) {
    const ctrl = new AbortController();
    state.stream = ctrl;
    try {
      const r = await fetch("/v1/agent/stream", { headers: { ...auth(), Accept: "text/event-stream" }, signal: ctrl.signal });
      if (r.status === 401) { logout("Your token is no longer valid."); return; }
      if (r.ok) {
        $("live").classList.add("on");
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            onFrame(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
      }
    } catch (err) {
      if (err.name === "AbortError") return;
    }
    $("live").classList.remove("on");
    await new Promise((done) => setTimeout(done, 1000));
  }
}

function onFrame(chunk) {
  let kind = "message";
  let data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event: ")) kind = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const body = JSON.parse(data);
  if (kind === "revoked") { logout("Your token was revoked."); return; }
  if (state.me && state.me.operator) { debounce("operator", refreshOperator, 200); return; }
  if (kind === "work") { setWork(body); return; }
  if (kind === "agent_status_changed") $("status").value = body.status;
  debounce("work", refreshWork, 100);
  if (body.conversation_id && body.conversation_id === state.selected) debounce("timeline", loadTimeline, 400);
}

// --- agent view ---------------------------------------------------------------------

async function refreshWork() {
  try { setWork(await api("GET", "/v1/agent/work")); } catch (err) { say(err.message, true); }
}

function setWork(work) {
  state.work = { offers: work.offers || [], assigned: work.assigned || [] };
  if (work.agent && work.agent.status) $("status").value = work.agent.status;
  renderList($("offers"), state.work.offers, true);
  renderList($("assigned"), state.work.assigned, false);
  if (state.wanted && find(state.wanted)) { select(state.wanted); state.wanted = null; }
  else if (state.selected) showConversation();
}

function renderList(list, items, offers) {
  list.replaceChildren(...items.map((c) => {
    const facts = [c.channel, "tier " + (c.customer_tier || "standard"), c.requirements.language || ""].filter(Boolean).join(" · ");
    const skills = Object.entries(c.requirements.skills || {}).map(([k, v]) => k + "≥" + v).join(", ");
    const item = el("li", { className: (offers ? "offer" : "assigned") + (c.id === state.selected ? " selected" : "") },
      el("b", { textContent: c.customer_id }), el("small", { textContent: facts }), el("small", { textContent: skills }));
    item.dataset.id = c.id;
    item.addEventListener("click", () => select(c.id));
    return item;
  }));
}

function find(cid) {
  return state.work.offers.find((c) => c.id === cid) || state.work.assigned.find((c) => c.id === cid) || null;
}

function select(cid) {
  state.selected = cid;
  for (const li of document.querySelectorAll("ul.work li")) li.classList.toggle("selected", li.dataset.id === cid);
  showConversation();
  loadTimeline();
}

function showConversation() {
  const conv = find(state.selected);
  if (!conv) {
    $("conversation").hidden = true;
    $("placeholder").hidden = false;
    return;
  }
  $("placeholder").hidden = true;
  $("conversation").hidden = false;
  $("conv-title").textContent = conv.channel + " · " + conv.customer_id + " (" + conv.status + ")";
  const wait = conv.waiting_since ? Math.round((Date.now() - Date.parse(conv.waiting_since)) / 1000) + " s waiting" : "";
  $("conv-facts").textContent = ["tier " + conv.customer_tier, conv.requirements.language, wait].filter(Boolean).join(" · ");
  const offered = conv.status === "offered";
  $("accept").hidden = !offered;
  $("decline").hidden = !offered;
  $("resolve").hidden = offered;
  $("reply-form").hidden = offered;
  $("transfer-form").hidden = offered;
  $("escalate-form").hidden = offered;
}

async function loadTimeline() {
  const conv = find(state.selected);
  if (!conv) return;
  try {
    const data = await api("GET", "/v1/customers/" + encodeURIComponent(conv.customer_id) + "/timeline?limit=1000");
    const entries = data.entries.slice(-100);
    $("timeline").replaceChildren(...entries.map((e) => el("li", { className: e.direction },
      el("span", { textContent: e.text || e.kind.replaceAll("_", " ") }),
      el("small", { textContent: " " + e.kind + (e.agent_id ? " · " + e.agent_id : "") + " · " + new Date(e.at).toLocaleTimeString() }))));
    $("timeline").scrollTop = $("timeline").scrollHeight;
  } catch (err) {
    if (err.status !== 403) say("Timeline: " + err.message, true);
  }
}

async function act(action, body, done) {
  const cid = state.selected;
  if (!cid) return;
  try {
    await api("POST", "/v1/conversations/" + encodeURIComponent(cid) + "/" + action, body || {});
    say(done);
    await refreshWork();
    debounce("timeline", loadTimeline, 400);
  } catch (err) {
    say(err.message, true);
  }
}

// --- operator view ------------------------------------------------------------------

async function refreshOperator() {
  if (!state.token || !state.me || !state.me.operator) return;
  try {
    const [queues, agents] = await Promise.all([api("GET", "/v1/queues"), api("GET", "/v1/agents")]);
    $("queues").tBodies[0].replaceChildren(...queues.queues.map((q) => row(
      q.channel, Object.entries(q.skills || {}).map(([k, v]) => k + "≥" + v).join(", ") || "—", q.language || "any",
      q.min_tier, q.customer_tier, q.waiting, Math.round(q.oldest_wait_seconds), q.sla_at_risk ?? 0, q.sla_breached ?? 0)));
    const held = queues.held_for_agents || [];
    $("held").textContent = held.length ? "Held for their agent: " + held.map((h) => h.agent_id + " " + h.waiting).join(", ") : "";
    $("agents").tBodies[0].replaceChildren(...agents.agents.map((a) => row(
      a.name || a.id, a.status, a.tier, Object.entries(a.load).map(([k, v]) => k + " " + v + "/" + (a.capacity[k] || 0)).join(", "),
      Math.round(a.occupancy * 100) + "%")));
  } catch (err) {
    /* shown on the next refresh */
  }
}

function row(...cells) {
  return el("tr", {}, ...cells.map((c) => el("td", { textContent: String(c) })));
}

// --- wiring -------------------------------------------------------------------------

function readHash() {
  const match = /^#(?:accept|conversation)=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (!match) return;
  if (find(match[1])) select(match[1]);
  else state.wanted = match[1];
}

$("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("token").value.trim()); });
$("logout").addEventListener("click", () => logout(""));
$("accept").addEventListener("click", () => act("accept", {}, "Accepted."));
$("decline").addEventListener("click", () => act("decline", {}, "Declined."));
$("resolve").addEventListener("click", () => act("resolve", {}, "Resolved."));
$("reply-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("reply-text").value;
  if (!text.trim()) return;
  act("reply", { text }, "Reply sent.").then(() => { if (!$("message").className) $("reply-text").value = ""; });
});
$("transfer-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const body = { note: $("note").value };
  if ($("to-agent").value) body.to_agent = $("to-agent").value;
  if ($("to-skill").value) body.to_skill = $("to-skill").value;
  if ($("to-tier").value) body.to_tier = Number($("to-tier").value);
  act("transfer", body, "Transferred.");
});
$("escalate-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act("escalate", { to_tier: Number($("esc-tier").value), reason: $("esc-reason").value }, "Escalated.");
});
$("status").addEventListener("change", async () => {
  try { await api("POST", "/v1/agent/status", { status: $("status").value }); say("Status: " + $("status").value); }
  catch (err) { say(err.message, true); }
});
window.addEventListener("hashchange", readHash);
readHash();
if (state.token) login(state.token);
