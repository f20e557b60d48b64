// The supervisors' reports: GET /api/v1/reports/<name>?from=&to=&… (JSON) drawn with Chart.js (served
// by ivrserver: /static/vendor/chartjs), each table as a CSV download (&format=csv&table=…).
// Everything from the server is put on the page as text (textContent), never as markup.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18n.t(key, params);
  const REPORTS = ["ivr", "selfservice", "queues", "repeats", "callbacks", "agents"];
  const FILTERS = { ivr: ["menu"], selfservice: ["menu"], queues: ["queue"], repeats: ["queue"], callbacks: [], agents: ["agent"] };
  const EXITS = ["self_served", "queue", "agent", "callback", "caller_hangup", "timed_out", "ended", "unfinished"];
  const COLORS = {
    self_served: "#2e7d32", queue: "#1565c0", agent: "#6a1b9a", callback: "#00838f", caller_hangup: "#c62828",
    timed_out: "#ef6c00", ended: "#757575", unfinished: "#bdbdbd",
    a: "#1565c0", b: "#c62828", c: "#2e7d32", d: "#ef6c00", e: "#6a1b9a", target: "#000000",
  };
  const charts = [];
  const data = {};
  // ?lang=zh, else (once signed in) the agent's language kept by the server (GET /api/v1/me/preferences),
  // else the choice this browser remembers (the desk and the wallboard use the same key), else the
  // browser's language. A switch is remembered here and, signed in, by the server (PUT).
  const asked = I18n.supported(new URLSearchParams(location.search).get("lang"));
  let lang = asked || I18n.supported(localStorage.getItem("ivr.lang")) || I18n.browserLanguage();

  async function loadCatalogue() {
    lang = await I18n.load(lang, ["common", "reports"]);
    $("lang").value = lang;
    render();
  }

  async function adoptServerLanguage() {
    if (asked) return;
    const wanted = await I18n.serverLanguage();
    if (wanted && wanted !== lang) { lang = wanted; localStorage.setItem("ivr.lang", lang); await loadCatalogue(); }
  }

  function show(view) {
    $("login-view").hidden = view !== "login";
    $("refused").hidden = view !== "refused";
    $("reports").hidden = view !== "reports";
    $("btn-logout").hidden = view === "login";
  }

  // ---- dates: the server's report days are whole days in its time zone (reports.timezone) ----
  const iso = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  function lastDays(n) {
    const to = new Date(); to.setDate(to.getDate() - 1);
    const from = new Date(to); from.setDate(from.getDate() - (n - 1));
    $("from").value = iso(from); $("to").value = iso(to);
  }
  function lastMonth() {
    const now = new Date();
    $("from").value = iso(new Date(now.getFullYear(), now.getMonth() - 1, 1));
    $("to").value = iso(new Date(now.getFullYear(), now.getMonth(), 0));
  }

  function query(name, extra) {
    const p = new URLSearchParams({ from: $("from").value, to: $("to").value });
    for (const f of FILTERS[name]) {
      const v = $("f-" + f).value.trim();
      if (v) p.set(f, v);
    }
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return `/api/v1/reports/${name}?${p}`;
  }

  // ---- cells: the server sends machine values (seconds, shares, minor units, ISO days, ids); the
  // page shows them in the reader's language and locale. Every label goes through t(): a column or
  // value the catalogue lacks shows as ⟦key⟧ (and a console error), never silently as raw text.
  const pct = (x) => (x === null || x === undefined ? "–" : I18n.number(Math.round(x * 1000) / 10) + " %");
  const num = (x) => (x === null || x === undefined ? "–" : I18n.number(x));
  const MONEY = /^compensation_([A-Z]{3})_cents$/; // services/reports.py: one column per currency
  const colName = (c) => {
    const m = MONEY.exec(c);
    return m ? t("reports.col.compensation_cents", { currency: m[1] }) : t("reports.col." + c);
  };
  const RATE = /(share|rate|rate_24h|rate_7d|service_level|resolution|target)$/;
  // columns in seconds (a length of time): "2 min 5 s" / "2分5秒"
  const SECONDS = /^(average_seconds|talk_seconds|talk_average|wrap_up_seconds|service_level_seconds|wait_average|wait_p\d+|abandoned_wait_p\d+|late_average|late_p\d+)$/;
  const ALL = new Set(["menu", "queue", "reason"]); // "*": the row of all of them
  const policyName = (v) => t("reports.policy_name." + String(v).replace(/-/g, "_"));
  const day = (v) => I18n.date(Date.parse(v + "T12:00:00")); // a calendar day of the server's zone
  function cellText(col, v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "boolean") return v ? t("reports.yes") : t("reports.no");
    const money = MONEY.exec(col);
    if (money && typeof v === "number") return I18n.money(v, money[1]);
    if (typeof v === "number" && RATE.test(col)) return pct(v);
    if (typeof v === "number" && SECONDS.test(col)) return I18n.duration(Math.round(v));
    if (typeof v === "number" && col === "hour") return String(v).padStart(2, "0") + ":00";
    if (typeof v === "number") return num(v);
    if (col === "day") return day(v) || String(v);
    if (col === "kind") return t("reports.kind." + v);
    if (col === "policy") return policyName(v);
    if (ALL.has(col) && v === "*") return t("reports.all");
    return String(v);
  }

  function table(name, key, body) {
    const tbl = body.tables[key];
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    const head = document.createElement("div");
    head.className = "table-head";
    const h = document.createElement("h3");
    h.textContent = t("reports.table." + name + "." + key);
    const a = document.createElement("a");
    a.className = "csv";
    a.href = query(name, { format: "csv", table: key });
    a.setAttribute("download", "");
    a.dataset.report = name; a.dataset.table = key;
    a.textContent = t("reports.csv");
    head.append(h, a);
    const el = document.createElement("table");
    const thead = el.createTHead().insertRow();
    for (const c of tbl.columns) {
      const th = document.createElement("th"); th.textContent = colName(c); th.title = c; thead.append(th);
    }
    const tb = el.createTBody();
    for (const row of tbl.rows.slice(0, 200)) {
      const tr = tb.insertRow();
      for (const c of tbl.columns) tr.insertCell().textContent = cellText(c, row[c]);
    }
    if (!tbl.rows.length) {
      const td = tb.insertRow().insertCell(); td.colSpan = tbl.columns.length; td.textContent = t("reports.empty");
    }
    wrap.append(head, el);
    return wrap;
  }

  function chart(sec, title, config) {
    const box = document.createElement("figure");
    box.className = "chart";
    const cap = document.createElement("figcaption"); cap.textContent = title;
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img"); canvas.setAttribute("aria-label", title);
    box.append(cap, canvas);
    sec.querySelector(".charts").append(box);
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { position: "bottom" } } }, config.options || {});
    charts.push(new Chart(canvas, config));
  }
  const axis = (label, extra) => Object.assign({ title: { display: true, text: label }, beginAtZero: true }, extra || {});
  const pctAxis = (label) => axis(label, { max: 100, ticks: { callback: (v) => v + " %" } });
  const p100 = (x) => (x === null || x === undefined ? null : Math.round(x * 1000) / 10);
  const all = (rows, k) => rows.filter((r) => r[k] === "*");
  const named = (rows, k) => rows.filter((r) => r[k] !== "*");

  const DRAW = {
    ivr(sec, b) {
      const nodes = b.tables.nodes.rows.slice(0, 20);
      chart(sec, t("reports.chart.ivr_nodes"), {
        type: "bar",
        data: { labels: nodes.map((r) => (b.tables.exits.rows.length > 1 ? r.menu + " · " : "") + r.node),
          datasets: EXITS.map((c) => ({ label: t("reports.exit." + c), data: nodes.map((r) => r["exit_" + c]), backgroundColor: COLORS[c] })) },
        options: { indexAxis: "y", scales: { x: axis(t("reports.axis.calls"), { stacked: true }), y: { stacked: true, title: { display: true, text: t("reports.axis.node") } } } },
      });
      const depth = b.tables.depth.rows;
      chart(sec, t("reports.chart.ivr_depth"), {
        type: "bar",
        data: { labels: depth.map((r) => (b.tables.exits.rows.length > 1 ? r.menu + " · " : "") + r.depth),
          datasets: [{ label: t("reports.series.abandon_rate"), data: depth.map((r) => p100(r.abandon_rate)), backgroundColor: COLORS.caller_hangup }] },
        options: { scales: { x: { title: { display: true, text: t("reports.axis.depth") } }, y: pctAxis(t("reports.axis.percent_hung_up")) } },
      });
      const help = sec.querySelector(".r-help");
      // the policy's description in the page's language (every policy has one: test_i18n_catalogue.py)
      const described = t("reports.policy_desc." + String(b.policy.name).replace(/-/g, "_"));
      help.textContent = t("reports.help.ivr") + " " + t("reports.policy", { name: policyName(b.policy.name), description: described });
    },
    selfservice(sec, b) {
      const days = all(b.tables.days.rows, "menu");
      const menus = [...new Set(named(b.tables.days.rows, "menu").map((r) => r.menu))];
      const labels = days.map((r) => day(r.day));
      const palette = [COLORS.a, COLORS.c, COLORS.e, COLORS.d];
      chart(sec, t("reports.chart.selfservice"), {
        type: "line",
        data: { labels, datasets: [
          { label: t("reports.series.share_all"), data: days.map((r) => p100(r.share)), borderColor: COLORS.a, backgroundColor: COLORS.a, spanGaps: true },
          ...menus.slice(0, 4).map((m, i) => ({ label: m, data: days.map((d) => { const r = b.tables.days.rows.find((x) => x.day === d.day && x.menu === m); return r ? p100(r.share) : null; }),
            borderColor: palette[i], backgroundColor: palette[i], borderDash: [4, 3], spanGaps: true })),
          { label: t("reports.series.target", { target: Math.round(b.target * 100) }), data: days.map(() => b.target * 100), borderColor: COLORS.target, borderDash: [8, 4], pointRadius: 0 },
        ] },
        options: { scales: { x: { title: { display: true, text: t("reports.axis.day") } }, y: pctAxis(t("reports.axis.percent_self_served")) } },
      });
      sec.querySelector(".r-help").textContent = t("reports.help.selfservice", { target: Math.round(b.target * 100) });
    },
    queues(sec, b) {
      const hours = all(b.tables.hours.rows, "queue");
      chart(sec, t("reports.chart.queue_hours"), {
        type: "bar",
        data: { labels: hours.map((r) => String(r.hour).padStart(2, "0") + ":00"), datasets: [
          { label: t("reports.series.answered"), data: hours.map((r) => r.answered), backgroundColor: COLORS.c, stack: "calls", yAxisID: "y" },
          { label: t("reports.series.abandoned"), data: hours.map((r) => r.abandoned), backgroundColor: COLORS.b, stack: "calls", yAxisID: "y" },
          { type: "line", label: t("reports.series.service_level", { seconds: b.service_level_seconds }), data: hours.map((r) => p100(r.service_level)), borderColor: COLORS.a, backgroundColor: COLORS.a, yAxisID: "y1" },
        ] },
        options: { scales: { x: { stacked: true, title: { display: true, text: t("reports.axis.hour_of_day") } }, y: axis(t("reports.axis.calls"), { stacked: true }),
          y1: Object.assign(pctAxis(t("reports.axis.percent_service_level")), { position: "right", grid: { drawOnChartArea: false } }) } },
      });
      const q = named(b.tables.queues.rows, "queue");
      chart(sec, t("reports.chart.queue_waits"), {
        type: "bar",
        data: { labels: q.map((r) => r.queue), datasets: [
          { label: t("reports.col.wait_p50"), data: q.map((r) => r.wait_p50), backgroundColor: COLORS.c },
          { label: t("reports.col.wait_p90"), data: q.map((r) => r.wait_p90), backgroundColor: COLORS.d },
          { label: t("reports.col.wait_p99"), data: q.map((r) => r.wait_p99), backgroundColor: COLORS.b },
        ] },
        options: { scales: { x: { title: { display: true, text: t("reports.axis.queue") } }, y: axis(t("reports.axis.seconds")) } },
      });
      sec.querySelector(".r-help").textContent = t("reports.help.queues", { seconds: b.service_level_seconds });
    },
    repeats(sec, b) {
      const r = named(b.tables.reasons.rows, "reason");
      chart(sec, t("reports.chart.repeats"), {
        type: "bar",
        data: { labels: r.map((x) => x.reason), datasets: [
          { label: t("reports.col.repeat_rate_24h"), data: r.map((x) => p100(x.repeat_rate_24h)), backgroundColor: COLORS.b },
          { label: t("reports.col.repeat_rate_7d"), data: r.map((x) => p100(x.repeat_rate_7d)), backgroundColor: COLORS.d },
          { label: t("reports.col.first_contact_resolution"), data: r.map((x) => p100(x.first_contact_resolution)), backgroundColor: COLORS.c },
          { label: t("reports.col.story_carried_share"), data: r.map((x) => p100(x.story_carried_share)), backgroundColor: COLORS.a },
        ] },
        options: { scales: { x: { title: { display: true, text: t("reports.axis.reason") } }, y: pctAxis(t("reports.axis.percent_calls")) } },
      });
      sec.querySelector(".r-help").textContent = t("reports.help.repeats");
    },
    callbacks(sec, b) {
      const k = b.tables.kinds.rows;
      const fields = ["requested", "placed", "answered", "retried", "failed", "cancelled"];
      const palette = [COLORS.a, COLORS.e, COLORS.c, COLORS.d, COLORS.b, COLORS.ended];
      chart(sec, t("reports.chart.callbacks"), {
        type: "bar",
        data: { labels: k.map((x) => t("reports.kind." + x.kind)), datasets: fields.map((f, i) => ({ label: t("reports.col." + f), data: k.map((x) => x[f]), backgroundColor: palette[i] })) },
        options: { scales: { x: { title: { display: true, text: t("reports.axis.kind") } }, y: axis(t("reports.axis.count")) } },
      });
      sec.querySelector(".r-help").textContent = t("reports.help.callbacks");
    },
    agents(sec, b) {
      const a = b.tables.agents.rows.slice(0, 40);
      chart(sec, t("reports.chart.agents"), {
        type: "bar",
        data: { labels: a.map((x) => x.agent), datasets: [
          { label: t("reports.series.talk_minutes"), data: a.map((x) => Math.round(x.talk_seconds / 6) / 10), backgroundColor: COLORS.a, stack: "time" },
          { label: t("reports.series.wrap_up_minutes"), data: a.map((x) => Math.round(x.wrap_up_seconds / 6) / 10), backgroundColor: COLORS.d, stack: "time" },
          { type: "line", label: t("reports.col.calls"), data: a.map((x) => x.calls), borderColor: COLORS.c, backgroundColor: COLORS.c, yAxisID: "y1" },
        ] },
        options: { scales: { x: { stacked: true, title: { display: true, text: t("reports.axis.agent") } }, y: axis(t("reports.axis.minutes"), { stacked: true }),
          y1: Object.assign(axis(t("reports.axis.calls")), { position: "right", grid: { drawOnChartArea: false } }) } },
      });
      sec.querySelector(".r-help").textContent = t("reports.help.agents", { seconds: b.wrap_up_seconds_per_call });
    },
  };

  function render() {
    while (charts.length) charts.pop().destroy();
    // rendered here, not when the data came: a language switch re-renders it too
    $("range-hint").textContent = data.ivr && !data.ivr.error ? t("reports.range.zone", { zone: data.ivr.timezone }) : "";
    const root = $("sections");
    root.textContent = "";
    for (const name of REPORTS) {
      const sec = $("section-template").content.firstElementChild.cloneNode(true);
      sec.id = "report-" + name;
      sec.querySelector(".r-title").textContent = t("reports.name." + name);
      const b = data[name];
      const status = sec.querySelector(".r-status");
      root.append(sec);
      if (!b) { status.textContent = t("reports.loading"); continue; }
      if (b.error) { status.textContent = b.error; status.classList.add("error"); continue; }
      status.textContent = b.pending_since ? t("reports.pending", { since: I18n.dateTime(Date.parse(b.pending_since)) }) : "";
      DRAW[name](sec, b);
      for (const key of Object.keys(b.tables)) sec.querySelector(".tables").append(table(name, key, b));
    }
  }

  async function load() {
    for (const k of REPORTS) delete data[k];
    render();
    await Promise.all(REPORTS.map(async (name) => {
      try {
        const r = await fetch(query(name), { credentials: "same-origin" });
        if (r.status === 401) { show("login"); return; }
        if (r.status === 403) { show("refused"); return; }
        const body = await r.json();
        data[name] = r.ok ? body : { error: t("reports.error", { status: r.status, detail: String(body.error || "") }) };
      } catch (e) {
        data[name] = { error: t("reports.unreachable") };
      }
    }));
    render();
    document.body.dataset.loaded = "1";
  }

  async function start() {
    let r;
    try { r = await fetch("/api/v1/me", { credentials: "same-origin" }); } catch (e) { show("login"); return; }
    if (r.status === 401) { show("login"); return; }
    const me = await r.json();
    await adoptServerLanguage();
    if (!me.agent || !me.agent.supervisor) { show("refused"); return; }
    show("reports");
    const p = new URLSearchParams(location.search);
    if (p.get("from") && p.get("to")) { $("from").value = p.get("from"); $("to").value = p.get("to"); } else lastDays(7);
    load();
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    let r;
    try {
      r = await fetch("/api/v1/login", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ agent: $("login-agent").value, password: $("login-password").value }) });
    } catch (e) { $("login-error").textContent = t("reports.login.unreachable"); return; }
    if (r.status === 429) { $("login-error").textContent = t("reports.login.throttled"); return; }
    if (!r.ok) { $("login-error").textContent = t("reports.login.failed"); return; }
    $("login-password").value = "";
    start();
  });
  async function logout() {
    try { await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: "{}" }); } catch (e) { /* gone anyway */ }
    show("login");
  }
  $("btn-logout").addEventListener("click", logout);
  $("btn-switch").addEventListener("click", logout);
  $("range-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("q-7").addEventListener("click", () => { lastDays(7); load(); });
  $("q-month").addEventListener("click", () => { lastMonth(); load(); });
  $("lang").addEventListener("change", async () => {
    lang = I18n.supported($("lang").value) || "en";
    localStorage.setItem("ivr.lang", lang);
    await loadCatalogue();
    if ($("login-view").hidden) await I18n.saveServerLanguage(lang); // signed in; else this browser remembers it
  });

  loadCatalogue().then(start);
})();
