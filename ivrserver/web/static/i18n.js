// ivrserver page messages: one catalogue per language, /static/i18n/<lang>.json.
//
// Catalogue format: {"common": {...}, "desk": {...}, "wallboard": {...}, "reports": {...}} — one
// object per page plus "common", flat dotted keys inside each ("login.title"), values are text
// with {name} placeholders. A page names a message by "<section>.<key>" ("desk.login.title").
// (A key written in full inside its section, "desk.login.title" under "desk", is accepted too.)
//
// Use from a page (load this file before the page's script):
//   await I18n.load("zh", ["common", "desk"]);   // fetches the catalogue, translates the page
//   I18n.t("desk.notes.contact", { id: "T1" });  // text; a missing key shows ⟦key⟧ + console error
//   <span data-i18n="desk.login.title">Sign in</span>            (textContent)
//   <input data-i18n-attr="placeholder:desk.x;title:desk.y">    (attributes, "attr:key" pairs)
//   I18n.dateTime(ms) / date(ms) / time(ms) / relative(ms) / duration(seconds) / number(n)
//   I18n.money(cents, "CNY")
// Every value is put on the page as text (textContent / setAttribute), never parsed as markup.
"use strict";

window.I18n = (() => {
  const LANGUAGES = { en: "en-GB", zh: "zh-CN" };
  const SECTIONS = ["common", "desk", "wallboard", "reports"];
  let lang = "en";
  let messages = {};
  const reported = new Set();
  const listeners = [];

  function supported(code) {
    const c = String(code || "").toLowerCase();
    if (c.startsWith("zh")) return "zh";
    if (c.startsWith("en")) return "en";
    return null;
  }

  // The browser's own choice: the first of navigator.languages this server has a catalogue for.
  function browserLanguage() {
    for (const c of navigator.languages || [navigator.language]) {
      const s = supported(c);
      if (s) return s;
    }
    return "en";
  }

  function flatten(data, sections) {
    const out = {};
    for (const section of sections) {
      const entries = data && typeof data[section] === "object" && data[section] ? data[section] : {};
      for (const [k, v] of Object.entries(entries)) {
        if (typeof v !== "string") continue;
        out[k.startsWith(section + ".") ? k : section + "." + k] = v;
      }
    }
    return out;
  }

  async function load(language, sections) {
    lang = supported(language) || "en";
    const wanted = sections && sections.length ? sections : SECTIONS;
    try {
      const r = await fetch("/static/i18n/" + lang + ".json", { cache: "no-cache", credentials: "same-origin" });
      messages = r.ok ? flatten(await r.json(), wanted) : {};
      if (!r.ok) console.error("i18n: catalogue " + lang + " not served (" + r.status + ")");
    } catch (e) {
      messages = {};
      console.error("i18n: catalogue " + lang + " could not be read", e);
    }
    reported.clear();
    document.documentElement.lang = LANGUAGES[lang];
    apply(document);
    for (const fn of listeners) fn(lang);
    return lang;
  }

  function t(key, params) {
    let text = messages[key];
    if (typeof text !== "string") {
      if (!reported.has(key)) {
        reported.add(key);
        console.error("i18n: missing message " + key + " (" + lang + ")");
      }
      return "⟦" + key + "⟧";
    }
    if (params) {
      text = text.replace(/\{([a-zA-Z0-9_]+)\}/g, (m, name) =>
        Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : m);
    }
    return text;
  }

  function has(key) {
    return typeof messages[key] === "string";
  }

  // Static markup: data-i18n (text) and data-i18n-attr ("attr:key;attr:key"), templates included.
  function apply(root) {
    const scope = root || document;
    scope.querySelectorAll("[data-i18n]").forEach((node) => {
      node.textContent = t(node.dataset.i18n);
    });
    scope.querySelectorAll("[data-i18n-attr]").forEach((node) => {
      for (const pair of node.dataset.i18nAttr.split(";")) {
        const at = pair.indexOf(":");
        if (at > 0) node.setAttribute(pair.slice(0, at).trim(), t(pair.slice(at + 1).trim()));
      }
    });
    scope.querySelectorAll("template").forEach((tpl) => apply(tpl.content));
  }

  // ---- locale forms ------------------------------------------------------------------------
  const locale = () => LANGUAGES[lang];
  const asDate = (v) => (v instanceof Date ? v : new Date(v));
  const valid = (d) => !isNaN(d.getTime());

  function dateTime(v) {
    const d = asDate(v);
    return valid(d) ? new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeStyle: "short" }).format(d) : "";
  }
  function date(v) {
    const d = asDate(v);
    return valid(d) ? new Intl.DateTimeFormat(locale(), { dateStyle: "medium" }).format(d) : "";
  }
  function time(v, withSeconds) {
    const d = asDate(v);
    const opts = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (withSeconds) opts.second = "2-digit";
    return valid(d) ? new Intl.DateTimeFormat(locale(), opts).format(d) : "";
  }
  // "3 minutes ago" / "3分钟前": v is a time (ms since the epoch), now defaults to this clock.
  function relative(v, now) {
    const d = asDate(v);
    if (!valid(d)) return "";
    const secs = Math.round((d.getTime() - (now === undefined ? Date.now() : now)) / 1000);
    const fmt = new Intl.RelativeTimeFormat(locale(), { numeric: "auto" });
    const a = Math.abs(secs);
    if (a < 60) return fmt.format(secs, "second");
    if (a < 3600) return fmt.format(Math.round(secs / 60), "minute");
    if (a < 86400) return fmt.format(Math.round(secs / 3600), "hour");
    return fmt.format(Math.round(secs / 86400), "day");
  }
  // A length of time in seconds: "2 min 5 s" / "2分5秒" (units from the catalogue's common.unit.*).
  function duration(seconds) {
    const s = Math.max(0, Math.floor(Number(seconds) || 0));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const parts = [];
    if (h) parts.push(t("common.unit.hours", { n: number(h) }));
    if (m) parts.push(t("common.unit.minutes", { n: number(m) }));
    if (sec || !parts.length) parts.push(t("common.unit.seconds", { n: number(sec) }));
    return parts.join(t("common.unit.separator"));
  }
  function number(n, opts) {
    return new Intl.NumberFormat(locale(), opts).format(n);
  }
  // An amount in minor units (cents, fen) and its ISO 4217 currency: "¥42.50" / "CN¥42.50".
  function money(cents, currency) {
    const code = String(currency || "").toUpperCase();
    if (!/^[A-Z]{3}$/.test(code) || typeof cents !== "number" || !isFinite(cents)) return String(cents ?? "");
    const fmt = new Intl.NumberFormat(locale(), { style: "currency", currency: code });
    const digits = fmt.resolvedOptions().maximumFractionDigits;
    return fmt.format(cents / Math.pow(10, digits));
  }

  // The signed-in agent's language as the server keeps it (GET /api/v1/me/preferences; the
  // supervisor pages' cookie session), or null: not signed in, none kept, unreachable.
  async function serverLanguage() {
    try {
      const r = await fetch("/api/v1/me/preferences", { credentials: "same-origin" });
      const prefs = r.ok ? await r.json() : null;
      return (prefs && supported(prefs.language)) || null;
    } catch (e) { return null; }
  }
  // Keep `language` as the signed-in agent's choice on the server (best effort: the browser
  // remembers it anyway).
  async function saveServerLanguage(language) {
    try {
      await fetch("/api/v1/me/preferences", { method: "PUT", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ language }) });
    } catch (e) { /* remembered in this browser anyway */ }
  }

  return {
    LANGUAGES: Object.keys(LANGUAGES),
    load, t, has, apply, supported, browserLanguage, serverLanguage, saveServerLanguage,
    onChange: (fn) => listeners.push(fn),
    language: () => lang,
    locale,
    dateTime, date, time, relative, duration, number, money,
  };
})();
