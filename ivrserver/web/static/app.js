// ivrserver agent desktop. No framework, no build step.
// Rule: every value from the server is rendered with textContent / createElement; no HTML parsing of data.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;

  // How often the badge re-reads GET /api/v1/me: the server's agent state is the truth (wrap-up
  // ends by time alone, with no event); often while a call is in progress, rarely when idle.
  const STATE_POLL_BUSY_MS = 2000;
  const STATE_POLL_IDLE_MS = 15000;
  const STATE_AFTER_EVENT_MS = 800;
  const BUSY_STATES = new Set(["ringing", "on_call", "wrap_up"]);

  const state = {
    token: store.getItem("ivr.token"),
    agent: null,
    ws: null,
    lastSeq: 0, // last event number seen …
    epoch: null, // … in this numbering (the server's random id; a new one after Redis lost its data)
    replayLeft: 0, // events of the current replay still to come: history, they do not move the badge
    retry: 0,
    reconnectTimer: null,
    stateTimer: null,
    stateAsk: 0, // the newest GET /api/v1/me for the badge: older answers are ignored
    pops: new Map(), // call_id -> latest pop
    recent: new Map(), // call_id -> its button in "Recent pops"
    current: null, // the pop on screen
  };

  // ---- safe DOM helpers --------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }
  function fact(dl, label, value) {
    if (value === undefined || value === null || value === "") return;
    dl.appendChild(el("dt", null, label));
    dl.appendChild(el("dd", null, value));
  }
  function when(epochSeconds) {
    if (typeof epochSeconds !== "number") return "";
    return new Date(epochSeconds * 1000).toLocaleString();
  }
  function label(text) {
    return String(text || "").replace(/_/g, " ");
  }

  // ---- REST ---------------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = {};
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (resp.status === 401 && path !== "/api/v1/login") logout(false);
    return { ok: resp.ok, status: resp.status, data };
  }

  // ---- login / logout -----------------------------------------------------------------------
  async function login(ev) {
    ev.preventDefault();
    $("login-error").textContent = "";
    const agent = $("login-agent").value.trim();
    const password = $("login-password").value;
    const r = await api("POST", "/api/v1/login", { agent, password });
    if (!r.ok) {
      $("login-error").textContent = (r.data && r.data.error) || "Login failed";
      return;
    }
    $("login-password").value = "";
    state.token = r.data.token;
    store.setItem("ivr.token", state.token);
    await enter();
  }

  async function logout(tellServer) {
    if (tellServer && state.token) await api("POST", "/api/v1/logout", {});
    state.token = null;
    state.agent = null;
    store.removeItem("ivr.token");
    if (state.ws) state.ws.close();
    state.ws = null;
    clearTimeout(state.reconnectTimer);
    clearTimeout(state.stateTimer);
    state.stateAsk++;
    // The next person at this browser sees nothing of this agent's callers.
    state.pops.clear();
    state.recent.clear();
    state.current = null;
    clear($("recent"));
    $("pop").hidden = true;
    $("idle").hidden = false;
    $("who").hidden = true;
    $("desk-view").hidden = true;
    $("login-view").hidden = false;
  }

  async function enter() {
    const r = await api("GET", "/api/v1/me");
    if (!r.ok) return;
    state.agent = r.data.agent;
    // A fresh page asks for the whole backlog (last_seq 0) so a reload mid-call shows the pop again;
    // reconnects within the page's life ask only for what they missed.
    state.lastSeq = 0;
    state.epoch = null;
    $("agent-name").textContent = state.agent.name + " (" + state.agent.id + ")" +
      (state.agent.supervisor ? " · supervisor" : "");
    showState(r.data.state || "unknown");
    scheduleStateRefresh(badgePollMs());
    $("login-view").hidden = true;
    $("who").hidden = false;
    $("desk-view").hidden = false;
    connect();
  }

  function showState(s) {
    const badge = $("state-badge");
    badge.dataset.state = s;
    badge.textContent = label(s);
  }

  function badgePollMs() {
    return BUSY_STATES.has($("state-badge").dataset.state) ? STATE_POLL_BUSY_MS : STATE_POLL_IDLE_MS;
  }

  function scheduleStateRefresh(ms) {
    clearTimeout(state.stateTimer);
    if (state.token) state.stateTimer = setTimeout(refreshState, ms);
  }

  // The badge shows what the server says (GET /api/v1/me "state"); events only move it ahead of
  // the next read. A null state (the server has not seen the agent's phone yet) changes nothing.
  async function refreshState() {
    const ask = ++state.stateAsk;
    clearTimeout(state.stateTimer);
    let r = null;
    try {
      r = await api("GET", "/api/v1/me");
    } catch (e) {
      r = null; // offline: try again later
    }
    if (ask !== state.stateAsk || !state.token) return;
    if (r && r.ok && r.data && typeof r.data.state === "string") showState(r.data.state);
    scheduleStateRefresh(badgePollMs());
  }

  async function requestState(s) {
    const r = await api("POST", "/api/v1/me/state", { state: s });
    if (r.ok) {
      state.stateAsk++; // an older read must not undo the click
      showState(s);
      scheduleStateRefresh(STATE_AFTER_EVENT_MS * 2);
    }
  }

  // ---- websocket ----------------------------------------------------------------------------
  function setConn(s) {
    const c = $("conn");
    c.dataset.conn = s;
    c.textContent = s === "on" ? "live" : s === "connecting" ? "connecting…" : "offline";
  }

  function connect() {
    if (!state.token) return;
    setConn("connecting");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/ws/agent");
    state.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: state.token, last_seq: state.lastSeq, epoch: state.epoch }));
    };
    ws.onmessage = (m) => {
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      onFrame(ws, msg);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      setConn("off");
      state.ws = null;
      if (!state.token) return;
      const delay = Math.min(10000, 500 * Math.pow(2, state.retry++));
      state.reconnectTimer = setTimeout(connect, delay);
    };
  }

  function onFrame(ws, msg) {
    if (!msg || typeof msg.type !== "string") return;
    switch (msg.type) {
      case "welcome":
        state.retry = 0;
        setConn("on");
        scheduleStateRefresh(0); // the state may have changed while the socket was down
        break;
      case "replay":
        // The numbering the next events follow: what we asked for, or (reset) a new numbering from
        // 0 because Redis lost the old one; then `count` events of history.
        if (typeof msg.after === "number") state.lastSeq = msg.after;
        state.epoch = typeof msg.epoch === "string" ? msg.epoch : null;
        state.replayLeft = typeof msg.count === "number" ? msg.count : 0;
        break;
      case "event": {
        if (typeof msg.seq !== "number") return;
        const epoch = typeof msg.epoch === "string" ? msg.epoch : null;
        let resync = false;
        if (epoch !== state.epoch) {
          // Another numbering without a reset first: accept it rather than discard everything
          // numbered below what we saw, and fetch what came before this event from 0.
          resync = state.epoch !== null && msg.seq > 1;
          state.epoch = epoch;
          state.lastSeq = 0;
        }
        if (msg.seq <= state.lastSeq) return;
        state.lastSeq = msg.seq;
        const live = state.replayLeft === 0;
        if (!live) state.replayLeft--;
        onEvent(msg.data || {}, msg.seq, ws, live);
        if (!live && state.replayLeft === 0) scheduleStateRefresh(0);
        if (resync) {
          state.lastSeq = 0;
          ws.close(); // reconnects with last_seq 0 in this epoch: the whole backlog again
        }
        break;
      }
      case "error":
        if (msg.code === "auth_failed") logout(false);
        break;
      default:
        break;
    }
  }

  // `live`: the event just happened (not replayed history), so it may move the badge at once.
  function onEvent(data, seq, ws, live) {
    if (data.type === "pop" && typeof data.call_id === "string") {
      const known = state.pops.get(data.call_id);
      data.answered = isTalking(data.phase) || Boolean(known && known.answered);
      state.pops.set(data.call_id, data);
      showPop(data);
      addRecent(data);
      ws.send(JSON.stringify({ type: "ack", seq, epoch: state.epoch }));
      if (live) {
        if (data.phase === "ringing") showState("ringing");
        else if (isTalking(data.phase)) showState("on_call");
      }
    } else if (data.type === "pop_phase" && typeof data.call_id === "string") {
      const pop = state.pops.get(data.call_id);
      if (pop) {
        pop.phase = data.phase;
        if (isTalking(data.phase)) pop.answered = true;
        if (state.current && state.current.call_id === data.call_id) showPhase(pop);
        updateRecent(pop);
      }
      if (live) {
        if (isTalking(data.phase)) showState("on_call");
        else if (data.phase === "ended" && pop && pop.answered) showState("wrap_up");
      }
    } else if (data.type === "state" && typeof data.state === "string") {
      if (live) showState(data.state);
    } else {
      return;
    }
    if (live) scheduleStateRefresh(STATE_AFTER_EVENT_MS);
  }

  function isTalking(phase) {
    return phase === "answered" || phase === "transferred";
  }

  // ---- the pop card ------------------------------------------------------------------------
  // The card's phase only: looking at an older pop never changes the agent's state badge.
  function showPhase(pop) {
    const phase = $("pop-phase");
    phase.textContent = label(pop.phase) + (pop.kind === "callback" ? " · callback" : "");
    phase.dataset.phase = String(pop.phase || "");
  }

  function showPop(pop) {
    state.current = pop;
    $("idle").hidden = true;
    $("pop").hidden = false;
    showPhase(pop);
    const c = pop.customer;
    $("pop-name").textContent = c ? c.name : "Unknown caller";
    $("pop-number").textContent = pop.number || "";

    const tags = $("pop-tags");
    clear(tags);
    if (c) {
      tags.appendChild(el("span", "tag tier-" + String(c.tier).replace(/[^a-z]/g, ""), c.tier));
      tags.appendChild(el("span", "tag", c.segment));
      tags.appendChild(el("span", "tag", c.language));
    }

    const facts = $("pop-facts");
    clear(facts);
    if (c) {
      fact(facts, "Customer id", c.id);
      fact(facts, "Account manager", c.account_manager);
      fact(facts, "Account", c.account_number);
      const prefs = c.preferences || {};
      fact(facts, "Call hours", (prefs.allowed_from || "") + "–" + (prefs.allowed_until || "") +
        " " + (prefs.timezone || "") + (prefs.do_not_call ? " · do not call" : ""));
      const attrs = c.attributes || {};
      for (const k of Object.keys(attrs)) fact(facts, label(k), attrs[k]);
    }
    if (pop.transferred_from) fact(facts, "Transferred from", pop.transferred_from);

    const routing = pop.routing || {};
    $("pop-reason").textContent = (routing.reason || "—") + (routing.queue ? " (queue " + routing.queue + ")" : "");

    const cb = pop.callback;
    $("pop-callback").hidden = !cb;
    const cbFacts = $("pop-callback-facts");
    clear(cbFacts);
    if (cb) {
      fact(cbFacts, "Reason", cb.reason);
      fact(cbFacts, "Context", cb.context);
      fact(cbFacts, "Case", cb.case_id);
      fact(cbFacts, "Attempt", cb.attempt);
    }

    const path = $("pop-path");
    clear(path);
    for (const step of pop.ivr_path || []) {
      const li = el("li");
      li.appendChild(el("span", "menu", step.label || step.menu));
      if (step.input) li.appendChild(el("kbd", null, step.input));
      path.appendChild(li);
    }
    if (!(pop.ivr_path || []).length) path.appendChild(el("li", "muted", "no IVR steps"));

    const cases = $("pop-cases");
    clear(cases);
    const select = $("case-select");
    clear(select);
    select.appendChild(el("option", null, "(none)"));
    select.firstChild.value = "";
    for (const k of pop.open_cases || []) {
      const box = el("div", "case sev-" + Number(k.severity));
      const head = el("div", "case-head");
      head.appendChild(el("strong", null, k.summary));
      head.appendChild(el("span", "muted", " #" + k.id + " · severity " + k.severity + " · " + k.age_days + " d old"));
      box.appendChild(head);
      const dl = el("dl", "facts");
      fact(dl, "Still needed", k.still_needed || "—");
      fact(dl, "Next step", k.next_step || "—");
      fact(dl, "Owner", k.owner_agent);
      box.appendChild(dl);
      cases.appendChild(box);
      const opt = el("option", null, k.id + " — " + k.summary);
      opt.value = k.id;
      select.appendChild(opt);
    }
    if (!(pop.open_cases || []).length) cases.appendChild(el("p", "muted", "No open cases."));
    if ((pop.open_cases || []).length) {
      select.value = pop.open_cases[0].id;
      $("case-needed").value = pop.open_cases[0].still_needed || "";
      $("case-next").value = pop.open_cases[0].next_step || "";
    } else {
      $("case-needed").value = "";
      $("case-next").value = "";
    }

    const hist = $("pop-history");
    clear(hist);
    for (const h of pop.history || []) {
      const li = el("li");
      const head = el("div", "tl-head");
      head.appendChild(el("span", "when", when(h.started_at)));
      head.appendChild(el("span", "tag", label(h.kind)));
      head.appendChild(el("span", "tag outcome-" + String(h.outcome).replace(/[^a-z_]/g, ""), label(h.outcome)));
      if (h.disposition) head.appendChild(el("span", "tag", label(h.disposition)));
      li.appendChild(head);
      if (h.notes) li.appendChild(el("p", "notes", h.notes));
      const meta = [];
      if ((h.agents || []).length) meta.push("agent " + h.agents.join(", "));
      if ((h.ivr_path || []).length) meta.push("IVR " + h.ivr_path.join(" › "));
      if (meta.length) li.appendChild(el("div", "muted", meta.join(" · ")));
      hist.appendChild(li);
    }
    if (!(pop.history || []).length) hist.appendChild(el("li", "muted", "First contact."));

    $("notes-contact").textContent = pop.contact_id ? "Contact " + pop.contact_id : "No contact id for this call.";
    $("notes-status").textContent = "";
    const prefs = (c && c.preferences) || {};
    $("callback-hint").textContent = c
      ? "Customer time zone " + (prefs.timezone || "?") + "; allowed " + (prefs.allowed_from || "?") + "–" +
        (prefs.allowed_until || "?")
      : "Unknown caller";
  }

  // What "Recent pops" says a call is now: ringing, answered, ended (after an answer) or missed.
  function recentPhase(pop) {
    if (pop.phase === "ended") return pop.answered ? "ended" : "missed";
    return label(pop.phase);
  }

  function updateRecent(pop) {
    const btn = state.recent.get(pop.call_id);
    if (!btn) return;
    const name = pop.customer ? pop.customer.name : pop.number;
    const phase = recentPhase(pop);
    btn.textContent = name + " · " + phase + " · " + when(pop.at);
    btn.dataset.phase = phase;
  }

  function addRecent(pop) {
    const list = $("recent");
    if (!state.recent.has(pop.call_id)) {
      const li = el("li");
      const btn = el("button", "link");
      btn.type = "button";
      btn.addEventListener("click", () => showPop(state.pops.get(pop.call_id) || pop));
      li.appendChild(btn);
      list.insertBefore(li, list.firstChild);
      state.recent.set(pop.call_id, btn);
      while (list.children.length > 10) {
        const old = list.lastChild;
        for (const [callId, b] of state.recent) if (b.parentNode === old) state.recent.delete(callId);
        list.removeChild(old);
      }
    }
    updateRecent(pop);
  }

  // ---- write-back ----------------------------------------------------------------------------
  async function saveNotes(ev) {
    ev.preventDefault();
    const pop = state.current;
    const status = $("notes-status");
    if (!pop || !pop.contact_id) {
      status.textContent = "No current contact to save notes for.";
      return;
    }
    const body = { notes: $("notes-text").value, disposition: $("notes-disposition").value };
    const caseId = $("case-select").value;
    if (caseId) {
      body.case = {
        id: caseId,
        status: $("case-status").value,
        still_needed: $("case-needed").value,
        next_step: $("case-next").value,
      };
    }
    status.textContent = "Saving…";
    const r = await api("POST", "/api/v1/contacts/" + encodeURIComponent(pop.contact_id) + "/notes", body);
    status.textContent = r.ok ? "Saved." : "Not saved: " + ((r.data && r.data.error) || r.status);
    status.dataset.ok = r.ok ? "1" : "0";
  }

  function isoOf(localValue) {
    if (!localValue) return null;
    const d = new Date(localValue);
    return isNaN(d.getTime()) ? null : d.toISOString();
  }

  async function scheduleCallback(ev) {
    ev.preventDefault();
    const pop = state.current;
    const status = $("cb-status");
    if (!pop) {
      status.textContent = "No caller on screen.";
      return;
    }
    const earliest = isoOf($("cb-earliest").value);
    if (!earliest) {
      status.textContent = "Pick the earliest time.";
      return;
    }
    const body = {
      customer_id: pop.customer ? pop.customer.id : null,
      number: pop.number,
      earliest,
      reason: $("cb-reason").value,
    };
    const latest = isoOf($("cb-latest").value);
    if (latest) body.latest = latest;
    if ($("cb-me").checked && state.agent) body.preferred_agent = state.agent.id;
    const caseId = $("case-select").value;
    if (caseId) body.case_id = caseId;
    if (pop.contact_id) body.context = "from contact " + pop.contact_id;
    status.textContent = "Scheduling…";
    const r = await api("POST", "/api/v1/callbacks", body);
    status.textContent = r.ok ? "Callback scheduled." : "Not scheduled: " + ((r.data && r.data.error) || r.status);
  }

  // ---- wiring ----------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("btn-logout").addEventListener("click", () => logout(true));
    $("btn-ready").addEventListener("click", () => requestState("ready"));
    $("btn-pause").addEventListener("click", () => requestState("paused"));
    $("notes-form").addEventListener("submit", saveNotes);
    $("callback-form").addEventListener("submit", scheduleCallback);
    $("case-select").addEventListener("change", () => {
      const pop = state.current;
      const k = pop && (pop.open_cases || []).find((x) => x.id === $("case-select").value);
      $("case-needed").value = k ? k.still_needed || "" : "";
      $("case-next").value = k ? k.next_step || "" : "";
    });
    if (state.token) enter();
  });
})();
