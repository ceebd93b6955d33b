/* Relaydesk web chat widget. Plain JS, no build step, no dependencies.
 *
 * Embed:
 *   <script src="https://chat.example.com/widget.js" data-widget-key="KEY" async></script>
 * or mount it yourself (e.g. for a logged-in user whose identity JWT your backend signed):
 *   RelaydeskChat.mount({server: "https://chat.example.com", widgetKey: "KEY",
 *                        identityToken: function () { return fetch("/chat-jwt").then(r => r.text()); },
 *                        container: document.getElementById("chat"),
 *                        closedText: "…"});  // optional: what a resolved conversation says
 * chat.forget() closes it and forgets the visitor id kept in localStorage (a shared computer:
 * call it from your site's logout; the next visitor starts afresh, without this history).
 *
 * Protocol (connectors/chat/README.md): POST /sessions -> token; WebSocket /ws?after_seq=N&epoch=E,
 * first frame {"type":"auth","token":...}; {"type":"message","client_msg_id","text","browser_language",
 * "page_language"} -> ack with seq (the two language hints help the router pick the visitor's language
 * when a message is a word or two);
 * replies arrive as {"type":"reply","seq","text"}; {"type":"closed","seq"} says the conversation was
 * resolved (shown as opts.closedText; the next message opens a new one). Unacknowledged messages are sent again, with the
 * same client_msg_id, after a reconnect (the server makes that idempotent).
 * seq is the frame's sequence in the server's history stream: it only grows (across restarts and
 * instances) but is not dense, so it is compared, never counted. epoch names that stream; a new
 * epoch means the numbering started over.
 */
