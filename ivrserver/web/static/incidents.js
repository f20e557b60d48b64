// ivrserver agent desktop: the known incidents on the pop (issue 19). Loaded after app.js; joins the
// desk with Desk.addPanel. A caller from an area with an active mass-fault incident already heard
// the announcement: the agent sees the same facts (service, area, state, cause, expected fix) so
// the call can be short. Values from the server go on the page with textContent only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18n.t(key, params);
  const { el, clear, named, when } = Desk;
  let shown = [];

  // the name in the page's language when the pop carries it, else the English one
  function local(names, fallback) {
    const name = names && typeof names === "object" ? names[I18n.language()] : undefined;
    return typeof name === "string" && name ? name : fallback || "";
  }

  function line(incident) {
    const item = el("li", "incident");
    item.appendChild(el("strong", null, t("desk.incident.line", {
      service: local(incident.service_names, incident.service), area: local(incident.area_names, incident.area),
    })));
    item.appendChild(el("span", "tag", named("desk.incident.state.", incident.state || "open")));
    if (incident.cause) item.appendChild(el("div", "muted", t("desk.incident.cause", { cause: incident.cause })));
    if (typeof incident.expected_fix_at === "number") {
      item.appendChild(el("div", "muted", t("desk.incident.fix", { time: when(incident.expected_fix_at) })));
    }
    return item;
  }

  function render() {
    const box = $("pop-incidents-box");
    const list = $("pop-incidents");
    if (!box || !list) return;
    clear(list);
    for (const incident of shown) list.appendChild(line(incident));
    box.hidden = shown.length === 0;
  }

  Desk.addPanel({
    onPop(pop) {
      shown = Array.isArray(pop && pop.incidents) ? pop.incidents.slice(0, 5) : [];
      render();
    },
    onLanguage: render,
    onLogout() {
      shown = [];
      render();
    },
  });
})();
