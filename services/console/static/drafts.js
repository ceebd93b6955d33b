// Unsent replies, one per conversation, in this tab's sessionStorage: opening another
// conversation or reloading the page keeps what she was writing; Log out, someone else signing
// in here, and closing the tab drop it. Found by a shift audit: the box was emptied whenever
// she looked at another conversation, and a reload lost it. Keyed by agent: nobody else at
// this desk is ever given her text.
"use strict";

const PREFIX = "relaydesk.draft.";
const keyOf = (agentId, cid) => PREFIX + agentId + "." + cid;

function keys() {
  const out = [];
  try {
    for (let i = 0; i < sessionStorage.length; i++) {
      const key = sessionStorage.key(i);
      if (key && key.startsWith(PREFIX)) out.push(key);
    }
  } catch (_) { /* storage off: drafts live in the box only */ }
  return out;
}

export function save(agentId, cid, text) {
  if (!agentId || !cid) return;
  try {
    if (text.trim()) sessionStorage.setItem(keyOf(agentId, cid), text);
    else sessionStorage.removeItem(keyOf(agentId, cid));
  } catch (_) { /* storage off or full: the box still holds it */ }
}

export function load(agentId, cid) {
  if (!agentId || !cid) return "";
  try { return sessionStorage.getItem(keyOf(agentId, cid)) || ""; } catch (_) { return ""; }
}

export function drop(agentId, cid) { save(agentId, cid, ""); }

// Every draft but `agentId`'s (none given: every draft).
export function dropOthers(agentId) {
  for (const key of keys()) {
    if (!agentId || !key.startsWith(PREFIX + agentId + ".")) {
      try { sessionStorage.removeItem(key); } catch (_) { /* storage off */ }
    }
  }
}
