// The supervisors' wallboard: one websocket (/ws/wallboard), a snapshot then changes; no polling.
// Waits and times in state tick here, from the server's clock (every frame carries `now`).
// Everything from the server is put on the page as text (textContent), never as markup.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const STATES = ["ready", "ringing", "on_call", "wrap_up", "paused", "logged_out"];
  const board = { queues: new Map(), agents: new Map(), slSeconds: 20, slTarget: 80, day: "" };
  let offset = 0; // server clock − this clock, ms
  let ws = null;
  let retry = 1000;
  let wanted = false; // keep a socket open (signed in as a supervisor)

  // ---- messages: the shared catalogue (static/i18n.js, sections "common" and "wallboard") ----
  // A key built from a value the server sends (an agent's or incident's state) goes through t() too:
  // a value the catalogue lacks shows as ⟦key⟧ (and a console error), never silently as raw text.
  const t = (key, params) => I18n.t(key, params);
  // {en: "mobile data", zh: "移动数据"} from the frame: the page's language, else English, else the id
  const named = (names, id) => (names && (names[lang] || names.en)) || id;

  // ?lang=zh, else (once signed in) the agent's language kept by the server (GET /api/v1/me/preferences),
  // else the choice this browser remembers (the desk uses the same key), else the browser's language.
  const asked = I18n.supported(new URLSearchParams(location.search).get("lang"));
  let lang = asked || I18n.supported(localStorage.getItem("ivr.lang")) || I18n.browserLanguage();

  async function adoptServerLanguage() {
    if (asked) return;
    const wanted = await I18n.serverLanguage();
    if (wanted && wanted !== lang) { lang = wanted; localStorage.setItem("ivr.lang", lang); await loadCatalogue(); }
  }

  async function loadCatalogue() {
    lang = await I18n.load(lang, ["common", "wallboard"]);
    $("lang").value = lang;
    renderAll();
  }

  // ---- formatting: durations tick as m:ss (a wall is read at a glance), the rest in the locale's form ----
  const serverNow = () => Date.now() + offset;
  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h > 0 ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
  }
  const clockTime = (ms) => I18n.time(ms, true);
  const shortTime = (ms) => I18n.time(ms);
  const num = (n) => I18n.number(n);

  // ---- views ----
  function show(view) {
    $("login-view").hidden = view !== "login";
    $("refused").hidden = view !== "refused";
    $("board").hidden = view !== "board";
    $("btn-logout").hidden = view === "login";
  }
  function setConn(state) {
    $("conn").dataset.conn = state;
    $("conn").textContent = t(`wallboard.conn.${state}`);
  }

  function queueEl(name) {
    let el = document.querySelector(`#queues .queue[data-queue="${CSS.escape(name)}"]`);
    if (!el) {
      el = $("queue-tpl").content.firstElementChild.cloneNode(true);
      el.dataset.queue = name;
      el.querySelector(".qname").textContent = name;
      I18n.apply(el);
      $("queues").appendChild(el);
    }
    return el;
  }
  function renderQueue(q) {
    const el = queueEl(q.name);
    el.querySelector(".waiting").textContent = num(q.waiting);
    el.querySelector(".answered").textContent = num(q.answered);
    el.querySelector(".abandoned").textContent = num(q.abandoned);
    el.querySelector(".callbacks").textContent = num(q.callbacks);
    el.querySelector(".sl").textContent = q.service_level === null ? "–" : `${q.service_level.toFixed(0)}%`;
    el.dataset.busy = q.waiting > 0 ? "yes" : "no";
    const slLow = q.service_level !== null && q.service_level < board.slTarget;
    el.querySelector(".sl").classList.toggle("bad", slLow);
    tickQueue(el, q);
  }
  function tickQueue(el, q) {
    const longest = el.querySelector(".longest");
    if (q.waiting > 0 && q.oldest_joined_at !== null) {
      const wait = serverNow() - q.oldest_joined_at;
      longest.textContent = duration(wait);
      longest.classList.toggle("bad", wait > board.slSeconds * 1000);
    } else {
      longest.textContent = "–";
      longest.classList.remove("bad");
    }
  }

  function agentEl(id) {
    let el = document.querySelector(`#agents .agent[data-agent="${CSS.escape(id)}"]`);
    if (!el) {
      el = $("agent-tpl").content.firstElementChild.cloneNode(true);
      el.dataset.agent = id;
      $("agents").appendChild(el);
    }
    return el;
  }
  function renderAgent(a) {
    const el = agentEl(a.id);
    el.dataset.state = STATES.includes(a.state) ? a.state : "logged_out";
    el.querySelector(".aname").textContent = a.name || a.id;
    el.querySelector(".astate").textContent = t(`wallboard.state.${el.dataset.state}`);
    el.querySelector(".atime").textContent = duration(serverNow() - a.since);
  }

  function renderTotals(totals) {
    $("total-waiting").textContent = num(totals.waiting);
    $("total-callbacks").textContent = num(totals.callbacks_total);
    for (const s of STATES) $(`count-${s}`).textContent = num((totals.agent_counts || {})[s] || 0);
  }

  function renderIncidents(inc) {
    const list = $("incidents");
    list.replaceChildren();
    $("incidents-unknown").hidden = inc.known;
    $("incidents-none").hidden = !inc.known || inc.items.length > 0;
    for (const i of inc.items) {
      const li = document.createElement("li");
      li.dataset.state = i.state;
      const head = document.createElement("strong");
      head.textContent = [named(i.service_names, i.service), named(i.area_names, i.area)].filter(Boolean).join(" · ");
      const meta = document.createElement("span");
      let text = `${t(`wallboard.incident.state.${i.state}`)} · ${t("wallboard.incident.since")} ${shortTime(i.opened_at)}`;
      if (i.expected_fix_at) text += ` · ${t("wallboard.incident.fix")} ${shortTime(i.expected_fix_at)}`;
      meta.textContent = text;
      li.append(head, meta);
      list.appendChild(li);
    }
  }

  // "Service level: answered within 20 s, today (5 Dec 2026); target 80 %": the day is the server's
  // (wallboard.timezone), a calendar date: drawn at its noon so no browser time zone shifts it.
  function renderNote() {
    if (!board.day) return;
    $("sl-note").textContent = t("wallboard.sl.note", { seconds: I18n.duration(board.slSeconds),
      day: I18n.date(Date.parse(board.day + "T12:00:00")), target: num(board.slTarget) });
  }

  function renderAll() {
    renderNote();
    board.queues.forEach(renderQueue);
    board.agents.forEach(renderAgent);
    if (board.totals) renderTotals(board.totals);
    if (board.incidents) renderIncidents(board.incidents);
    setConn($("conn").dataset.conn || "off");
  }

  function tick() {
    $("clock").textContent = clockTime(serverNow());
    document.querySelectorAll("#queues .queue").forEach((el) => {
      const q = board.queues.get(el.dataset.queue);
      if (q) tickQueue(el, q);
    });
    document.querySelectorAll("#agents .agent").forEach((el) => {
      const a = board.agents.get(el.dataset.agent);
      if (a) el.querySelector(".atime").textContent = duration(serverNow() - a.since);
    });
  }

  // ---- frames ----
  function onFrame(msg) {
    if (typeof msg.now === "number") offset = msg.now - Date.now();
    switch (msg.type) {
      case "snapshot":
        board.queues.clear(); board.agents.clear();
        $("queues").replaceChildren(); $("agents").replaceChildren();
        board.slSeconds = msg.service_level_seconds;
        board.slTarget = typeof msg.service_level_target === "number" ? msg.service_level_target : 80;
        board.day = String(msg.day || "");
        renderNote();
        for (const q of msg.queues) { board.queues.set(q.name, q); renderQueue(q); }
        for (const a of msg.agents) { board.agents.set(a.id, a); renderAgent(a); }
        board.totals = msg.totals; renderTotals(msg.totals);
        board.incidents = msg.incidents; renderIncidents(msg.incidents);
        show("board");
        break;
      case "queues":
        for (const q of msg.queues) { board.queues.set(q.name, q); renderQueue(q); }
        board.totals = msg.totals; renderTotals(msg.totals);
        break;
      case "agent":
        if (msg.agent) { board.agents.set(msg.agent.id, msg.agent); renderAgent(msg.agent); }
        board.totals = msg.totals; renderTotals(msg.totals);
        break;
      case "incidents":
        board.incidents = msg.incidents; renderIncidents(msg.incidents);
        break;
      case "error":
        if (msg.code === "forbidden") { wanted = false; show("refused"); }
        else if (msg.code === "auth_failed" || msg.code === "auth_required" || msg.code === "auth_timeout") {
          wanted = false; show("login");
        }
        break;
      default:
        break;
    }
  }

  function connect() {
    if (!wanted || ws) return;
    setConn("connecting");
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/wallboard`;
    const sock = new WebSocket(url);
    ws = sock;
    sock.onopen = () => { retry = 1000; setConn("live"); };
    sock.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg && typeof msg === "object") onFrame(msg);
    };
    sock.onclose = (ev) => {
      ws = null;
      setConn("off");
      if (ev.code === 4403) { wanted = false; show("refused"); return; }
      if (wanted) { setTimeout(start, retry); retry = Math.min(retry * 2, 10000); }
    };
  }

  // ---- session: the login cookie authenticates the socket ----
  async function start() {
    let r;
    try {
      r = await fetch("/api/v1/me", { credentials: "same-origin" });
    } catch (e) {
      setConn("off"); setTimeout(start, retry); retry = Math.min(retry * 2, 10000); return;
    }
    if (r.status === 401) { wanted = false; show("login"); return; }
    if (!r.ok) { setTimeout(start, retry); retry = Math.min(retry * 2, 10000); return; }
    const me = await r.json();
    await adoptServerLanguage();
    if (!me.agent || !me.agent.supervisor) { wanted = false; show("refused"); return; }
    wanted = true;
    connect();
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    let r;
    try {
      r = await fetch("/api/v1/login", {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ agent: $("login-agent").value, password: $("login-password").value }),
      });
    } catch (e) { $("login-error").textContent = t("wallboard.login.unreachable"); return; }
    if (r.status === 429) { $("login-error").textContent = t("wallboard.login.throttled"); return; }
    if (!r.ok) { $("login-error").textContent = t("wallboard.login.failed"); return; }
    $("login-password").value = "";
    start();
  });

  async function logout() {
    wanted = false;
    if (ws) ws.close();
    try { await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: "{}" }); } catch (e) { /* gone anyway */ }
    show("login");
  }
  $("btn-logout").addEventListener("click", logout);
  $("btn-switch").addEventListener("click", logout);
  $("lang").addEventListener("change", async () => {
    lang = I18n.supported($("lang").value) || "en";
    localStorage.setItem("ivr.lang", lang);
    await loadCatalogue();
    if ($("login-view").hidden) await I18n.saveServerLanguage(lang); // signed in; else this browser remembers it
  });

  setInterval(tick, 1000);
  loadCatalogue().then(start);
})();
