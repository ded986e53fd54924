// Chat page client: one socket per page, streamed replies, reconnects with back-off and
// resumes from the last event it saw. Model output is inserted as text; only the server's
// sanitised HTML (message.completed) is ever inserted as HTML.
(function () {
  "use strict";

  const root = document.getElementById("chat");
  if (!root) return;

  const conversation = root.dataset.conversation;
  const $ = (name, scope) => (scope || root).querySelector(`[data-role="${name}"]`);
  const messagesEl = $("messages");
  const composer = $("composer");
  const textarea = composer.querySelector("textarea");
  const sendButton = $("send");
  const stopButton = $("stop");
  const noticeEl = $("notice");
  const connectionEl = $("connection");
  const template = document.getElementById("message-template");

  const state = {
    socket: null,
    retries: 0,
    run: root.dataset.activeRun || null, // the run we follow, for replay after reconnects
    seq: 0, // the last event of that run we rendered
    busy: Boolean(root.dataset.activeRun),
    pendingRequest: null,
    replies: new Map(), // message id -> {el, text}
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
      if (e.request_id && e.request_id === state.pendingRequest) {
        textarea.value = "";
        state.pendingRequest = null;
      }
      if (!document.querySelector(`[data-message="${e.message}"]`)) {
        const el = buildMessage("user", e.message, "You");
        $("body", el).textContent = e.content;
        append(el);
      }
      // The server titles a conversation after its first message.
      const title = root.querySelector(".chat-head h1");
      if (title && title.dataset.untitled !== undefined) {
        const line = e.content.split(/\s+/).join(" ").trim();
        title.textContent = line.length <= 60 ? line : `${line.slice(0, 59)}…`;
        delete title.dataset.untitled;
        document.title = `${title.textContent} · Agents Chat`;
      }
    },
    "run.started": (e) => {
      setBusy(true);
      hideNotice();
      const reply = replyFor(e.message, e.agent);
      reply.text = "";
      $("body", reply.el).textContent = "";
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
      $("body", reply.el).textContent = reply.text;
      scrollDown();
    },
    "tool.called": (e) => {
      if (state.current) $("activity", state.current.el).append(toolEntry(e));
      scrollDown();
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
      if (agentEl) agentEl.textContent = e.agent;
    },
    "guardrail.tripped": (e) => showNotice(`Blocked by the ${e.guardrail} check: ${e.message}`, "warning"),
    "run.progress": (e) => showNotice(progressText(e), "info"),
    "approval.requested": (e) => askApproval(e),
    "run.paused": () => {
      if (state.current) setStatus(state.current.el, "awaiting_approval");
      showNotice("Waiting for your approval of a tool call.", "warning");
    },
    "approval.decided": (e) => {
      settleApproval(e.call_id, e.approved ? "approved" : "rejected");
      if (state.current && !document.querySelector(".approval")) setStatus(state.current.el, "streaming");
    },
    "approval.resolved": (e) => settleApproval(e.call_id, e.status === "completed" ? "approved" : "rejected"),
    "message.completed": (e) => {
      const reply = replyFor(e.message, e.agent);
      // Server-rendered Markdown, sanitised on the server: safe to insert as HTML.
      $("body", reply.el).innerHTML = e.html;
      reply.el.querySelector(".who").textContent = e.agent || "Assistant";
      $("activity", reply.el).replaceChildren(...(e.activity || []).map((a) => (a.kind === "handoff" ? handoffNote(a.agent) : toolEntry(a))));
      const card = $("card", reply.el);
      card.innerHTML = e.card || "";
      card.hidden = !e.card;
      setStatus(reply.el, e.status);
      scrollDown();
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

  function handle(event) {
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
    if (role === "user") {
      $("status", el).remove();
      $("activity", el).remove();
      $("card", el).remove();
      $("usage", el).remove();
      $("body", el).classList.remove("markdown");
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
    scrollDown();
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
    };
    approve.addEventListener("click", () => decide(true));
    reject.addEventListener("click", () => decide(false));
    box.append(reason, approve, reject);
    entry.append(box);
    scrollDown();
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
        send({ type: "message.regenerate", conversation, request_id: newRequestId() });
      }));
    }
    if (question && question.dataset.message) {
      question.querySelector(".msg-head").append(turnAction("Edit", () => {
        const body = $("body", question);
        const edited = window.prompt("Edit your message", body.textContent);
        if (edited && edited.trim() && edited !== body.textContent) {
          send({ type: "message.edit", conversation, message: question.dataset.message, content: edited, request_id: newRequestId() });
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

  function scrollDown() {
    messagesEl.scrollTop = messagesEl.scrollHeight;
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
    if (!send({ type: "message.send", conversation, content, request_id: state.pendingRequest })) {
      showNotice("Not connected. Your message is kept; send it again once reconnected.", "error");
    }
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  stopButton.addEventListener("click", () => send({ type: "run.cancel", conversation }));

  setBusy(state.busy);
  connect();
  scrollDown();
})();