(function () {
  "use strict";
  // What events/text.py's blank() counts as nothing: whitespace, format characters, fillers.
  var INVISIBLE = /[\s\p{Cf}\u115f\u1160\u3164\uffa0\u2800]/gu;

  // Accessibility (WCAG 2.2 AA; tests/connectors/chat/test_widget_accessibility.py and
  // tests/unit/test_contrast.py): the text colour is set here, not taken from the host page (whose
  // own could be light on this white box); colour pairs hold 4.5:1 for text and 3:1 for the input's
  // edge; focus rings are the widget's own; the box can be minimized (fixed over the page, it could
  // hide what has the page's focus) and fits a 320 px wide screen.
  var CSS =
    ".rd-chat{font:14px/1.4 system-ui,sans-serif;color:#223;width:320px;max-width:calc(100vw - 32px);" +
    "border:1px solid #ccd;border-radius:8px;" +
    "background:#fff;display:flex;flex-direction:column;box-shadow:0 4px 16px rgba(0,0,0,.12)}" +
    ".rd-chat.rd-floating{position:fixed;right:16px;bottom:16px;z-index:2147483000}" +
    ".rd-head{padding:8px 12px;background:#24408e;color:#fff;border-radius:8px 8px 0 0;display:flex;" +
    "justify-content:space-between;align-items:center;gap:8px}" +
    ".rd-title{flex:1}" +
    ".rd-toggle{border:0;background:none;color:#fff;font:inherit;font-weight:700;padding:0 6px;cursor:pointer}" +
    ".rd-head :focus-visible{outline:2px solid #fff;outline-offset:1px}" +
    ".rd-body{display:flex;flex-direction:column}.rd-min .rd-body{display:none}" +
    ".rd-log{height:300px;overflow-y:auto;padding:8px;display:flex;flex-direction:column;gap:6px}" +
    ".rd-floating .rd-log{max-height:calc(100vh - 160px)}" +
    ".rd-log:focus-visible,.rd-form textarea:focus-visible{outline:2px solid #24408e;outline-offset:-2px}" +
    ".rd-msg{max-width:80%;padding:6px 10px;border-radius:12px;white-space:pre-wrap;word-wrap:break-word}" +
    ".rd-mine{align-self:flex-end;background:#dfe7fb}.rd-mine[data-state=pending]{opacity:.75}" +
    // Who said it, for screen readers (alternative text of generated content; nothing is shown).
    ".rd-mine::before{content:\"\";content:\"\"/\"You:\"}.rd-reply::before{content:\"\";content:\"\"/\"Agent:\"}" +
    ".rd-mine[data-state=failed]{background:#fbdfdf}" +
    ".rd-mine[data-state=failed]::after{content:\" (not sent)\";color:#a33;font-size:12px}" +
    ".rd-reply{align-self:flex-start;background:#eee}" +
    // What people wrote is an isolate of its own: a U+202E in it reverses only itself, never the
    // " (not sent)" the widget adds after it; its direction comes from its own letters (dir=auto).
    ".rd-text{unicode-bidi:isolate}" +
    ".rd-note{align-self:center;color:#a33;font-size:12px}" +
    ".rd-closed{align-self:center;color:#556;font-size:12px;text-align:center}" +
    ".rd-form{display:flex;border-top:1px solid #8b8fa3}" +
    ".rd-form textarea{flex:1;border:0;padding:8px;resize:none;font:inherit;color:inherit;background:#fff}" +
    ".rd-form button{border:0;background:#24408e;color:#fff;padding:0 14px;cursor:pointer}" +
    ".rd-form button:focus-visible{outline:2px solid #fff;outline-offset:-4px}";

  function randomId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text; // never innerHTML: texts come from people
    return node;
  }

  // A bubble of what someone wrote: the text in its own isolate, right to left when it starts so
  // (dir=auto on the bubble only: an element with a dir of its own is not read for the bubble's).
  function bubble(cls, text, links) {
    var node = el("div", cls);
    var inner = el("span", "rd-text");
    node.dir = "auto";
    if (links) withFileLinks(inner, text); else inner.textContent = text;
    node.appendChild(inner);
    return node;
  }

  // An agent's reply lists its files as "📎 <name>: <signed link>" lines (connectors/chat
  // connector.with_file_links): those become links; everything else stays text.
  function withFileLinks(node, text) {
    text.split("\n").forEach(function (line, i) {
      if (i) node.appendChild(document.createTextNode("\n"));
      var m = /^\uD83D\uDCCE (.+): (https?:\/\/\S+)$/.exec(line);
      if (!m) { node.appendChild(document.createTextNode(line)); return; }
      var a = el("a", "rd-file", m[1]);
      a.href = m[2];
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      node.appendChild(document.createTextNode("\uD83D\uDCCE "));
      node.appendChild(a);
    });
    return node;
  }

  function storage() {
    try { return window.localStorage; } catch (e) { return null; }
  }

  function Chat(opts) {
    if (!opts || !opts.widgetKey) throw new Error("RelaydeskChat: widgetKey is required");
    this.server = (opts.server || window.location.origin).replace(/\/+$/, "");
    this.widgetKey = opts.widgetKey;
    this.identityToken = opts.identityToken || null;
    this.closedText = opts.closedText || "This conversation has ended. Write again any time to start a new one.";
    this.storeKey = "relaydesk.chat." + this.server + "." + this.widgetKey + ".visitor";
    this.visitorId = (storage() && storage().getItem(this.storeKey)) || "";
    this.lastSeq = 0;          // highest seq seen on this page; a fresh page fetches all kept history
    this.epoch = "";
    this.seen = {};            // seq -> true
    this.pending = {};         // client_msg_id -> {text, node, timer}
    this.order = [];           // client_msg_ids not yet acknowledged, in send order
    this.ws = null;
    this.ready = false;
    this.backoff = 1000;
    this.closed = false;
    this.build(opts.container);
    this.connect();
  }

  Chat.prototype.build = function (container) {
    if (!document.getElementById("rd-chat-style")) {
      var style = el("style");
      style.id = "rd-chat-style";
      style.textContent = CSS;
      document.head.appendChild(style);
    }
    // A named region (a screen reader's list of landmarks finds it), a log that reads out new
    // messages without moving the focus, a status that says when the chat is offline, and a
    // button that minimizes and opens it again.
    var root = el("div", "rd-chat" + (container ? "" : " rd-floating"));
    root.setAttribute("role", "region");
    root.setAttribute("aria-labelledby", "rd-chat-title");
    var head = el("div", "rd-head");
    var title = el("span", "rd-title", "Chat with us");
    title.id = "rd-chat-title";
    head.appendChild(title);
    this.statusNode = el("span", "rd-status", "connecting…");
    this.statusNode.id = "rd-chat-status";
    this.statusNode.setAttribute("role", "status");
    head.appendChild(this.statusNode);
    this.toggle = el("button", "rd-toggle", "\u2013");
    this.toggle.id = "rd-chat-toggle";
    this.toggle.type = "button";
    this.toggle.setAttribute("aria-controls", "rd-chat-body");
    head.appendChild(this.toggle);
    var body = el("div", "rd-body");
    body.id = "rd-chat-body";
    this.log = el("div", "rd-log");
    this.log.id = "rd-chat-log";
    this.log.setAttribute("role", "log");
    this.log.setAttribute("aria-live", "polite");
    this.log.setAttribute("aria-label", "Messages");
    this.log.tabIndex = 0; // scrolled by keyboard too
    var form = el("form", "rd-form");
    this.input = el("textarea");
    this.input.id = "rd-chat-input";
    this.input.rows = 2;
    this.input.placeholder = "Type a message…";
    this.input.setAttribute("aria-label", "Message");
    var button = el("button", "", "Send");
    button.id = "rd-chat-send";
    button.type = "submit";
    form.appendChild(this.input);
    form.appendChild(button);
    body.appendChild(this.log);
    body.appendChild(form);
    root.appendChild(head);
    root.appendChild(body);
    this.connection = "connecting…";
    this.unread = 0;
    this.minimized = false;
    this.showToggle();
    var self = this;
    this.toggle.addEventListener("click", function () { self.minimize(!self.minimized); });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      // A lone surrogate (half an emoji, pasted) becomes U+FFFD, which the server stores; a
      // message of zero-width characters only is not sent (the server refuses it as blank).
      var text = self.input.value.toWellFormed ? self.input.value.toWellFormed() : self.input.value;
      if (text.replace(INVISIBLE, "")) { self.send(text); self.input.value = ""; }
    });
    this.input.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit ? form.requestSubmit() : button.click(); }
    });
    (container || document.body).appendChild(root);
    this.root = root;
  };

  // The connection's state; while minimized, the replies not read yet are said instead.
  Chat.prototype.status = function (text) {
    this.connection = text;
    if (!(this.minimized && this.unread)) this.statusNode.textContent = text;
  };

  Chat.prototype.showToggle = function () {
    this.toggle.setAttribute("aria-expanded", this.minimized ? "false" : "true");
    this.toggle.setAttribute("aria-label", this.minimized ? "Open chat" : "Minimize chat");
    this.toggle.title = this.minimized ? "Open chat" : "Minimize chat";
    this.toggle.textContent = this.minimized ? "+" : "\u2013";
  };

  // Minimized: only the title bar stays (the focus stays on the button); opened: as it was.
  Chat.prototype.minimize = function (on) {
    this.minimized = !!on;
    this.root.classList.toggle("rd-min", this.minimized);
    this.unread = 0;
    this.showToggle();
    this.statusNode.textContent = this.connection;
    if (!this.minimized) this.log.scrollTop = this.log.scrollHeight;
  };

  Chat.prototype.unreadReply = function () {
    if (!this.minimized) return;
    this.unread += 1;
    this.statusNode.textContent = this.unread === 1 ? "1 new message" : this.unread + " new messages";
  };

  Chat.prototype.note = function (text) { this.append(el("div", "rd-msg rd-note", text)); };

  Chat.prototype.append = function (node) {
    this.log.appendChild(node);
    this.log.scrollTop = this.log.scrollHeight;
  };

  Chat.prototype.identity = function () {
    var source = this.identityToken;
    if (!source) return Promise.resolve(null);
    return Promise.resolve(typeof source === "function" ? source() : source);
  };

  Chat.prototype.connect = function () {
    var self = this;
    if (self.closed) return;
    self.status("connecting…");
    self.identity().then(function (jwt) {
      var body = {widget_key: self.widgetKey, visitor_id: self.visitorId || undefined};
      if (jwt) body.identity_token = jwt;
      return fetch(self.server + "/sessions", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body), credentials: "omit"
      });
    }).then(function (resp) {
      return resp.json().then(function (data) { return {status: resp.status, data: data}; });
    }).then(function (res) {
      if (res.status !== 200) {
        self.status("offline");
        self.note("Chat unavailable: " + (res.data && res.data.error || res.status));
        // Bad key or origin will not heal by itself; try again slowly (a new identity JWT may help).
        // Too many new visitors from this network (429): when the server says.
        var after = res.status === 429 && res.data && res.data.retry_after ? res.data.retry_after * 1000 : 30000;
        self.retry(res.status >= 500 ? null : after);
        return;
      }
      self.visitorId = res.data.visitor_id;
      if (storage()) storage().setItem(self.storeKey, self.visitorId);
      self.open(res.data.token);
    }).catch(function () {
      self.status("offline");
      self.retry(null);
    });
  };

  Chat.prototype.retry = function (delay) {
    var self = this;
    if (self.closed || self.retryTimer) return;
    var wait = delay || self.backoff;
    self.backoff = Math.min(self.backoff * 2, 30000);
    self.retryTimer = setTimeout(function () { self.retryTimer = null; self.connect(); }, wait);
  };

  Chat.prototype.open = function (token) {
    var self = this;
    var url = self.server.replace(/^http/, "ws") + "/ws?after_seq=" + self.lastSeq + "&epoch=" + encodeURIComponent(self.epoch);
    var ws = new WebSocket(url);
    self.ws = ws;
    ws.onopen = function () {
      ws.send(JSON.stringify({type: "auth", token: token, after_seq: self.lastSeq, epoch: self.epoch}));
    };
    ws.onmessage = function (ev) {
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      self.handle(frame);
    };
    ws.onclose = function (ev) {
      if (self.ws !== ws) return;
      self.ready = false;
      self.ws = null;
      self.status("reconnecting…");
      // 4401: the session token expired or is invalid: a new session is fetched right away.
      self.retry(ev.code === 4401 ? 200 : null);
    };
  };

  Chat.prototype.handle = function (frame) {
    var self = this;
    switch (frame.type) {
      case "ready":
        if (frame.epoch !== self.epoch) {  // another history stream: its numbering starts over
          self.epoch = frame.epoch;
          self.lastSeq = 0;
          self.seen = {};
        }
        self.ready = true;
        self.backoff = 1000;
        self.status("online");
        self.order.slice().forEach(function (id) { self.transmit(id); });
        break;
      case "ack":
        self.acked(frame.client_msg_id, frame.seq);
        break;
      case "message":      // a message of this visitor: from another tab, or history after a reload
        if (self.pending[frame.client_msg_id]) { self.acked(frame.client_msg_id, frame.seq); break; }
        if (self.mark(frame.seq)) {
          var mine = bubble("rd-msg rd-mine", frame.text || "");
          mine.setAttribute("data-state", "acked");
          mine.setAttribute("data-seq", frame.seq);
          mine.setAttribute("data-client-msg-id", frame.client_msg_id);
          self.append(mine);
        }
        break;
      case "reply":
        if (self.mark(frame.seq)) {
          var reply = bubble("rd-msg rd-reply", frame.text || "", true);
          reply.setAttribute("data-seq", frame.seq);
          if (frame.from) reply.title = frame.from;
          self.append(reply);
          self.unreadReply();
        }
        break;
      case "closed":       // an agent resolved the conversation
        if (self.mark(frame.seq)) {
          var closed = el("div", "rd-msg rd-closed", self.closedText);
          closed.setAttribute("data-seq", frame.seq);
          self.append(closed);
        }
        break;
      case "error":
        self.failed(frame);
        break;
      default:
        break;
    }
  };

  Chat.prototype.mark = function (seq) {
    if (typeof seq !== "number" || this.seen[seq]) return false;
    this.seen[seq] = true;
    if (seq > this.lastSeq) this.lastSeq = seq;
    return true;
  };

  Chat.prototype.send = function (text) {
    var id = randomId();
    var node = bubble("rd-msg rd-mine", text);
    node.setAttribute("data-state", "pending");
    node.setAttribute("data-client-msg-id", id);
    this.append(node);
    this.pending[id] = {text: text, node: node, timer: null, tries: 0};
    this.order.push(id);
    this.transmit(id);
    return id;
  };

  Chat.prototype.transmit = function (id) {
    var item = this.pending[id];
    if (!item || !this.ready || !this.ws) return;  // sent on the next "ready"
    var frame = {type: "message", client_msg_id: id, text: item.text};
    var hints = languageHints();
    if (hints.browser_language) frame.browser_language = hints.browser_language;
    if (hints.page_language) frame.page_language = hints.page_language;
    this.ws.send(JSON.stringify(frame));
  };

  // The visitor's browser language and the embedding page's <html lang>: read at each send (a
  // page may switch language without a reload). Only hints: the server validates and may drop them.
  function languageHints() {
    var nav = typeof navigator !== "undefined" ? navigator : {};
    var doc = typeof document !== "undefined" && document.documentElement ? document.documentElement : {};
    return {browser_language: String(nav.language || "").slice(0, 35), page_language: String(doc.lang || "").slice(0, 35)};
  }

  Chat.prototype.acked = function (id, seq) {
    var item = this.pending[id];
    this.mark(seq);
    if (!item) return;
    if (item.timer) clearTimeout(item.timer);
    item.node.setAttribute("data-state", "acked");
    item.node.setAttribute("data-seq", seq);
    delete this.pending[id];
    this.order = this.order.filter(function (x) { return x !== id; });
  };

  Chat.prototype.failed = function (frame) {
    var self = this;
    var id = frame.client_msg_id;
    var item = id && self.pending[id];
    if (!item) { self.note(frame.reason || frame.code); return; }
    if (frame.retryable) {  // same client_msg_id again: the server makes the resend idempotent
      if (item.timer) clearTimeout(item.timer);
      item.tries = (item.tries || 0) + 1;
      var wait = Math.max(frame.retry_after || 1, Math.min(Math.pow(2, item.tries - 1), 30));
      item.timer = setTimeout(function () { item.timer = null; self.transmit(id); }, 1000 * wait);
      return;
    }
    item.node.setAttribute("data-state", "failed");
    item.node.title = frame.reason || frame.code;
    delete self.pending[id];
    self.order = self.order.filter(function (x) { return x !== id; });
    self.note("Not sent: " + (frame.reason || frame.code));
  };

  Chat.prototype.close = function () {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000);
    this.root.remove();
  };

  // Closes the widget and forgets this browser's visitor id: the next visitor at a shared
  // computer starts afresh and sees none of this history (call it from your site's logout).
  Chat.prototype.forget = function () {
    this.close();
    if (storage()) storage().removeItem(this.storeKey);
    this.visitorId = "";
  };

  var api = {
    mount: function (opts) { return new Chat(opts); }
  };
  window.RelaydeskChat = api;

  var script = document.currentScript;
  if (script && script.getAttribute("data-widget-key")) {
    var start = function () {
      api.instance = api.mount({
        widgetKey: script.getAttribute("data-widget-key"),
        server: script.getAttribute("data-server") || new URL(script.src, window.location.href).origin
      });
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
})();
