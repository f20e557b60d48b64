// ivrserver agent desktop: what the server gave up delivering (issue 18 §2 "a dead-letter list
// supervisors see"). Loaded after app.js; joins the desk with Desk.addPanel({onLanguage, onLogout}).
//
// Supervisors only: two lists side by side — outgoing webhook deliveries given up on
// (GET /api/v1/webhooks/dead) and case changes a follow-up step gave up on
// (GET /api/v1/case-followup/dead) — each entry with when, what and why, and a Retry button that
// re-queues it once (POST …/retry). The card is built here (index.html carries only this script's
// tag); it sits after the supervisor card.
//
// Rules: every value from the server is put on the page with textContent / createElement (never
// parsed as markup); every label goes through the catalogue (desk.deliveries.*) and follows the
// language switch.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18n.t(key, params);
  const { el, clear, named, when, api } = Desk;
  const POLL_MS = 30000;
  const KNOWN = { 0: "offline", 401: "login", 403: "forbidden", 404: "not_found", 409: "conflict", 429: "throttled" };

  const state = { webhooks: [], followup: [], timer: null, busy: new Set() };
  const said = new Map(); // node -> () => text, redrawn on a language switch

  function say(node, render, ok) {
    said.set(node, render);
    node.textContent = render();
    if (ok === undefined) delete node.dataset.ok;
    else node.dataset.ok = ok ? "1" : "0";
  }
  function reason(r) {
    const detail = r.data && typeof r.data.error === "string" ? " — " + r.data.error : "";
    const word = KNOWN[r.status] ? t("desk.error." + KNOWN[r.status]) : t("desk.error.server", { status: r.status });
    return word + detail;
  }

  // ---- the card --------------------------------------------------------------------------------
  function labelled(tag, className, key) {
    // Built before the catalogue is read: I18n.apply fills it in then and on every language switch.
    const node = el(tag, className, I18n.has(key) ? t(key) : "");
    node.dataset.i18n = key;
    return node;
  }
  function build() {
    if ($("deliveries-card")) return;
    const card = el("section", "card supervisor-card deliveries-card");
    card.id = "deliveries-card";
    card.hidden = true;
    const head = el("div", "cases-head");
    head.appendChild(labelled("h3", null, "desk.deliveries.title"));
    const refresh = labelled("button", null, "desk.deliveries.refresh");
    refresh.type = "button";
    refresh.id = "dl-refresh";
    refresh.addEventListener("click", () => refreshLists());
    head.appendChild(refresh);
    card.appendChild(head);
    card.appendChild(labelled("p", "muted", "desk.deliveries.intro"));
    const status = el("p", "status");
    status.id = "dl-status";
    status.setAttribute("role", "status");
    card.appendChild(status);
    card.appendChild(labelled("h3", null, "desk.deliveries.webhooks"));
    const hooks = el("ul", "case-list");
    hooks.id = "dl-webhooks";
    card.appendChild(hooks);
    card.appendChild(labelled("h3", null, "desk.deliveries.followup"));
    const followup = el("ul", "case-list");
    followup.id = "dl-followup";
    card.appendChild(followup);
    const after = $("supervisor-card");
    if (after && after.parentNode) after.parentNode.insertBefore(card, after.nextSibling);
    else if ($("main-col")) $("main-col").appendChild(card);
  }

  // ---- entries ---------------------------------------------------------------------------------
  function retryButton(onClick, ident) {
    const button = el("button", "dl-retry", t("desk.deliveries.retry"));
    button.type = "button";
    button.disabled = state.busy.has(ident);
    button.addEventListener("click", onClick);
    return button;
  }

  function webhookItem(d) {
    const li = el("li", "case-item dead-letter");
    li.dataset.deliveryId = String(d.id);
    const head = el("div", "case-item-head");
    const what = () => t("desk.deliveries.webhook.what", { event: d.event, endpoint: d.endpoint });
    head.appendChild(el("strong", null, what()));
    head.appendChild(el("span", "tag", t("desk.deliveries.dead_at", { time: when(d.updated_at) })));
    head.appendChild(retryButton(() => retry(d.id, "/api/v1/webhooks/deliveries/" + encodeURIComponent(d.id) + "/retry",
      what), d.id));
    li.appendChild(head);
    if (d.dead_reason) li.appendChild(el("div", "notes", t("desk.deliveries.webhook.why", { reason: d.dead_reason })));
    const answer = [d.last_status, d.last_error].filter((x) => x !== null && x !== undefined && x !== "").join(" ");
    if (answer) li.appendChild(el("div", "muted", t("desk.deliveries.webhook.last", { answer })));
    li.appendChild(el("div", "muted", t("desk.deliveries.webhook.attempts", {
      n: I18n.number(Number(d.attempts) || 0), first: when(d.created_at) })));
    li.appendChild(el("div", "muted", t("desk.deliveries.webhook.key", { key: d.key })));
    return li;
  }

  function followupItem(d) {
    const li = el("li", "case-item dead-letter");
    li.dataset.letterId = String(d.id);
    const head = el("div", "case-item-head");
    const what = () => t("desk.deliveries.followup.what", { case: "#" + d.case_id, customer: d.customer_id,
      kind: named("desk.case.kind.", d.kind) });
    head.appendChild(el("strong", null, what()));
    head.appendChild(el("span", "tag", named("desk.deliveries.handler.", d.handler)));
    head.appendChild(el("span", "tag", t("desk.deliveries.dead_at", { time: when(d.dead_at) })));
    head.appendChild(retryButton(() => retry(d.id, "/api/v1/case-followup/dead/" + encodeURIComponent(d.id) + "/retry",
      what), d.id));
    li.appendChild(head);
    li.appendChild(el("div", "notes", t("desk.deliveries.followup.why", { error: d.error })));
    li.appendChild(el("div", "muted", named("desk.deliveries.reason.", d.reason) + " · " +
      t("desk.deliveries.followup.attempts", { n: I18n.number(Number(d.attempts) || 0), first: when(d.first_at),
        last: when(d.last_at) })));
    return li;
  }

  function render() {
    const hooks = $("dl-webhooks");
    const followup = $("dl-followup");
    if (!hooks || !followup) return;
    clear(hooks);
    for (const d of state.webhooks) hooks.appendChild(webhookItem(d));
    if (!state.webhooks.length) hooks.appendChild(el("li", "muted", t("desk.deliveries.none")));
    clear(followup);
    for (const d of state.followup) followup.appendChild(followupItem(d));
    if (!state.followup.length) followup.appendChild(el("li", "muted", t("desk.deliveries.none")));
  }

  // ---- REST ------------------------------------------------------------------------------------
  async function refreshLists() {
    clearTimeout(state.timer);
    const me = Desk.agent();
    if (!me || !me.supervisor) return;
    const [w, f] = await Promise.all([api("GET", "/api/v1/webhooks/dead?limit=100"),
      api("GET", "/api/v1/case-followup/dead?limit=100")]);
    if (!Desk.agent()) return; // logged out meanwhile
    if (w.ok && w.data && Array.isArray(w.data.deliveries)) state.webhooks = w.data.deliveries;
    if (f.ok && f.data && Array.isArray(f.data.items)) state.followup = f.data.items;
    const bad = [w, f].find((r) => !r.ok);
    if (bad) say($("dl-status"), () => t("desk.deliveries.load_failed", { reason: reason(bad) }), false);
    render();
    state.timer = setTimeout(refreshLists, POLL_MS);
  }

  async function retry(ident, path, what) {
    if (state.busy.has(ident)) return; // a double click re-queues once
    state.busy.add(ident);
    render();
    const status = $("dl-status");
    say(status, () => t("desk.deliveries.retrying"));
    const r = await api("POST", path, {});
    state.busy.delete(ident);
    if (r.ok) say(status, () => t("desk.deliveries.retried", { what: what() }), true);
    else if (r.status === 404 || r.status === 409) say(status, () => t("desk.deliveries.gone"), false);
    else say(status, () => t("desk.deliveries.retry_failed", { reason: reason(r) }), false);
    await refreshLists();
  }

  // ---- the desk's panel hooks --------------------------------------------------------------------
  function onLogin() {
    const me = Desk.agent();
    const card = $("deliveries-card");
    if (!card) return;
    card.hidden = !(me && me.supervisor);
    if (me && me.supervisor) refreshLists();
  }

  function onLanguage() {
    const card = $("deliveries-card");
    if (card && !card.hidden) render();
    for (const [node, text] of said) node.textContent = text();
  }

  function onLogout() {
    clearTimeout(state.timer);
    state.webhooks = [];
    state.followup = [];
    state.busy.clear();
    said.clear();
    const status = $("dl-status");
    if (status) {
      status.textContent = "";
      delete status.dataset.ok;
    }
    for (const id of ["dl-webhooks", "dl-followup"]) if ($(id)) clear($(id));
    if ($("deliveries-card")) $("deliveries-card").hidden = true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    build();
    // The desk shows #desk-view once the agent is known (after login or on a reload with a session).
    const view = $("desk-view");
    new MutationObserver(() => { if (!view.hidden && Desk.agent()) onLogin(); })
      .observe(view, { attributes: true, attributeFilter: ["hidden"] });
    if (!view.hidden && Desk.agent()) onLogin();
  });

  Desk.addPanel({ onLanguage, onLogout });
})();
