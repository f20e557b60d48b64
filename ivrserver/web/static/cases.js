// ivrserver agent desktop: the cases panel (issue 18 §1 and §3). Loaded after app.js; joins the
// desk with Desk.addPanel({onPop, onLanguage, onLogout}).
//
// During a call, for the pop's customer: the cases that are not closed (status, due or overdue,
// what is still needed), each opened into the case panel — move it (the moves GET /api/v1/case-policy
// allows, a why where the server requires one), hand it to a back office (the policy's actions), the
// checklist (add, tick, untick), compensation (granted at once within the agent's authority, else
// sent to a supervisor; the server decides), and its events (who, when, why). "New case" opens one.
// Supervisors also get the compensation requests waiting for them and the overdue cases.
//
// Rules: every value from the server is put on the page with textContent / createElement (never
// parsed as markup); every label goes through the catalogue (desk.case.*) and follows the language
// switch; the server's own refusal text is shown after the page's words for it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18n.t(key, params);
  const { el, clear, named } = Desk;
  const SUPERVISOR_POLL_MS = 15000;
  // Mirrors domain/cases.py WHY_REQUIRED (and every reopen): the page asks for a why before
  // sending; the server refuses without one anyway.
  const WHY_TO = new Set(["waiting_customer", "waiting_backoffice", "resolved"]);
  const DONE = new Set(["resolved", "closed"]);
  const ORDER = ["open", "in_progress", "waiting_customer", "waiting_backoffice", "resolved", "closed"]; // the lifecycle's order

  const state = {
    policy: null, // GET /api/v1/case-policy (null: not read, or not served)
    customerId: null, // the pop's customer
    popCases: [], // the pop's open_cases
    fresh: new Map(), // case id -> the case as the server last answered (newer than the pop)
    openId: null, // the case in the panel
    events: [],
    comps: [],
    compKey: null, // idempotency key of the compensation being asked (a double click is one grant)
    supTimer: null,
    pending: [],
    overdue: [],
  };

  // ---- messages that follow the language -------------------------------------------------
  const said = new Map(); // node -> () => text
  function say(node, render, ok) {
    said.set(node, render);
    node.textContent = render();
    if (ok === undefined) delete node.dataset.ok;
    else node.dataset.ok = ok ? "1" : "0";
  }
  function unsay(node) {
    said.delete(node);
    node.textContent = "";
    delete node.dataset.ok;
  }
  // The server's own words for a refusal: `error`, or each field's message.
  function serverText(r) {
    const d = r.data || {};
    if (Array.isArray(d.errors) && d.errors.length) {
      return d.errors.map((e) => (e && typeof e === "object"
        ? (e.field ? String(e.field) + ": " : "") + String(e.message || "") : String(e))).join("; ");
    }
    return typeof d.error === "string" ? d.error : "";
  }
  const KNOWN = { 0: "offline", 401: "login", 403: "forbidden", 404: "not_found", 409: "conflict", 413: "too_large",
    429: "throttled" };
  function reason(r) {
    if (r.status === 400) return t("desk.case.error.refused");
    if (r.status === 503) return t("desk.case.error.unavailable");
    return KNOWN[r.status] ? t("desk.error." + KNOWN[r.status]) : t("desk.error.server", { status: r.status });
  }
  function sayFailure(node, key, r) {
    const detail = serverText(r);
    say(node, () => t(key, { reason: reason(r) + (detail ? " — " + detail : "") }), false);
  }

  // ---- small renderers ---------------------------------------------------------------------
  function when(epochSeconds) {
    return typeof epochSeconds === "number" ? I18n.dateTime(epochSeconds * 1000) : "";
  }
  function money(cents, currency) {
    return I18n.money(Number(cents) || 0, currency || (state.policy && state.policy.compensation.currency) || "CNY");
  }
  function tag(text, className) {
    return el("span", "tag" + (className ? " " + className : ""), text);
  }
  function statusTag(status) {
    return tag(named("desk.case.state.", status), "case-state state-" + String(status).replace(/[^a-z_]/g, ""));
  }
  // "agent:agent1001" -> "agent agent1001" in the page's language (the id is data).
  function actor(text) {
    const s = String(text || "");
    const at = s.indexOf(":");
    if (at > 0 && I18n.has("desk.case.actor." + s.slice(0, at))) return t("desk.case.actor." + s.slice(0, at), { id: s.slice(at + 1) });
    return named("desk.case.actor.", s);
  }
  function openItems(c) {
    if (Array.isArray(c.open_items)) return c.open_items; // the pop's form
    return (c.checklist || []).filter((i) => !i.done); // the REST form
  }
  function dueText(c) {
    if (c.overdue) return t("desk.case.overdue_since", { when: when(c.due_at) });
    return typeof c.due_at === "number" && !DONE.has(c.status) ? t("desk.case.due", { when: when(c.due_at) }) : "";
  }

  // ---- REST ----------------------------------------------------------------------------------
  const api = (method, path, body) => Desk.api(method, path, body);
  const casePath = (id, tail) => "/api/v1/cases/" + encodeURIComponent(id) + (tail || "");

  async function loadPolicy() {
    if (state.policy) return;
    const r = await api("GET", "/api/v1/case-policy");
    if (r.ok && r.data && r.data.statuses && r.data.compensation) state.policy = r.data;
    showAuthority();
  }

  // ---- the list of the caller's cases --------------------------------------------------------
  function cases() {
    const out = [];
    const seen = new Set();
    for (const c of state.popCases) {
      seen.add(c.id);
      out.push(state.fresh.get(c.id) || c);
    }
    for (const [id, c] of state.fresh) if (!seen.has(id)) out.push(c);
    return out.filter((c) => c.status !== "closed");
  }

  function showList() {
    const list = $("case-list");
    clear(list);
    const shown = cases();
    for (const c of shown) {
      const li = el("li", "case-item sev-" + Number(c.severity) + (c.id === state.openId ? " current" : ""));
      li.dataset.caseId = String(c.id);
      const head = el("div", "case-item-head");
      const open = el("button", "link case-open", "#" + c.id + " · " + c.summary);
      open.type = "button";
      open.addEventListener("click", () => openCase(c.id));
      head.appendChild(open);
      head.appendChild(statusTag(c.status));
      head.appendChild(tag(t("desk.case.severity", { severity: c.severity })));
      if (c.overdue) head.appendChild(tag(t("desk.case.overdue"), "overdue"));
      li.appendChild(head);
      const due = dueText(c);
      if (due) li.appendChild(el("div", "muted case-due", due));
      const items = openItems(c);
      if (items.length) {
        const ul = el("ul", "case-items");
        for (const i of items) ul.appendChild(el("li", null, i.text + " · " + named("desk.case.from.", i.from)));
        li.appendChild(ul);
      }
      list.appendChild(li);
    }
    if (!shown.length) list.appendChild(el("li", "muted", t("desk.case.list.none")));
  }

  function showAuthority() {
    const p = state.policy;
    $("case-authority").textContent = p ? t("desk.case.authority", { role: named("desk.case.role.", p.compensation.role) }) : "";
  }

  // ---- the case panel ------------------------------------------------------------------------
  function current() {
    return state.openId === null ? null : state.fresh.get(state.openId) || null;
  }

  async function openCase(id) {
    state.openId = String(id);
    state.events = [];
    state.comps = [];
    state.compKey = null;
    for (const id2 of ["cp-move-status", "cp-action-status", "cp-item-status", "cp-comp-status"]) unsay($(id2));
    $("case-new-form").hidden = true;
    $("case-panel").hidden = false;
    await loadPolicy();
    const r = await api("GET", casePath(id));
    if (state.openId !== String(id)) return;
    if (!r.ok) {
      sayFailure($("cp-move-status"), "desk.case.load_failed", r);
      return;
    }
    state.fresh.set(String(r.data.id), r.data);
    showList();
    showPanel();
    await refreshSide();
  }

  function closePanel() {
    state.openId = null;
    $("case-panel").hidden = true;
    showList();
  }

  // Events and compensations of the open case, read again after every change.
  async function refreshSide() {
    const id = state.openId;
    if (id === null) return;
    const [ev, cp] = await Promise.all([api("GET", casePath(id, "/events")), api("GET", casePath(id, "/compensations"))]);
    if (state.openId !== id) return;
    state.events = ev.ok && ev.data && Array.isArray(ev.data.events) ? ev.data.events : [];
    state.comps = cp.ok && cp.data && Array.isArray(cp.data.items) ? cp.data.items : [];
    showEvents();
    showComps();
  }

  function showPanel() {
    const c = current();
    if (!c) return;
    $("cp-title").textContent = "#" + c.id + " · " + c.summary;
    const meta = $("cp-meta");
    clear(meta);
    meta.appendChild(statusTag(c.status));
    meta.appendChild(tag(t("desk.case.severity", { severity: c.severity })));
    if (c.overdue) meta.appendChild(tag(t("desk.case.overdue"), "overdue"));
    const facts = el("dl", "facts");
    Desk.fact(facts, t("desk.case.fact.due"), c.overdue ? t("desk.case.overdue_since", { when: when(c.due_at) }) : when(c.due_at));
    Desk.fact(facts, t("desk.case.fact.owner"), c.owner_agent);
    Desk.fact(facts, t("desk.case.fact.needed"), c.still_needed);
    Desk.fact(facts, t("desk.case.fact.handed_to"), (c.handed_to || []).join(", "));
    Desk.fact(facts, t("desk.case.fact.compensated"), c.compensated_cents ? money(c.compensated_cents, c.currency) : "");
    meta.appendChild(facts);
    showMoves(c);
    showActions(c);
    showChecklist(c);
    showCompAuthority(c);
  }

  function needsWhy(from, to) {
    return WHY_TO.has(to) || (DONE.has(from) && !DONE.has(to));
  }

  function showMoves(c) {
    const select = $("cp-move-to");
    const kept = select.value;
    clear(select);
    const moves = (state.policy && state.policy.statuses ? state.policy.statuses[c.status] || [] : []).slice()
      .sort((a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99));
    for (const s of moves) {
      const opt = el("option", null, named("desk.case.state.", s));
      opt.value = s;
      select.appendChild(opt);
    }
    if (moves.includes(kept)) select.value = kept;
    $("cp-move-form").hidden = !moves.length;
    showWhyLabel();
  }

  function showWhyLabel() {
    const c = current();
    const required = Boolean(c && needsWhy(c.status, $("cp-move-to").value));
    $("cp-move-why-label").textContent = t(required ? "desk.case.move.why_required" : "desk.case.move.why");
  }

  function showActions(c) {
    const select = $("cp-action");
    const kept = select.value;
    clear(select);
    const actions = (state.policy && state.policy.actions) || [];
    for (const a of actions) {
      // The action's description and back office are the operator's words (cases.yaml), shown as they are.
      const opt = el("option", null, a.description + " → " + a.backoffice);
      opt.value = a.name;
      select.appendChild(opt);
    }
    if (actions.some((a) => a.name === kept)) select.value = kept;
    $("cp-action-form").hidden = !actions.length || c.status === "closed";
  }

  function showChecklist(c) {
    const list = $("cp-checklist");
    clear(list);
    for (const item of c.checklist || []) {
      const li = el("li", item.done ? "done" : "");
      const lab = el("label", "inline");
      const box = el("input");
      box.type = "checkbox";
      box.checked = Boolean(item.done);
      box.dataset.itemId = String(item.id);
      box.addEventListener("change", () => tick(item.id, box.checked));
      lab.appendChild(box);
      lab.appendChild(el("span", "item-text", " " + item.text + " "));
      lab.appendChild(tag(named("desk.case.from.", item.from)));
      li.appendChild(lab);
      if (item.done) {
        li.appendChild(el("div", "muted", t("desk.case.checklist.done_by", { who: actor(item.done_by), when: when(item.done_at) })));
      }
      list.appendChild(li);
    }
    if (!(c.checklist || []).length) list.appendChild(el("li", "muted", t("desk.case.checklist.none")));
  }

  function showCompAuthority(c) {
    const p = state.policy;
    const line = $("cp-comp-authority");
    if (!p) {
      line.textContent = "";
      return;
    }
    const a = p.compensation;
    const perCase = a.per_case ? a.per_case[String(c.severity)] : undefined;
    line.textContent = t("desk.case.comp.authority", {
      role: named("desk.case.role.", a.role),
      per_case: money(perCase || 0, a.currency),
      severity: c.severity,
      per_day: a.per_day === null || a.per_day === undefined ? t("desk.case.comp.no_day_limit") : money(a.per_day, a.currency),
    });
    $("cp-comp-amount-label").textContent = t("desk.case.comp.amount", { currency: a.currency });
    $("cp-comp-form").hidden = c.status === "closed";
  }

  function showComps() {
    const list = $("cp-comp-list");
    clear(list);
    for (const cp of state.comps) {
      const li = el("li", "comp state-" + String(cp.state).replace(/[^a-z]/g, ""));
      li.appendChild(el("strong", null, money(cp.amount_cents, cp.currency)));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(tag(named("desk.case.comp.state.", cp.state)));
      li.appendChild(el("span", null, " " + t("desk.case.comp.line", { who: actor(cp.granted_by), when: when(cp.requested_at), reason: cp.reason })));
      if (cp.approved_by) {
        li.appendChild(el("div", "muted", t("desk.case.comp.decided", { who: actor(cp.approved_by), when: when(cp.decided_at),
          why: cp.decision_why || "—" })));
      }
      list.appendChild(li);
    }
    if (!state.comps.length) list.appendChild(el("li", "muted", t("desk.case.comp.none")));
  }

  // Checklist item ids -> their texts on the open case (the id when the item is not known).
  function itemTexts(ids) {
    const c = current();
    const byId = new Map(((c && c.checklist) || []).map((i) => [String(i.id), i.text]));
    return ids.map((id) => byId.get(String(id)) || "#" + id).join("; ");
  }

  // What an event did, in words: moves, hand-offs, checklist changes, compensation.
  function eventDetail(e) {
    const d = e.detail && typeof e.detail === "object" ? e.detail : {};
    const parts = [];
    // A hand-off's "to" is the back office; otherwise from/to are statuses.
    if (d.action) parts.push(t("desk.case.event.action", { action: d.description || d.action, to: d.to || "" }));
    else if (d.from && d.to) parts.push(t("desk.case.event.moved", { from: named("desk.case.state.", d.from), to: named("desk.case.state.", d.to) }));
    if (Array.isArray(d.added) && d.added.length) parts.push(t("desk.case.event.added", { items: d.added.map((i) => i && i.text).join("; ") }));
    if (Array.isArray(d.done) && d.done.length) parts.push(t("desk.case.event.ticked", { items: itemTexts(d.done) }));
    if (Array.isArray(d.undone) && d.undone.length) parts.push(t("desk.case.event.unticked", { items: itemTexts(d.undone) }));
    if (typeof d.amount_cents === "number") parts.push(money(d.amount_cents, d.currency));
    if (d.result) parts.push(t("desk.case.event.result", { result: d.result }));
    if (d.authority && d.authority.why_not) parts.push(t("desk.case.event.why_not", { why: d.authority.why_not }));
    return parts.join(" · ");
  }

  function showEvents() {
    const list = $("cp-events");
    clear(list);
    for (const e of state.events.slice().reverse()) {
      const li = el("li", "case-event");
      li.dataset.kind = String(e.kind);
      const head = el("div", "tl-head");
      head.appendChild(el("span", "when", when(e.at)));
      head.appendChild(tag(named("desk.case.kind.", e.kind)));
      head.appendChild(el("span", "event-actor", actor(e.actor)));
      li.appendChild(head);
      const detail = eventDetail(e);
      if (detail) li.appendChild(el("div", "event-detail", detail));
      if (e.why) li.appendChild(el("p", "notes event-why", t("desk.case.event.why", { why: e.why })));
      list.appendChild(li);
    }
    if (!state.events.length) list.appendChild(el("li", "muted", t("desk.case.events.none")));
  }

  // After a change: the server's case replaces ours, then events and compensations are read again.
  async function changed(data) {
    if (data && data.id !== undefined) state.fresh.set(String(data.id), data);
    showList();
    showPanel();
    await refreshSide();
  }

  // ---- changes -------------------------------------------------------------------------------
  async function move(ev) {
    ev.preventDefault();
    const c = current();
    const status = $("cp-move-status");
    if (!c) return;
    const to = $("cp-move-to").value;
    const why = $("cp-move-why").value.trim();
    if (needsWhy(c.status, to) && !why) {
      say(status, () => t("desk.case.move.why_missing"), false);
      return;
    }
    const body = { status: to };
    if (why) body.why = why;
    say(status, () => t("desk.case.sending"));
    const r = await api("POST", casePath(c.id, "/status"), body);
    if (!r.ok) return sayFailure(status, "desk.case.move.failed", r);
    $("cp-move-why").value = "";
    say(status, () => t("desk.case.move.done", { status: named("desk.case.state.", to) }), true);
    await changed(r.data);
  }

  async function handOff(ev) {
    ev.preventDefault();
    const c = current();
    const status = $("cp-action-status");
    if (!c) return;
    const name = $("cp-action").value;
    const action = ((state.policy && state.policy.actions) || []).find((a) => a.name === name);
    if (!action) return;
    const body = { action: name, to: action.backoffice };
    const why = $("cp-action-why").value.trim();
    if (why) body.why = why;
    say(status, () => t("desk.case.sending"));
    const r = await api("POST", casePath(c.id, "/actions"), body);
    if (!r.ok) return sayFailure(status, "desk.case.action.failed", r);
    $("cp-action-why").value = "";
    say(status, () => t("desk.case.action.done", { backoffice: action.backoffice }), true);
    await changed(r.data);
  }

  async function addItem(ev) {
    ev.preventDefault();
    const c = current();
    const status = $("cp-item-status");
    const text = $("cp-item-text").value.trim();
    if (!c) return;
    if (!text) {
      say(status, () => t("desk.case.checklist.text_missing"), false);
      return;
    }
    say(status, () => t("desk.case.sending"));
    const r = await api("POST", casePath(c.id, "/checklist"), { add: [{ text, from: $("cp-item-from").value }] });
    if (!r.ok) return sayFailure(status, "desk.case.checklist.failed", r);
    $("cp-item-text").value = "";
    say(status, () => t("desk.case.checklist.added"), true);
    await changed(r.data);
  }

  async function tick(itemId, done) {
    const c = current();
    const status = $("cp-item-status");
    if (!c) return;
    say(status, () => t("desk.case.sending"));
    const r = await api("POST", casePath(c.id, "/checklist"), done ? { done: [String(itemId)] } : { undone: [String(itemId)] });
    if (!r.ok) {
      sayFailure(status, "desk.case.checklist.failed", r);
      showChecklist(c); // the box as the server has it
      return;
    }
    say(status, () => t(done ? "desk.case.checklist.ticked" : "desk.case.checklist.unticked"), true);
    await changed(r.data);
  }

  // "30", "30.5", "30.50" in the currency's major unit -> integer cents (no floating point); null if not a sum.
  function cents(text, currency) {
    const digits = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
    const m = String(text).trim().match(digits ? new RegExp("^(\\d{1,10})(?:[.,](\\d{1," + digits + "}))?$") : /^(\d{1,12})$/);
    if (!m) return null;
    const value = Number(m[1]) * Math.pow(10, digits) + Number(((m[2] || "") + "0".repeat(digits)).slice(0, digits) || 0);
    return value > 0 ? value : null;
  }

  async function grant(ev) {
    ev.preventDefault();
    const c = current();
    const status = $("cp-comp-status");
    if (!c || !state.policy) return;
    const currency = state.policy.compensation.currency;
    const amount = cents($("cp-comp-amount").value, currency);
    if (amount === null) {
      say(status, () => t("desk.case.comp.bad_amount"), false);
      return;
    }
    if (!$("cp-comp-reason").value.trim()) {
      say(status, () => t("desk.case.comp.reason_missing"), false);
      return;
    }
    if (!state.compKey) state.compKey = "desk-" + (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/[^A-Za-z0-9]/g, "").slice(0, 40);
    say(status, () => t("desk.case.sending"));
    const r = await api("POST", casePath(c.id, "/compensations"),
      { amount_cents: amount, currency, reason: $("cp-comp-reason").value.trim(), key: state.compKey });
    if (!r.ok) return sayFailure(status, "desk.case.comp.failed", r);
    state.compKey = null;
    $("cp-comp-amount").value = "";
    $("cp-comp-reason").value = "";
    if (r.status === 201) say(status, () => t("desk.case.comp.granted", { amount: money(amount, currency) }), true);
    else if (r.status === 202) say(status, () => t("desk.case.comp.requested", { amount: money(amount, currency) }), true);
    else say(status, () => t("desk.case.comp.again", { state: named("desk.case.comp.state.", r.data && r.data.state) }), true);
    const fresh = await api("GET", casePath(c.id));
    await changed(fresh.ok ? fresh.data : null);
  }

  // ---- a new case ----------------------------------------------------------------------------
  function showNewForm() {
    $("case-new-form").hidden = false;
    unsay($("case-new-status"));
    $("case-new-summary").focus();
  }

  async function createCase(ev) {
    ev.preventDefault();
    const status = $("case-new-status");
    if (!state.customerId) return;
    const summary = $("case-new-summary").value.trim();
    if (!summary) {
      say(status, () => t("desk.case.new.summary_missing"), false);
      return;
    }
    const body = { customer_id: state.customerId, summary, severity: Number($("case-new-severity").value) };
    const needed = $("case-new-needed").value.trim();
    if (needed) body.still_needed = needed;
    const me = Desk.agent();
    if (me && !me.supervisor) body.owner_agent = me.id;
    const items = $("case-new-items").value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (items.length) body.checklist = items.map((text) => ({ text, from: "customer" }));
    say(status, () => t("desk.case.sending"));
    const r = await api("POST", "/api/v1/cases", body);
    if (!r.ok) return sayFailure(status, "desk.case.new.failed", r);
    for (const id of ["case-new-summary", "case-new-needed", "case-new-items"]) $(id).value = "";
    state.fresh.set(String(r.data.id), r.data);
    say(status, () => t("desk.case.new.done", { id: r.data.id }), true);
    await openCase(r.data.id);
  }

  // ---- supervisors ---------------------------------------------------------------------------
  async function refreshSupervisor() {
    clearTimeout(state.supTimer);
    const me = Desk.agent();
    if (!me || !me.supervisor) return;
    const [p, o] = await Promise.all([api("GET", "/api/v1/compensations?state=requested"),
      api("GET", "/api/v1/cases?filter=overdue")]);
    if (p.ok && p.data && Array.isArray(p.data.items)) state.pending = p.data.items;
    else sayFailure($("sup-status"), "desk.case.sup.load_failed", p);
    if (o.ok && o.data && Array.isArray(o.data.items)) state.overdue = o.data.items;
    showSupervisor();
    state.supTimer = setTimeout(refreshSupervisor, SUPERVISOR_POLL_MS);
  }

  function showSupervisor() {
    const pending = $("sup-pending");
    clear(pending);
    for (const cp of state.pending) {
      const li = el("li", "case-item pending");
      li.dataset.compensationId = String(cp.id);
      const head = el("div", "case-item-head");
      head.appendChild(el("strong", null, money(cp.amount_cents, cp.currency)));
      head.appendChild(el("span", null, " " + t("desk.case.sup.request", { id: cp.case_id, customer: cp.customer_id,
        who: actor(cp.granted_by), when: when(cp.requested_at) })));
      li.appendChild(head);
      li.appendChild(el("div", "notes", cp.reason));
      const form = el("form", "case-row");
      const lab = el("label");
      lab.appendChild(el("span", null, t("desk.case.sup.why")));
      const why = el("input", "sup-why");
      why.maxLength = 500;
      lab.appendChild(why);
      form.appendChild(lab);
      const approve = el("button", "sup-approve", t("desk.case.sup.approve"));
      approve.type = "submit";
      const refuse = el("button", "sup-refuse", t("desk.case.sup.refuse"));
      refuse.type = "button";
      form.appendChild(approve);
      form.appendChild(refuse);
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        decide(cp, true, why.value.trim());
      });
      refuse.addEventListener("click", () => decide(cp, false, why.value.trim()));
      li.appendChild(form);
      pending.appendChild(li);
    }
    if (!state.pending.length) pending.appendChild(el("li", "muted", t("desk.case.sup.none")));
    const overdue = $("sup-overdue");
    clear(overdue);
    for (const c of state.overdue) {
      const li = el("li", "case-item sev-" + Number(c.severity));
      li.dataset.caseId = String(c.id);
      const head = el("div", "case-item-head");
      head.appendChild(el("strong", null, "#" + c.id + " · " + c.summary));
      head.appendChild(statusTag(c.status));
      head.appendChild(tag(t("desk.case.severity", { severity: c.severity })));
      li.appendChild(head);
      li.appendChild(el("div", "muted", t("desk.case.sup.overdue_line", { customer: c.customer_id, owner: c.owner_agent || "—",
        when: when(c.due_at) })));
      overdue.appendChild(li);
    }
    if (!state.overdue.length) overdue.appendChild(el("li", "muted", t("desk.case.sup.no_overdue")));
  }

  async function decide(cp, approve, why) {
    const status = $("sup-status");
    if (!approve && !why) {
      say(status, () => t("desk.case.sup.why_missing"), false);
      return;
    }
    say(status, () => t("desk.case.sending"));
    const r = await api("POST", "/api/v1/compensations/" + encodeURIComponent(cp.id) + (approve ? "/approve" : "/refuse"),
      why ? { why } : {});
    const amount = () => money(cp.amount_cents, cp.currency);
    if (!r.ok) sayFailure(status, approve ? "desk.case.sup.approve_failed" : "desk.case.sup.refuse_failed", r);
    else say(status, () => t(approve ? "desk.case.sup.approved" : "desk.case.sup.refused", { amount: amount(), id: cp.case_id }), true);
    await refreshSupervisor();
    if (state.openId === String(cp.case_id)) {
      const fresh = await api("GET", casePath(cp.case_id));
      await changed(fresh.ok ? fresh.data : null);
    }
  }

  // ---- the desk's panel hooks ------------------------------------------------------------------
  function onPop(pop) {
    const customerId = pop && pop.customer ? String(pop.customer.id) : null;
    if (customerId !== state.customerId) {
      state.customerId = customerId;
      state.fresh.clear();
      state.openId = null;
      $("case-panel").hidden = true;
      $("case-new-form").hidden = true;
    }
    state.popCases = customerId && Array.isArray(pop.open_cases) ? pop.open_cases : [];
    $("cases-card").hidden = !customerId;
    if (!customerId) return;
    showList();
    loadPolicy();
  }

  function onLanguage() {
    showAuthority();
    if (state.customerId) showList();
    if (state.openId !== null && current()) {
      showPanel();
      showEvents();
      showComps();
    }
    if (!$("supervisor-card").hidden) showSupervisor();
    for (const [node, render] of said) node.textContent = render();
  }

  function onLogin() {
    const me = Desk.agent();
    $("supervisor-card").hidden = !(me && me.supervisor);
    if (me && me.supervisor) refreshSupervisor();
  }

  function onLogout() {
    clearTimeout(state.supTimer);
    Object.assign(state, { policy: null, customerId: null, popCases: [], openId: null, events: [], comps: [],
      compKey: null, pending: [], overdue: [] });
    state.fresh.clear();
    for (const node of Array.from(said.keys())) unsay(node);
    for (const id of ["case-list", "cp-checklist", "cp-comp-list", "cp-events", "sup-pending", "sup-overdue"]) clear($(id));
    $("cases-card").hidden = true;
    $("case-panel").hidden = true;
    $("supervisor-card").hidden = true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("case-new-open").addEventListener("click", showNewForm);
    $("case-new-cancel").addEventListener("click", () => { $("case-new-form").hidden = true; });
    $("case-new-form").addEventListener("submit", createCase);
    $("cp-close").addEventListener("click", closePanel);
    $("cp-move-form").addEventListener("submit", move);
    $("cp-move-to").addEventListener("change", showWhyLabel);
    $("cp-action-form").addEventListener("submit", handOff);
    $("cp-item-form").addEventListener("submit", addItem);
    $("cp-comp-form").addEventListener("submit", grant);
    for (const id of ["cp-comp-amount", "cp-comp-reason"]) $(id).addEventListener("input", () => { state.compKey = null; });
    $("sup-refresh").addEventListener("click", refreshSupervisor);
    // The desk shows #desk-view once the agent is known (after login or on a reload with a session).
    const view = $("desk-view");
    new MutationObserver(() => { if (!view.hidden && Desk.agent()) onLogin(); })
      .observe(view, { attributes: true, attributeFilter: ["hidden"] });
    if (!view.hidden && Desk.agent()) onLogin();
  });

  Desk.addPanel({ onPop, onLanguage, onLogout });
})();
