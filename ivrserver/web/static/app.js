// ivrserver agent desktop. No framework, no build step.
// Rule: every value from the server is rendered with textContent / createElement; no HTML parsing of data.
// Every label, message, title and date goes through the catalogue (i18n.js, /static/i18n/<lang>.json,
// sections "common" and "desk"): t("desk.…"), I18n.dateTime(…), data-i18n in index.html.
// Panels: the pop card and the side forms are panels; another one joins with
// Desk.addPanel({ onPop(pop), onLanguage(), onLogout() }) from its own script loaded after this one.
"use strict";

window.Desk = (() => {
  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;
  const t = (key, params) => I18n.t(key, params);
  const LANG_KEY = "ivr.lang"; // this browser's last choice (before login; the server keeps the agent's)
  const SECTIONS = ["common", "desk"];
  const panels = [];

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
    return I18n.dateTime(epochSeconds * 1000);
  }
  function label(text) {
    return String(text || "").replace(/_/g, " ");
  }
  // A value of a known set (a state, an outcome…) in the page's language: its message
  // "<prefix><value>" when the catalogue has one, else the value itself (new values from a newer server).
  function named(prefix, value) {
    const key = prefix + String(value);
    return I18n.has(key) ? t(key) : label(value);
  }
  // ---- REST ---------------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = {};
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (e) {
      return { ok: false, status: 0, data: null };
    }
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
      $("login-error").textContent = r.status === 401 ? t("desk.login.wrong")
        : r.status === 429 ? t("desk.login.throttled") : r.status === 0 ? t("desk.error.offline") : t("desk.login.failed");
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
    for (const p of panels) if (p.onLogout) p.onLogout();
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
    await adoptServerLanguage();
    showAgent();
    showState(r.data.state || "unknown");
    scheduleStateRefresh(badgePollMs());
    $("login-view").hidden = true;
    $("who").hidden = false;
    $("desk-view").hidden = false;
    connect();
  }

  function showAgent() {
    if (!state.agent) return;
    $("agent-name").textContent = t(state.agent.supervisor ? "desk.who.supervisor" : "desk.who.agent",
      { name: state.agent.name, id: state.agent.id });
  }

  function showState(s) {
    const badge = $("state-badge");
    badge.dataset.state = s;
    badge.textContent = named("desk.state.", s);
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
    c.textContent = t(s === "on" ? "desk.conn.on" : s === "connecting" ? "desk.conn.connecting" : "desk.conn.off");
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
    phase.textContent = named("desk.phase.", pop.phase) + (pop.kind === "callback" ? " · " + t("desk.phase.callback") : "");
    phase.dataset.phase = String(pop.phase || "");
  }

  function showPop(pop) {
    state.current = pop;
    $("idle").hidden = true;
    $("pop").hidden = false;
    showPhase(pop);
    const c = pop.customer;
    $("pop-name").textContent = c ? c.name : t("desk.pop.unknown");
    $("pop-number").textContent = pop.number || "";
    showTags(c);
    showFacts(pop, c);
    const routing = pop.routing || {};
    $("pop-reason").textContent = routing.queue
      ? t("desk.pop.reason_queue", { reason: routing.reason || "—", queue: routing.queue })
      : routing.reason || "—";
    showCallbackContext(pop.callback);
    showPath(pop.ivr_path || []);
    showCases(pop.open_cases || []);
    showHistory(pop.history || []);
    showSideForms(pop, c);
    for (const p of panels) if (p.onPop) p.onPop(pop);
  }

  function showTags(c) {
    const tags = $("pop-tags");
    clear(tags);
    if (!c) return;
    tags.appendChild(el("span", "tag tier-" + String(c.tier).replace(/[^a-z]/g, ""), named("desk.tier.", c.tier)));
    tags.appendChild(el("span", "tag", named("desk.segment.", c.segment)));
    tags.appendChild(el("span", "tag", named("desk.language.", c.language)));
  }

  function showFacts(pop, c) {
    const facts = $("pop-facts");
    clear(facts);
    if (c) {
      fact(facts, t("desk.fact.customer_id"), c.id);
      fact(facts, t("desk.fact.account_manager"), c.account_manager);
      fact(facts, t("desk.fact.account"), c.account_number);
      const prefs = c.preferences || {};
      fact(facts, t("desk.fact.call_hours"), t("desk.fact.call_hours_value", {
        from: prefs.allowed_from || "", until: prefs.allowed_until || "", timezone: prefs.timezone || "",
      }) + (prefs.do_not_call ? " · " + t("desk.fact.do_not_call") : ""));
      // Attributes are the operator's own data (names and values), shown as they are.
      const attrs = c.attributes || {};
      for (const k of Object.keys(attrs)) fact(facts, label(k), attrs[k]);
    }
    if (pop.transferred_from) fact(facts, t("desk.fact.transferred_from"), pop.transferred_from);
  }

  function showCallbackContext(cb) {
    $("pop-callback").hidden = !cb;
    const cbFacts = $("pop-callback-facts");
    clear(cbFacts);
    if (!cb) return;
    fact(cbFacts, t("desk.cb.fact.reason"), cb.reason);
    fact(cbFacts, t("desk.cb.fact.context"), cb.context);
    fact(cbFacts, t("desk.cb.fact.case"), cb.case_id);
    fact(cbFacts, t("desk.cb.fact.attempt"), typeof cb.attempt === "number" ? I18n.number(cb.attempt) : cb.attempt);
  }

  function showPath(steps) {
    const path = $("pop-path");
    clear(path);
    for (const step of steps) {
      const li = el("li");
      li.appendChild(el("span", "menu", step.label || step.menu));
      if (step.input) li.appendChild(el("kbd", null, step.input));
      path.appendChild(li);
    }
    if (!steps.length) path.appendChild(el("li", "muted", t("desk.pop.no_ivr")));
  }

  function showCases(open) {
    const cases = $("pop-cases");
    clear(cases);
    const select = $("case-select");
    clear(select);
    select.appendChild(el("option", null, t("desk.case.none")));
    select.firstChild.value = "";
    for (const k of open) {
      const box = el("div", "case sev-" + Number(k.severity));
      const head = el("div", "case-head");
      head.appendChild(el("strong", null, k.summary));
      head.appendChild(el("span", "muted", " " + t("desk.case.meta", { id: k.id, severity: k.severity,
        age: I18n.number(Number(k.age_days) || 0) })));
      box.appendChild(head);
      const dl = el("dl", "facts");
      fact(dl, t("desk.case.needed"), k.still_needed || "—");
      fact(dl, t("desk.case.next"), k.next_step || "—");
      fact(dl, t("desk.case.owner"), k.owner_agent);
      box.appendChild(dl);
      cases.appendChild(box);
      const opt = el("option", null, k.id + " — " + k.summary);
      opt.value = k.id;
      select.appendChild(opt);
    }
    if (!open.length) cases.appendChild(el("p", "muted", t("desk.pop.no_cases")));
    select.value = open.length ? open[0].id : "";
    $("case-needed").value = open.length ? open[0].still_needed || "" : "";
    $("case-next").value = open.length ? open[0].next_step || "" : "";
  }

  function showHistory(history) {
    const hist = $("pop-history");
    clear(hist);
    for (const h of history) {
      const li = el("li");
      const head = el("div", "tl-head");
      head.appendChild(el("span", "when", when(h.started_at)));
      head.appendChild(el("span", "tag", named("desk.kind.", h.kind)));
      head.appendChild(el("span", "tag outcome-" + String(h.outcome).replace(/[^a-z_]/g, ""), named("desk.outcome.", h.outcome)));
      if (h.disposition) head.appendChild(el("span", "tag", named("desk.disposition.", h.disposition)));
      li.appendChild(head);
      if (h.notes) li.appendChild(el("p", "notes", h.notes));
      const meta = [];
      if ((h.agents || []).length) meta.push(t("desk.history.agents", { agents: h.agents.join(", ") }));
      if ((h.ivr_path || []).length) meta.push(t("desk.history.ivr", { path: h.ivr_path.join(" › ") }));
      if (meta.length) li.appendChild(el("div", "muted", meta.join(" · ")));
      hist.appendChild(li);
    }
    if (!history.length) hist.appendChild(el("li", "muted", t("desk.history.first")));
  }

  function showSideForms(pop, c) {
    $("notes-contact").textContent = pop.contact_id ? t("desk.notes.contact", { id: pop.contact_id }) : t("desk.notes.no_contact_id");
    $("notes-status").textContent = "";
    said.delete($("notes-status"));
    const prefs = (c && c.preferences) || {};
    $("callback-hint").textContent = c
      ? t("desk.cb.hint", { timezone: prefs.timezone || "?", from: prefs.allowed_from || "?", until: prefs.allowed_until || "?" })
      : t("desk.pop.unknown");
  }

  // What "Recent pops" says a call is now: ringing, answered, ended (after an answer) or missed.
  function recentPhase(pop) {
    if (pop.phase === "ended") return pop.answered ? "ended" : "missed";
    return String(pop.phase);
  }

  function updateRecent(pop) {
    const btn = state.recent.get(pop.call_id);
    if (!btn) return;
    const name = pop.customer ? pop.customer.name : pop.number;
    const phase = recentPhase(pop);
    btn.textContent = name + " · " + named("desk.phase.", phase) + " · " + when(pop.at);
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
  // A status line remembers its message so that a change of language rewrites it too.
  const said = new Map(); // node -> [key, params]
  function say(node, key, params) {
    said.set(node, [key, params]);
    node.textContent = t(key, params);
  }
  // The message for a failed request (by status; a 400 adds the server's own detail).
  function failureMessage(r) {
    if (r.status === 400) {
      const d = r.data || {};
      const detail = d.error || (d.errors && typeof d.errors === "object" ? Object.values(d.errors).join("; ") : "");
      return ["desk.error.invalid", { detail: String(detail) }];
    }
    const known = { 0: "offline", 401: "login", 403: "forbidden", 404: "not_found", 409: "conflict", 413: "too_large",
      429: "throttled" };
    return known[r.status] ? ["desk.error." + known[r.status], {}] : ["desk.error.server", { status: r.status }];
  }
  function sayFailure(node, key, r) {
    const [reason, params] = failureMessage(r);
    said.set(node, [key, { reason: { key: reason, params } }]);
    node.textContent = t(key, { reason: t(reason, params) });
  }
  function resay() {
    for (const [node, [key, params]] of said) {
      const reason = params && params.reason;
      node.textContent = reason && typeof reason === "object" ? t(key, { reason: t(reason.key, reason.params) }) : t(key, params);
    }
  }

  async function saveNotes(ev) {
    ev.preventDefault();
    const pop = state.current;
    const status = $("notes-status");
    if (!pop || !pop.contact_id) {
      say(status, "desk.notes.no_contact");
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
    say(status, "desk.notes.saving");
    const r = await api("POST", "/api/v1/contacts/" + encodeURIComponent(pop.contact_id) + "/notes", body);
    if (r.ok) say(status, "desk.notes.saved");
    else sayFailure(status, "desk.notes.failed", r);
    status.dataset.ok = r.ok ? "1" : "0";
  }

  // The browser draws its date-time fields in its own locale (mm/dd/yyyy on an en-US browser);
  // under each one the chosen time is repeated in the page's language.
  function showChosenTimes() {
    for (const id of ["cb-earliest", "cb-latest"]) {
      const value = $(id).value;
      $(id + "-shown").textContent = value ? I18n.dateTime(new Date(value)) : "";
    }
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
      say(status, "desk.cb.no_caller");
      return;
    }
    const earliest = isoOf($("cb-earliest").value);
    if (!earliest) {
      say(status, "desk.cb.pick_earliest");
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
    // Stored with the callback (data for whoever places it), not a label of this page.
    if (pop.contact_id) body.context = "from contact " + pop.contact_id;
    say(status, "desk.cb.scheduling");
    const r = await api("POST", "/api/v1/callbacks", body);
    if (r.ok) say(status, "desk.cb.scheduled");
    else sayFailure(status, "desk.cb.failed", r);
  }

  // ---- language ------------------------------------------------------------------------------
  // Before login: this browser's last choice, else the browser's languages. After login the
  // server's answer wins (the agent's remembered choice, else web.default_language / Accept-Language).
  function relabel() {
    $("lang-select").value = I18n.language();
    showAgent();
    if (state.agent) showState($("state-badge").dataset.state);
    else $("state-badge").textContent = t("desk.state.unknown");
    setConn($("conn").dataset.conn);
    if (state.current) {
      // Redraw the card in the new language; what the agent typed or picked stays.
      const kept = ["case-select", "case-needed", "case-next"].map((id) => [id, $(id).value]);
      const notes = said.get($("notes-status"));
      showPop(state.current);
      for (const [id, value] of kept) $(id).value = value;
      if (notes) said.set($("notes-status"), notes);
    }
    for (const pop of state.pops.values()) updateRecent(pop);
    resay();
    showChosenTimes();
    for (const p of panels) if (p.onLanguage) p.onLanguage();
  }

  async function useLanguage(lang) {
    const shown = await I18n.load(lang, SECTIONS);
    localStorage.setItem(LANG_KEY, shown);
    relabel();
    return shown;
  }

  async function adoptServerLanguage() {
    const r = await api("GET", "/api/v1/me/preferences");
    if (!r.ok || !r.data || typeof r.data.language !== "string") return;
    const wanted = I18n.supported(r.data.language);
    if (wanted && wanted !== I18n.language()) await useLanguage(wanted);
  }

  async function chooseLanguage() {
    const shown = await useLanguage($("lang-select").value);
    if (state.token) await api("PUT", "/api/v1/me/preferences", { language: shown });
  }

  // ---- panels (the cases panel and others join here) -------------------------------------------
  function addPanel(panel) {
    panels.push(panel);
    if (state.current && panel.onPop) panel.onPop(state.current);
  }

  // ---- wiring ----------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", async () => {
    $("login-form").addEventListener("submit", login);
    $("btn-logout").addEventListener("click", () => logout(true));
    $("btn-ready").addEventListener("click", () => requestState("ready"));
    $("btn-pause").addEventListener("click", () => requestState("paused"));
    $("notes-form").addEventListener("submit", saveNotes);
    $("callback-form").addEventListener("submit", scheduleCallback);
    $("lang-select").addEventListener("change", chooseLanguage);
    for (const id of ["cb-earliest", "cb-latest"]) $(id).addEventListener("input", showChosenTimes);
    $("case-select").addEventListener("change", () => {
      const pop = state.current;
      const k = pop && (pop.open_cases || []).find((x) => x.id === $("case-select").value);
      $("case-needed").value = k ? k.still_needed || "" : "";
      $("case-next").value = k ? k.next_step || "" : "";
    });
    await useLanguage(localStorage.getItem(LANG_KEY) || I18n.browserLanguage());
    if (state.token) enter();
  });

  return { addPanel, api, t, el, clear, fact, when, named, current: () => state.current, agent: () => state.agent };
})();
