// "New conversation": the agent writes first (POST /v1/conversations). She picks the channel,
// types an address or picks one of the open conversation's customer's, and writes a text or
// (WhatsApp) picks a template. The conversation opens already assigned to her.
"use strict";

import { $, api, el, idempotencyKey, say, Stale, state } from "./core.js";
import { paramsOf, showParams } from "./compose.js";
import * as workspace from "./workspace.js";

// Which of a customer's identities (`phone:+1…`, `email:…`, `social:…`) each channel writes to.
const KIND = { sms: "phone", whatsapp: "phone", email: "email", messenger: "social", instagram: "social" };
const PLACEHOLDER = { sms: "+15551234567", whatsapp: "+15551234567", email: "name@example.com", messenger: "page-scoped id (PSID)", instagram: "Instagram-scoped id (IGSID)" };

const tell = (text, isError) => say(text, isError, "new-message");

function identityOf(i) {
  return typeof i === "string" ? i : i.identity || i.address || "";
}

// The form's "To" list: an address typed in, or the open conversation's customer's own.
function renderTargets() {
  const platform = $("new-channel").value;
  const c = state.customer;
  const own = c ? (c.identities || []).map(identityOf).filter((i) => i.startsWith(KIND[platform] + ":")) : [];
  // An option holds text only: the name between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE,
  // so a U+202E in it cannot reverse the address after it.
  const who = c ? "\u2068" + (c.name || c.customer_id) + "\u2069" : "";
  $("new-to").replaceChildren(el("option", { value: "", textContent: "an address…" }),
    ...own.map((i) => el("option", { value: i.slice(i.indexOf(":") + 1), textContent: who + " · " + i.slice(i.indexOf(":") + 1) })));
  if (own.length) $("new-to").value = own[0].slice(own[0].indexOf(":") + 1);
  renderFields();
}

function renderFields() {
  const platform = $("new-channel").value;
  $("new-address").hidden = $("new-to").value !== "";
  $("new-address").placeholder = PLACEHOLDER[platform];
  $("new-subject").hidden = platform !== "email";
  $("new-template-label").hidden = platform !== "whatsapp";
  if (platform !== "whatsapp") { $("new-template").value = ""; $("new-params").replaceChildren(); }
  const template = $("new-template").value;
  $("new-text").hidden = !!template;
}

function show() {
  state.newKey = idempotencyKey(); // one key per conversation meant: a retried click starts it once
  $("new-form").hidden = false;
  $("new-open").hidden = true;
  tell("");
  renderTargets();
  ($("new-to").value ? $("new-text") : $("new-address")).focus();
}

function hide() {
  $("new-form").hidden = true;
  $("new-open").hidden = false;
}

function body() {
  const platform = $("new-channel").value;
  const picked = $("new-to").value;
  const address = (picked || $("new-address").value).trim();
  if (!address) throw new Error("Type the address to write to.");
  const out = { address: platform + ":" + address };
  // The customer's own address: the API also checks it is still theirs.
  if (picked && state.customer) out.customer_id = state.customer.customer_id;
  const template = platform === "whatsapp" ? $("new-template").value : "";
  if (template) {
    out.template = template;
    out.parameters = paramsOf($("new-params"));
  } else {
    out.text = $("new-text").value;
    if (!out.text.trim()) throw new Error("Write the first message" + (platform === "whatsapp" ? " or pick a template." : "."));
  }
  if (platform === "email") out.subject = $("new-subject").value;
  return out;
}

async function start(e) {
  e.preventDefault();
  let request;
  try { request = body(); } catch (err) { tell(err.message, true); return; }
  const platform = $("new-channel").value;
  $("new-send").disabled = true;
  try {
    const result = await api("POST", "/v1/conversations", request, { "Idempotency-Key": state.newKey });
    const cid = result.conversation.id;
    state.platforms[cid] = platform;
    clearFields();
    hide();
    say("Conversation started: it opens here as soon as your work list has it.");
    await workspace.expect(cid, "Conversation started.");
  } catch (err) {
    if (err instanceof Stale) return;
    state.newKey = idempotencyKey(); // refused: what she sends next is a new command
    const open = err.data && err.data.conversation_id;
    tell(err.message + (err.data && err.data.templates ? " (templates: " + err.data.templates.join(", ") + ")" : ""), true);
    if (open) {
      const link = el("a", { href: "#conversation=" + open, textContent: " Open it." });
      $("new-message").append(link);
    }
  } finally {
    $("new-send").disabled = false;
  }
}

function clearFields() {
  for (const id of ["new-address", "new-subject", "new-text"]) $(id).value = "";
  $("new-template").value = "";
  $("new-params").replaceChildren();
  $("new-text").hidden = false;
}

export function wire() {
  $("new-open").addEventListener("click", show);
  $("new-cancel").addEventListener("click", () => { clearFields(); hide(); });
  $("new-channel").addEventListener("change", renderTargets);
  $("new-to").addEventListener("change", renderFields);
  $("new-template").addEventListener("change", () => { showParams($("new-params"), $("new-template").value); renderFields(); });
  $("new-form").addEventListener("submit", start);
}

// Signing out: nothing typed for the last person stays.
export function clear() {
  clearFields();
  $("new-to").replaceChildren(el("option", { value: "", textContent: "an address…" }));
  $("new-channel").value = "sms";
  tell("");
  hide();
}
