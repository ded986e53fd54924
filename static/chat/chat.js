// Chat page client: one socket per page, streamed replies, reconnects with back-off and
// resumes from the last event it saw. Model output is inserted as text; only the server's
// sanitised HTML (message.completed) and its own escaped fragments (sidebar pages, search
// results) are ever inserted as HTML.
(function () {
  "use strict";

  const root = document.getElementById("chat");
  if (!root) return;

  const conversation = root.dataset.conversation;
  const $ = (name, scope) => (scope || root).querySelector(`[data-role="${name}"]`);
  const messagesEl = $("messages");
  const composer = $("composer");
  const textarea = composer.querySelector("textarea");
  // The model menu (when the deployment offers several): every message, edit and regeneration
  // names the model picked, and the server keeps it for the conversation. An empty value is
  // the agent's own model, which users cannot pick: nothing is sent, nothing changes.
  const modelPicker = composer.querySelector("[data-role=model]");
  const modelChoice = () => (modelPicker && modelPicker.value ? { model: modelPicker.value } : {});
  const sendButton = $("send");
  const stopButton = $("stop");
  const noticeEl = $("notice");
  const connectionEl = $("connection");
  const announcer = $("announcer");
  const jumpButton = $("jump-latest");
  const template = document.getElementById("message-template");
  const layout = document.querySelector('[data-role="layout"]');
  const sidebar = document.querySelector('[data-role="sidebar"]');

  const state = {
    socket: null,
    retries: 0,
    run: root.dataset.activeRun || null, // the run we follow, for replay after reconnects
    seq: 0, // the last event of that run we rendered
    busy: Boolean(root.dataset.activeRun),
    pendingRequest: null,
    replies: new Map(), // message id -> {el, text}
    pinned: true, // follow new text to the bottom until the user scrolls up
    spoken: "", // the part of the current reply already handed to the screen-reader announcer
  };

  // --- connection ---------------------------------------------------------------
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/chat/`);
    state.socket = socket;
    socket.addEventListener("open", () => {
      state.retries = 0;
      setConnection("open", "Connected");
      const frame = { type: "conversation.open", conversation };
      if (state.run) Object.assign(frame, { run: state.run, seq: state.seq });
      send(frame);
    });
    socket.addEventListener("message", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      handle(data);
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401) {
        setConnection("closed", "Signed out");
        showNotice("Your session has ended. Reload the page to sign in again.", "error");
        return;
      }
      const delay = Math.min(15000, 500 * 2 ** state.retries) * (0.5 + Math.random() / 2);
      state.retries += 1;
      setConnection("reconnecting", "Reconnecting…");
      setTimeout(connect, delay);
    });
  }

  function send(frame) {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return false;
    state.socket.send(JSON.stringify(frame));
    return true;
  }

  function setConnection(kind, label) {
    connectionEl.dataset.state = kind;
    connectionEl.textContent = label;
  }

  // --- events from the server ---------------------------------------------------
  const handlers = {
    "conversation.state": (e) => {
      if (e.run) {
        if (e.run.id !== state.run) {
          state.run = e.run.id;
          state.seq = 0;
        }
        setBusy(true);
        if (e.run.message) state.current = replyFor(e.run.message, e.run.agent);
        (e.run.approvals || []).forEach(askApproval);
      } else {
        if (state.busy) setBusy(false);
        setTimeout(reloadIfStuck, 2500);
      }
    },
    "conversation.truncated": (e) => {
      e.messages.forEach((id) => {
        const el = document.querySelector(`[data-message="${id}"]`);
        if (el) el.remove();
        state.replies.delete(id);
      });
    },
    "message.created": (e) => {
      const own = e.request_id && e.request_id === state.pendingRequest;
      if (own) {
        textarea.value = "";
        fitComposer();
        state.pendingRequest = null;
      }
      if (!document.querySelector(`[data-message="${e.message}"]`)) {
        const el = buildMessage("user", e.message, "You");
        $("body", el).textContent = e.content;
        append(el);
      }
      if (own) scrollDown(); // the user's own question: show it and follow the answer
      markRunning(true);
      // The server titles a conversation after its first message.
      const title = root.querySelector(".chat-head h1");
      if (title && title.dataset.untitled !== undefined) {
        const line = e.content.split(/\s+/).join(" ").trim();
        delete title.dataset.untitled;
        setTitle(conversation, line.length <= 60 ? line : `${line.slice(0, 59)}…`);
      }
    },
    "run.started": (e) => {
      setBusy(true);
      hideNotice();
      const reply = replyFor(e.message, e.agent);
      reply.text = "";
      reply.node = null;
      state.spoken = "";
      $("body", reply.el).textContent = "";
      reply.el.setAttribute("aria-busy", "true");
      $("activity", reply.el).replaceChildren();
      $("card", reply.el).hidden = true;
      $("error", reply.el).hidden = true;
      $("usage", reply.el).hidden = true;
      setStatus(reply.el, "streaming");
      state.current = reply;
    },
    "message.delta": (e) => {
      const reply = state.current;
      if (!reply) return;
      reply.text += e.delta;
      // One text node that grows: cheaper than replacing the text, and it is still only text.
      const body = $("body", reply.el);
      if (!reply.node || reply.node.parentNode !== body) {
        body.textContent = reply.text;
        reply.node = body.firstChild;
      } else {
        reply.node.appendData(e.delta);
      }
      announce(reply.text, false);
      follow();
    },
    "tool.called": (e) => {
      if (state.current) $("activity", state.current.el).append(toolEntry(e));
      follow();
    },
    "tool.output": (e) => {
      const entry = state.current && state.current.el.querySelector(`[data-call="${CSS.escape(e.call_id)}"]`);
      if (!entry) return;
      entry.querySelector(".tool-output").textContent = e.output;
      setToolStatus(entry, e.failed ? "failed" : "completed");
    },
    "agent.updated": (e) => {
      if (state.current) {
        $("activity", state.current.el).append(handoffNote(e.agent));
        state.current.el.querySelector(".who").textContent = e.agent;
      }
      const agentEl = $("agent");
      if (agentEl) {
        agentEl.textContent = e.agent;
        agentEl.closest(".current-agent").hidden = false;
      }
    },
    "guardrail.tripped": (e) => {
      // Whatever streamed of a blocked reply is withdrawn at once; the block message replaces it.
      const reply = state.current;
      if (reply) {
        reply.text = e.message;
        reply.node = null;
        $("body", reply.el).textContent = e.message;
      }
      showNotice(`Blocked by the ${e.guardrail} check: ${e.message}`, "warning");
    },
    "run.progress": (e) => showNotice(progressText(e), "info"),
    "approval.requested": (e) => askApproval(e),
    "run.paused": () => {
      markRunning(true, "awaiting_approval");
      if (state.current) setStatus(state.current.el, "awaiting_approval");
      showNotice("Waiting for your approval of a tool call.", "warning");
    },
    "approval.decided": (e) => {
      markRunning(true);
      settleApproval(e.call_id, e.approved ? "approved" : "rejected");
      if (state.current && !document.querySelector(".approval")) setStatus(state.current.el, "streaming");
    },
    "approval.resolved": (e) => settleApproval(e.call_id, e.status === "completed" ? "approved" : "rejected"),
    "message.completed": (e) => {
      const reply = replyFor(e.message, e.agent);
      // Server-rendered Markdown, sanitised on the server: safe to insert as HTML.
      $("body", reply.el).innerHTML = e.html;
      reply.node = null;
      if (reply === state.current) announce(e.content || reply.text, true);
      reply.el.removeAttribute("aria-busy");
      enhanceReply(reply.el);
      reply.el.querySelector(".who").textContent = e.agent || "Assistant";
      $("activity", reply.el).replaceChildren(...(e.activity || []).map((a) => (a.kind === "handoff" ? handoffNote(a.agent) : toolEntry(a))));
      const card = $("card", reply.el);
      card.innerHTML = e.card || "";
      card.hidden = !e.card;
      setStatus(reply.el, e.status);
      follow();
    },
    usage: (e) => {
      const el = document.querySelector(`[data-message="${e.message}"] [data-role="usage"]`);
      if (!el) return;
      if (el.hidden) addToTotals(e);  // a reply rendered by the server is in the totals already
      el.textContent = `${fmt(e.total_tokens)} tokens (${fmt(e.input_tokens)} in, ${fmt(e.output_tokens)} out${e.cached_tokens ? `, ${fmt(e.cached_tokens)} cached` : ""}) · ${usd(e.cost)}${e.model ? ` · ${e.model}` : ""}`;
      el.hidden = false;
      spendBudget(e.total_tokens);
    },
    "run.finished": (e) => {
      setBusy(false);
      setJump(false);
      markRunning(false);
      document.querySelectorAll(".approval").forEach((el) => el.remove());
      if (e.status === "failed" && e.error) showNotice(e.error, "error");
      else if (e.status === "cancelled") showNotice("Stopped.", "info");
      else if (e.status !== "blocked") hideNotice();
      state.current = null;
    },
    error: (e) => {
      if (e.request_id && e.request_id === state.pendingRequest) state.pendingRequest = null;
      showNotice(e.message, e.code === "busy" ? "warning" : "error");
    },
    pong: () => {},
  };

  // Events about any of the user's conversations, heard by every tab of the user (the group
  // `user.<id>`): they update the sidebar, and this page when they are about its conversation.
  const everyTab = {
    "conversation.renamed": (e) => {
      setTitle(e.conversation, e.title);
      const heading = root.querySelector(".chat-head h1");
      if (e.conversation === conversation && heading) delete heading.dataset.untitled;
    },
    "conversation.activity": (e) => showActivity(e),
    "feedback.updated": (e) => {
      const form = document.querySelector(`[data-message="${CSS.escape(e.message)}"] form[data-role="feedback"]`);
      if (form) setFeedback(form, e.rating === "none" ? "" : e.rating, e.comment);
    },
  };

  function handle(event) {
    if (everyTab[event.type]) {
      everyTab[event.type](event);
      return;
    }
    if (event.conversation && event.conversation !== conversation) return;
    if (event.run && event.seq) {
      if (event.run === state.run && event.seq <= state.seq) return;
      if (event.run !== state.run) {
        state.run = event.run;
      }
      state.seq = event.seq;
    }
    const handler = handlers[event.type];
    if (handler) handler(event);
  }

  // --- rendering ------------------------------------------------------------------
  function buildMessage(role, id, who) {
    const el = template.content.firstElementChild.cloneNode(true);
    el.classList.add(`msg-${role}`);
    el.dataset.message = id;
    el.querySelector(".who").textContent = who;
    el.id = `m-${id}`;
    if (role === "user") {
      $("status", el).remove();
      $("activity", el).remove();
      $("card", el).remove();
      $("usage", el).remove();
      $("actions", el).remove();
      $("body", el).classList.remove("markdown");
    } else {
      const form = $("feedback", el);
      form.action = root.dataset.feedbackUrl.replace("00000000-0000-0000-0000-000000000000", id);
      const comment = form.querySelector("textarea");
      comment.id = `comment-${id}`;
      form.querySelector(`label[for="comment-new"]`).htmlFor = comment.id;
    }
    return el;
  }

  function replyFor(id, agent) {
    let reply = state.replies.get(id);
    if (reply) return reply;
    let el = document.querySelector(`[data-message="${id}"]`);
    if (!el) {
      el = buildMessage("assistant", id, agent || "Assistant");
      append(el);
    }
    reply = { el, text: "" };
    state.replies.set(id, reply);
    return reply;
  }

  function append(el) {
    const empty = $("empty");
    if (empty) empty.remove();
    messagesEl.append(el);
    follow();
  }

  function toolEntry(call) {
    const details = document.createElement("details");
    details.className = "tool";
    details.dataset.call = call.call_id;
    const summary = document.createElement("summary");
    const name = document.createElement("span");
    name.className = "tool-name";
    name.textContent = call.name;
    const args = document.createElement("code");
    args.className = "tool-args";
    args.textContent = typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments);
    const status = document.createElement("span");
    status.className = "tool-status";
    summary.append(name, " ", args, " ", status);
    const output = document.createElement("pre");
    output.className = "tool-output";
    output.tabIndex = 0;
    output.textContent = call.output || "";
    details.append(summary, output);
    setToolStatus(details, call.status || "running");
    return details;
  }

  function setToolStatus(entry, status) {
    entry.className = `tool tool-${status}`;
    entry.querySelector(".tool-status").textContent = status.replace("_", " ");
  }

  function handoffNote(agent) {
    const note = document.createElement("div");
    note.className = "note handoff";
    note.append("Handed off to ");
    const strong = document.createElement("strong");
    strong.textContent = agent;
    note.append(strong);
    return note;
  }

  // --- approvals (human in the loop) -------------------------------------------------
  function askApproval(a) {
    const reply = state.current;
    if (!reply) return;
    let entry = reply.el.querySelector(`[data-call="${CSS.escape(a.call_id)}"]`);
    if (!entry) {
      entry = toolEntry({ call_id: a.call_id, name: a.name, arguments: a.arguments, status: "awaiting_approval" });
      $("activity", reply.el).append(entry);
    }
    setToolStatus(entry, "awaiting_approval");
    entry.open = true;
    if (entry.querySelector(".approval")) return;
    const box = document.createElement("div");
    box.className = "approval";
    const reason = document.createElement("input");
    reason.type = "text";
    reason.placeholder = "Reason (optional)";
    reason.maxLength = 1000;
    const approve = document.createElement("button");
    approve.type = "button";
    approve.className = "primary";
    approve.textContent = "Approve";
    const reject = document.createElement("button");
    reject.type = "button";
    reject.textContent = "Reject";
    const decide = (ok) => {
      approve.disabled = reject.disabled = true;
      send({ type: "approval.decide", conversation, call_id: a.call_id, approve: ok, reason: reason.value });
      textarea.focus();
    };
    approve.addEventListener("click", () => decide(true));
    reject.addEventListener("click", () => decide(false));
    box.append(reason, approve, reject);
    entry.append(box);
    follow();
  }

  function settleApproval(callId, status) {
    const entry = document.querySelector(`[data-call="${CSS.escape(callId)}"]`);
    if (!entry) return;
    const box = entry.querySelector(".approval");
    if (box) box.remove();
    setToolStatus(entry, status === "approved" ? "running" : "rejected");
    hideNotice();
  }

  // --- edit the last question, regenerate the last reply -----------------------------
  function refreshTurnActions() {
    document.querySelectorAll(".turn-action").forEach((el) => el.remove());
    if (state.busy) return;
    const last = messagesEl.querySelector("article.msg:last-of-type");
    const question = [...messagesEl.querySelectorAll("article.msg-user")].pop();
    if (last && last.classList.contains("msg-assistant")) {
      last.querySelector(".msg-head").append(turnAction("Regenerate", () => {
        send({ type: "message.regenerate", conversation, request_id: newRequestId(), ...modelChoice() });
      }));
    }
    if (question && question.dataset.message) {
      question.querySelector(".msg-head").append(turnAction("Edit", () => {
        const body = $("body", question);
        const edited = window.prompt("Edit your message", body.textContent);
        if (edited && edited.trim() && edited !== body.textContent) {
          send({ type: "message.edit", conversation, message: question.dataset.message, content: edited, request_id: newRequestId(), ...modelChoice() });
        }
      }));
    }
  }

  function turnAction(label, onClick) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link turn-action";
    button.textContent = label;
    button.addEventListener("click", onClick);
    return button;
  }

  const newRequestId = () => `r${Date.now()}${Math.random().toString(16).slice(2, 8)}`;

  function setStatus(el, status) {
    el.dataset.status = status;
    const badge = $("status", el);
    if (badge) badge.textContent = (status.charAt(0).toUpperCase() + status.slice(1)).replace("_", " ");
    const error = $("error", el);
    if (error && status === "completed") error.hidden = true;
  }

  function setBusy(busy) {
    state.busy = busy;
    stopButton.hidden = !busy;
    sendButton.disabled = busy;
    refreshTurnActions();
  }

  // This conversation's entry in the sidebar: to the top while it runs, with a "running" mark.
  function markRunning(running, status = "running") {
    const item = sidebarItem(conversation);
    if (item && (running || item.hasAttribute("data-running"))) markItem(item, running, status);
  }

  const sidebarItem = (id) => document.querySelector(`[data-role="sidebar-list"] li.conv[data-conversation="${CSS.escape(id)}"]`);

  // A conversation with new activity goes to the top; while a run holds it, it is marked
  // "running" (or "needs approval" while a tool call waits for the user).
  function markItem(item, running, status) {
    const list = item.parentElement;
    if (list.firstElementChild !== item) list.prepend(item);
    item.toggleAttribute("data-running", running);
    item.toggleAttribute("data-waiting", running && status === "awaiting_approval");
    const mark = item.querySelector('[data-role="running"]');
    if (!mark) return;
    mark.hidden = !running;
    mark.textContent = status === "awaiting_approval" ? " · needs approval" : " · running";
  }

  // Activity in another tab, or through the API: a conversation this sidebar does not list
  // yet (new, or further down than loaded) is fetched as the server renders it. Only the
  // latest event of each conversation counts, in whatever order the fetches finish.
  const latestActivity = new Map();
  const fetchingItems = new Map();
  async function showActivity(e) {
    latestActivity.set(e.conversation, e);
    let item = sidebarItem(e.conversation);
    if (!item) {
      if (!fetchingItems.has(e.conversation)) fetchingItems.set(e.conversation, fetchSidebarItem(e.conversation));
      const fetched = await fetchingItems.get(e.conversation);
      fetchingItems.delete(e.conversation);
      item = sidebarItem(e.conversation) || (fetched && insertSidebarItem(fetched));
      if (!item) return;
    }
    const latest = latestActivity.get(e.conversation);
    markItem(item, latest.running, latest.status);
    const title = item.querySelector(".conv-title");
    if (latest.title && title && title.textContent !== latest.title) setTitle(latest.conversation, latest.title);
  }

  async function fetchSidebarItem(id) {
    const list = document.querySelector('[data-role="sidebar-list"]');
    const url = `${list.dataset.itemUrl}?${new URLSearchParams({ conversation: id, current: conversation })}`;
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) return null;
      return fragment(await response.text()).querySelector("li.conv");
    } catch (err) {
      return null; // offline: the list catches up on the next reload
    }
  }

  function insertSidebarItem(item) {
    const list = document.querySelector('[data-role="sidebar-list"]');
    const empty = list.querySelector(".conv-empty");
    if (empty) empty.remove();
    list.prepend(item);
    return item;
  }

  function setTitle(id, title) {
    document.querySelectorAll(`[data-title-for="${CSS.escape(id)}"]`).forEach((el) => {
      el.textContent = title;
    });
    document.querySelectorAll(`form[data-role="rename"][data-conversation="${CSS.escape(id)}"] input[name="title"]`).forEach((input) => {
      if (input !== document.activeElement) input.value = title; // never under the user's typing
    });
    document.querySelectorAll(`li.conv[data-conversation="${CSS.escape(id)}"] .item-menu > summary`).forEach((summary) => {
      summary.setAttribute("aria-label", `Actions for “${title}”`);
    });
    if (id === conversation) document.title = `${title} · Agents Chat`;
  }

  function showNotice(text, kind) {
    noticeEl.textContent = text;
    noticeEl.dataset.kind = kind;
    noticeEl.hidden = false;
  }

  function hideNotice() {
    noticeEl.hidden = true;
  }

  function progressText(e) {
    if (e.stage === "queued") return `Waiting for the model: ${e.position} request(s) ahead of yours…`;
    if (e.stage === "generating") return "The model is answering…";
    if (e.stage === "checking") return "Checking the reply before showing it…";
    if (e.stage === "searching" && e.total) return `Searching ${e.done}/${e.total}…`;
    return `${e.stage.charAt(0).toUpperCase()}${e.stage.slice(1)}…`;
  }

  function reloadIfStuck() {
    // The run we watched ended while we were away and its events are gone: the page is stale.
    if (!state.busy && document.querySelector('[data-status="streaming"]')) location.reload();
  }

  // --- scrolling: follow the stream unless the user scrolled up to read ------------------
  function scrollDown() {
    messagesEl.scrollTop = messagesEl.scrollHeight;
    state.pinned = true;
    setJump(false);
  }

  function follow() {
    if (state.pinned) scrollDown();
    else setJump(true);
  }

  function setJump(show) {
    jumpButton.hidden = !show;
  }

  messagesEl.addEventListener("scroll", () => {
    const fromBottom = messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight;
    state.pinned = fromBottom < 40;
    if (state.pinned) setJump(false);
  }, { passive: true });
  jumpButton.addEventListener("click", () => {
    scrollDown();
    textarea.focus();
  });

  // --- screen readers: announce new sentences of a streaming reply, never the whole text ---
  function announce(text, final) {
    if (!text.startsWith(state.spoken)) state.spoken = ""; // a different reply began
    const fresh = text.slice(state.spoken.length);
    // Whole sentences (or lines) while streaming; whatever is left when the reply ends.
    const cut = final ? fresh.length : Math.max(fresh.lastIndexOf(". "), fresh.lastIndexOf("\n"), fresh.lastIndexOf("? "), fresh.lastIndexOf("! ")) + 1;
    if (cut <= 0) return;
    const piece = fresh.slice(0, cut).trim();
    state.spoken += fresh.slice(0, cut);
    if (!piece) return;
    const line = document.createElement("p");
    line.textContent = piece;
    announcer.append(line);
    // Only additions are announced; old lines can go without being read again.
    while (announcer.childElementCount > 20) announcer.firstElementChild.remove();
  }

  // The conversation's totals in the footer add each reply as it is stored.
  function addToTotals(e) {
    const totals = $("totals");
    const label = $("conversation-usage");
    if (!totals || !label) return;
    totals.dataset.tokens = Number(totals.dataset.tokens) + Number(e.total_tokens || 0);
    if (e.cost === null || e.cost === undefined) {
      if (e.total_tokens) totals.dataset.unknown = Number(totals.dataset.unknown) + 1;
    } else {
      totals.dataset.cost = Number(totals.dataset.cost) + Number(e.cost);
    }
    const cost = Number(totals.dataset.cost);
    const unknown = Number(totals.dataset.unknown) > 0;
    const costText = unknown ? (cost ? `≥ ${usd(cost)}, some costs unknown` : "cost unknown") : usd(cost);
    label.textContent = `${fmt(totals.dataset.tokens)} tokens · ${costText}`;
  }

  // The day's remaining token budget in the footer counts each reply down.
  function spendBudget(tokens) {
    const budget = $("budget");
    if (!budget || !tokens) return;
    const left = Math.max(0, Number(budget.dataset.remaining) - tokens);
    budget.dataset.remaining = left;
    budget.textContent = `${fmt(left)} tokens left today`;
    budget.classList.toggle("exceeded", left === 0);
  }

  const fmt = (n) => Number(n || 0).toLocaleString();
  function usd(cost) {
    if (cost === null || cost === undefined) return "cost unknown";
    const value = Number(cost);
    if (value === 0) return "$0";
    return value < 0.01 ? `$${value.toFixed(6)}` : `$${value.toFixed(4)}`;
  }

  // --- composer -----------------------------------------------------------------------
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = textarea.value;
    if (!content.trim() || state.busy) return;
    state.pendingRequest = newRequestId();
    if (!send({ type: "message.send", conversation, content, request_id: state.pendingRequest, ...modelChoice() })) {
      showNotice("Not connected. Your message is kept; send it again once reconnected.", "error");
    }
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  // The composer grows with its text (up to 40% of the window; CSS caps it), then scrolls.
  function fitComposer() {
    textarea.style.height = "auto";
    textarea.style.height = `${textarea.scrollHeight + 2}px`;
  }
  textarea.addEventListener("input", fitComposer);

  function stop() {
    send({ type: "run.cancel", conversation });
    textarea.focus();
  }
  stopButton.addEventListener("click", stop);

  // Esc stops a streaming reply (unless it closes a menu or the sidebar first).
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    if (closeDrawer()) return;
    if (state.busy) {
      event.preventDefault();
      stop();
    }
  });

  // --- copy buttons: every code block and every reply -------------------------------------
  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (err) {
      // No clipboard API (plain http on another host): copy through a selected textarea.
      const scratch = document.createElement("textarea");
      scratch.value = text;
      scratch.setAttribute("readonly", "");
      scratch.className = "visually-hidden";
      document.body.append(scratch);
      scratch.select();
      document.execCommand("copy");
      scratch.remove();
    }
    button.dataset.copied = "";
    const label = button.getAttribute("aria-label");
    button.setAttribute("aria-label", "Copied");
    announcer.append(Object.assign(document.createElement("p"), { textContent: "Copied to the clipboard." }));
    setTimeout(() => {
      delete button.dataset.copied;
      button.setAttribute("aria-label", label);
    }, 1500);
  }

  function copyButton(label, getText) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "icon-button copy";
    button.setAttribute("aria-label", label);
    const icon = document.querySelector('[data-role="copy-reply"] svg');
    if (icon) button.append(icon.cloneNode(true));
    button.addEventListener("click", () => copyText(getText(), button));
    return button;
  }

  function enhanceReply(el) {
    const body = $("body", el);
    body.querySelectorAll("pre").forEach((pre) => {
      if (pre.parentElement.classList.contains("code-block")) return;
      const code = pre.querySelector("code");
      const language = code && [...code.classList].find((c) => c.startsWith("language-"));
      const box = document.createElement("div");
      box.className = "code-block";
      const head = document.createElement("div");
      head.className = "code-head";
      const name = document.createElement("span");
      name.className = "code-lang";
      name.textContent = language ? language.slice("language-".length) : "code";
      head.append(name, copyButton(`Copy ${name.textContent} code`, () => pre.textContent));
      pre.replaceWith(box);
      box.append(head, pre);
    });
    // Long code lines and wide tables scroll sideways: keyboard users must reach them too.
    body.querySelectorAll("pre, table").forEach((el) => {
      el.tabIndex = 0;
    });
    const copy = $("copy-reply", el);
    if (copy && !copy.dataset.ready) {
      copy.dataset.ready = "";
      copy.hidden = false;
      copy.addEventListener("click", () => copyText(body.innerText.trim(), copy));
    }
  }

  // --- feedback on a reply: thumbs and a comment, saved with fetch (a plain post without JS) ---
  messagesEl.addEventListener("submit", async (event) => {
    const form = event.target.closest('form[data-role="feedback"]');
    if (!form) return;
    event.preventDefault();
    const data = new FormData(form);
    if (event.submitter && event.submitter.name) data.set(event.submitter.name, event.submitter.value);
    const status = $("feedback-status", form);
    try {
      const result = await postForm(form, data);
      setFeedback(form, result.rating, result.comment);
      status.textContent = result.rating ? (data.get("comment") ? "Thanks, comment saved." : "Thanks for your feedback.") : "Feedback removed.";
      if (result.rating && event.submitter && event.submitter.dataset.thumb) {
        form.querySelector(".feedback-comment").open = true;
      }
    } catch (err) {
      status.textContent = err.message;
    }
  });

  function setFeedback(form, rating, comment) {
    form.dataset.rating = rating;
    form.querySelectorAll("[data-thumb]").forEach((thumb) => {
      const chosen = thumb.dataset.thumb === rating;
      thumb.setAttribute("aria-pressed", String(chosen));
      thumb.value = chosen ? "" : thumb.dataset.thumb; // pressing it again takes it back
    });
    $("send-comment", form).value = rating;
    form.querySelector("textarea").value = comment;
    form.querySelector(".feedback-comment summary").textContent = comment ? "Edit comment" : "Add a comment";
  }

  async function postForm(form, data) {
    const response = await fetch(form.action, {
      method: "POST",
      body: data,
      headers: { Accept: "application/json", "X-CSRFToken": data.get("csrfmiddlewaretoken") },
      credentials: "same-origin",
    });
    let result = {};
    try {
      result = await response.json();
    } catch (err) {
      throw new Error("The server did not answer; try again.");
    }
    if (!response.ok) throw new Error(result.error || "Something went wrong; try again.");
    return result;
  }

  // --- rename a conversation (header menu or sidebar), saved with fetch ---------------------
  document.addEventListener("submit", async (event) => {
    const form = event.target.closest('form[data-role="rename"]');
    if (!form) return;
    event.preventDefault();
    const error = $("rename-error", form);
    error.hidden = true;
    try {
      const result = await postForm(form, new FormData(form));
      setTitle(result.conversation, result.title);
      const menu = form.closest("details");
      if (menu) {
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });

  // --- sidebar: collapsible on a desktop, a drawer on a phone ------------------------------
  const sidebarToggle = $("sidebar-toggle");
  const sidebarClose = document.querySelector('[data-role="sidebar-close"]');
  const backdrop = document.querySelector('[data-role="sidebar-backdrop"]');
  const narrow = window.matchMedia("(max-width: 860px)");

  function sidebarOpen() {
    return narrow.matches ? layout.classList.contains("drawer-open") : !layout.classList.contains("sidebar-collapsed");
  }

  function setSidebar(open, { focus = false } = {}) {
    if (narrow.matches) {
      layout.classList.toggle("drawer-open", open);
      backdrop.hidden = !open;
      if (open && focus) sidebar.querySelector("input, button, a").focus();
    } else {
      layout.classList.toggle("sidebar-collapsed", !open);
      try {
        localStorage.setItem("sidebar", open ? "open" : "collapsed");
      } catch (err) {
        /* private mode: the choice just is not remembered */
      }
    }
    sidebarToggle.setAttribute("aria-expanded", String(sidebarOpen()));
  }

  function closeDrawer() {
    if (!narrow.matches || !layout.classList.contains("drawer-open")) return false;
    setSidebar(false);
    sidebarToggle.focus();
    return true;
  }

  sidebarToggle.hidden = false;
  sidebarClose.hidden = false;
  layout.classList.add("js");
  try {
    if (localStorage.getItem("sidebar") === "collapsed") layout.classList.add("sidebar-collapsed");
  } catch (err) {
    /* no storage: the sidebar starts open */
  }
  sidebarToggle.setAttribute("aria-expanded", String(sidebarOpen()));
  sidebarToggle.addEventListener("click", () => setSidebar(!sidebarOpen(), { focus: true }));
  sidebarClose.addEventListener("click", () => {
    if (narrow.matches) closeDrawer();
    else setSidebar(false);
  });
  backdrop.addEventListener("click", closeDrawer);
  narrow.addEventListener("change", () => {
    layout.classList.remove("drawer-open");
    backdrop.hidden = true;
    sidebarToggle.setAttribute("aria-expanded", String(sidebarOpen()));
  });

  // --- sidebar: "Load more" fetches the next page as an HTML fragment ------------------------
  const sidebarList = document.querySelector('[data-role="sidebar-list"]');
  function fragment(html) {
    const holder = document.createElement("template");
    holder.innerHTML = html; // our own server-rendered, escaped template
    return holder.content;
  }
  sidebarList.addEventListener("click", async (event) => {
    const link = event.target.closest('[data-role="load-more"]');
    if (!link) return;
    event.preventDefault();
    link.textContent = "Loading…";
    try {
      const response = await fetch(link.dataset.url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(await response.text());
      const item = link.closest("li");
      const next = fragment(await response.text());
      const first = next.querySelector("a");
      item.replaceWith(next);
      if (first) first.focus();
    } catch (err) {
      link.textContent = "Could not load more; try again";
    }
  });

  // --- sidebar: search titles and messages as the user types --------------------------------
  const searchForm = document.querySelector('[data-role="search"]');
  const searchInput = searchForm.querySelector("input");
  const results = document.querySelector('[data-role="search-results"]');
  const sidebarNav = document.querySelector('[data-role="sidebar-nav"]');
  let searchTimer = null;
  let searchSeq = 0;
  async function runSearch() {
    const query = searchInput.value.trim();
    const seq = ++searchSeq;
    if (!query) {
      results.hidden = true;
      results.replaceChildren();
      sidebarNav.hidden = false;
      return;
    }
    const url = `${searchForm.action}?${new URLSearchParams({ q: query, fragment: "1" })}`;
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      const html = await response.text();
      if (seq !== searchSeq) return; // an older answer arriving late
      results.replaceChildren(fragment(html));
      results.hidden = false;
      sidebarNav.hidden = true;
    } catch (err) {
      /* offline: keep the list as it is */
    }
  }
  searchInput.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, 250);
  });
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    runSearch();
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && searchInput.value) {
      event.preventDefault();
      searchInput.value = "";
      runSearch();
    }
  });

  // --- start ------------------------------------------------------------------------------
  messagesEl.querySelectorAll("article.msg-assistant").forEach(enhanceReply);
  setBusy(state.busy);
  connect();
  // A link to one message (from search) shows that message; otherwise the latest.
  function showLinkedMessage() {
    const target = location.hash.startsWith("#m-") && document.getElementById(location.hash.slice(1));
    if (!target) return false;
    document.querySelectorAll("article.msg.highlighted").forEach((el) => el.classList.remove("highlighted"));
    target.scrollIntoView({ block: "center" });
    target.classList.add("highlighted");
    state.pinned = false;
    return true;
  }
  window.addEventListener("hashchange", () => {
    if (showLinkedMessage()) closeDrawer();
  });
  if (!showLinkedMessage()) scrollDown();
  // Keyboard users start typing at once; on touch screens that would pop up the keyboard.
  if (!window.matchMedia("(pointer: coarse)").matches) textarea.focus({ preventScroll: true });
})();
