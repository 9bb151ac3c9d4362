// Keyboard-first counter: search → select → type → issue → print without
// the mouse, and every open screen kept current by short polling of
// /api/v1/status (no server-sent events: each would hold one of waitress's
// threads). No framework, no CDN; works in Chromium and Edge.
"use strict";

function typingInField(event) {
  const t = event.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT") && t.type !== "radio" && t.type !== "checkbox";
}

// The outcome of what was just done (a refusal, a confirmation, an issued
// certificate) is at the top of the page: the focus goes there, so that a
// screen reader reads it and the keyboard starts from it.
function focusOutcome() {
  const outcome = document.querySelector("main .outcome:not([hidden])");
  if (outcome) {
    outcome.focus();
    window.scrollTo(0, 0);
    return true;
  }
  return false;
}

function setupResults(focusFirst) {
  const rows = Array.from(document.querySelectorAll("tr.result-row"));
  if (!rows.length) return;
  rows.forEach((row, i) => {
    row.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown" && rows[i + 1]) { rows[i + 1].focus(); e.preventDefault(); }
      if (e.key === "ArrowUp") { (rows[i - 1] || document.getElementById("q-kana")).focus(); e.preventDefault(); }
      if (e.key === "Enter") { window.location = row.dataset.href; e.preventDefault(); }
    });
  });
  // From the search fields, ArrowDown jumps into the results.
  document.querySelectorAll("#search-form input").forEach((input) => {
    input.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown") { rows[0].focus(); e.preventDefault(); }
    });
  });
  // After a search, put the focus on the first result so Enter opens it.
  if (focusFirst) rows[0].focus();
}

function setupHousehold(form) {
  const whole = document.getElementById("whole-household");
  const members = Array.from(form.querySelectorAll("input.member"));
  if (!whole) return;
  // Ticking 世帯全員 ticks every member; unticking one member unticks 世帯全員.
  whole.addEventListener("change", () => {
    if (whole.checked) members.forEach((m) => { m.checked = true; });
  });
  members.forEach((m) => m.addEventListener("change", () => { if (!m.checked) whole.checked = false; }));
}

function setupIssueForm() {
  const form = document.getElementById("issue-form");
  if (!form) return;
  const button = document.getElementById("issue-button");
  const label = button ? button.innerHTML : "";
  const seal = document.getElementById("seal-card-number");
  const whole = document.getElementById("whole-household");
  setupHousehold(form);
  // The next decision is the type: the focus starts there (unless an outcome holds it).
  const kind = form.querySelector('input[name="kind"]:checked');
  if (kind && document.activeElement === document.body) kind.focus();
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { form.requestSubmit(); e.preventDefault(); return; }
    // Enter alone never issues (a browser submits a form on Enter in a field):
    // only Ctrl+Enter or the button do, so a second Enter from the results list is harmless.
    if (e.key === "Enter" && form.contains(e.target) && e.target.tagName === "INPUT") { e.preventDefault(); return; }
    if (typingInField(e) || e.ctrlKey || e.altKey || e.metaKey) return;
    const radio = form.querySelector(`input[name="kind"][data-key="${e.key}"]`);
    if (radio) {
      radio.checked = true;
      // 印鑑登録証明書 needs the card's number: go straight to its field.
      (radio.value === "inkan" && seal ? seal : radio).focus();
      e.preventDefault();
      return;
    }
    if ((e.key === "h" || e.key === "H") && whole) {
      whole.checked = !whole.checked;
      whole.dispatchEvent(new Event("change"));
      whole.focus();
      e.preventDefault();
    }
  });
  // The button says it is working and ignores a second press; the form's
  // key makes the server answer any resubmission with the first result.
  form.addEventListener("submit", () => {
    form.dataset.submitted = "1";
    if (button) { button.disabled = true; button.textContent = "交付処理中…"; }
  });
  // Back after issuing may restore this page as it was left (the back/forward
  // cache): never with a frozen button, and saying the form was sent.
  window.addEventListener("pageshow", (e) => {
    if (!e.persisted || !button) return;
    button.disabled = false;
    button.innerHTML = label;
    if (form.dataset.submitted) document.getElementById("resubmit-note").hidden = false;
  });
}

function setupShortcuts() {
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.altKey || e.metaKey) return;
    if (typingInField(e) && e.key !== "Escape") return;
    if (e.key === "Escape") {
      const back = document.getElementById("back-to-search");
      if (back) { window.location = back.href; return; }
      const kana = document.getElementById("q-kana");
      if (kana) { kana.focus(); kana.select(); }
    }
    const key = e.key.toLowerCase();
    if (key === "n" && document.getElementById("next-resident")) {
      window.location = document.getElementById("next-resident").href;
    }
    if (key === "a" && document.getElementById("same-person")) {
      window.location = document.getElementById("same-person").href;
    }
    if (key === "p") {
      // One key: the terminal's printer when it has one, else the PDF to print from the browser.
      const print = document.getElementById("print-form");
      if (print) { document.getElementById("print-button").disabled = true; print.requestSubmit(); return; }
      if (document.getElementById("open-pdf")) window.open(document.getElementById("open-pdf").href, "_blank");
    }
  });
}

// --- keeping the screen current ---------------------------------------------------------

function setText(id, text) {
  const element = document.getElementById(id);
  if (element) element.textContent = text;
}

function showBanner(banner) {
  const header = document.getElementById("banner");
  if (!header) return;
  header.className = `banner banner-${banner.level}`;
  document.body.classList.remove("mode-standby", "mode-suspect", "mode-downtime", "mode-recovery");
  document.body.classList.add(`mode-${banner.mode}`);
  setText("banner-mode", banner.mode_label);
  const asOf = document.getElementById("banner-asof");
  if (asOf) {
    asOf.replaceChildren();
    const strong = document.createElement("strong");
    if (banner.as_of_text) {
      strong.textContent = banner.as_of_text;
      asOf.append("データ時点: ", strong, `（${banner.age_text}前）`);
    } else {
      strong.textContent = "住民記録の写しがありません";
      asOf.append(strong);
    }
  }
  const warning = document.getElementById("banner-warning");
  if (warning) { warning.textContent = banner.warning || ""; warning.hidden = !banner.warning; }
}

function announce(text) {
  const live = document.getElementById("live-status");
  if (!live) return;
  live.textContent = text;
  live.hidden = false;
  live.focus();
  window.scrollTo(0, 0);
}

function formIsBusy(main) {
  // Never pull the page from under someone typing or with unsaved changes.
  const active = document.activeElement;
  return (active && main.contains(active) && typingInField({ target: active })) || main.querySelector("form[data-dirty]") !== null;
}

async function refreshMain(main) {
  const answer = await fetch(window.location.href, { headers: { "X-Sonae-Poll": "1" }, credentials: "same-origin", cache: "no-store" });
  if (!answer.ok || formIsBusy(main)) return;
  const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").querySelector("main");
  if (!fresh) return;
  const live = document.getElementById("live-status");
  main.replaceChildren(...fresh.childNodes);
  if (live) main.replaceChild(live, document.getElementById("live-status"));
  watchForms(main);
}

function watchForms(root) {
  root.querySelectorAll("form").forEach((form) => form.addEventListener("input", () => { form.dataset.dirty = "1"; }));
}

function setupLiveStatus() {
  const body = document.body;
  const url = body.dataset.statusUrl;
  if (!url) return;  // not logged in
  const main = document.querySelector("main[data-refresh-seconds]");
  const maxAge = main ? Number(main.dataset.refreshSeconds) * 1000 : 0;
  let mode = body.dataset.mode;
  let counterOpen = body.dataset.counterOpen;
  let revision = body.dataset.revision;
  let refreshedAt = Date.now();
  if (main) watchForms(main);

  async function poll() {
    if (document.visibilityState !== "visible") return;
    let answer;
    try {
      answer = await fetch(url, { headers: { "X-Sonae-Poll": "1", Accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
    } catch (error) {
      return;  // the box is unreachable for a moment: the next poll tries again
    }
    if (answer.status === 401) {  // the session ended (idle, logged out elsewhere)
      window.location = `${body.dataset.loginUrl}&next=${encodeURIComponent(window.location.pathname)}`;
      return;
    }
    if (!answer.ok) return;
    const status = await answer.json();
    showBanner(status.banner);
    const open = status.counter ? (status.counter.open ? "1" : "0") : "";
    if (status.mode !== mode || open !== counterOpen) {
      announce(`運用モードが「${status.mode_label}」に変わりました。${status.counter ? status.counter.message : ""}`);
      mode = status.mode;
      counterOpen = open;
    }
    if (main && (status.revision !== revision || Date.now() - refreshedAt > maxAge)) {
      revision = status.revision;
      refreshedAt = Date.now();
      refreshMain(main);
    }
  }
  window.setInterval(poll, Number(body.dataset.pollMs) || 5000);
}

// The public notice: its content is fetched again every few minutes and
// replaced in place (no reload under the reader, no meta refresh).
function setupPublicRefresh() {
  const main = document.querySelector("main[data-public-refresh-seconds]");
  if (!main) return;
  window.setInterval(async () => {
    if (document.visibilityState !== "visible") return;
    try {
      const answer = await fetch(window.location.href, { cache: "no-store" });
      if (!answer.ok) return;
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").querySelector("main");
      if (fresh) main.replaceChildren(...fresh.childNodes);
    } catch (error) {
      // offline for a moment: the next turn tries again
    }
  }, Number(main.dataset.publicRefreshSeconds) * 1000);
}

// A form whose edits matter (the residents' notice): leaving the page with
// unsaved edits asks first; sending it (save or approve) does not.
function setupUnsavedWarning() {
  document.querySelectorAll("form[data-warn-unsaved]").forEach((form) => {
    let dirty = false;
    form.addEventListener("input", () => { dirty = true; });
    form.addEventListener("submit", () => { dirty = false; });
    window.addEventListener("beforeunload", (e) => {
      if (dirty) { e.preventDefault(); e.returnValue = ""; }
    });
  });
}

// /verify: the answer comes into view (a phone shows the form first).
function setupVerify() {
  const result = document.getElementById("verify-result") || document.getElementById("verify-error");
  if (result) { result.scrollIntoView({ block: "start" }); result.focus(); }
}

document.addEventListener("DOMContentLoaded", () => {
  setupResults(!focusOutcome());
  setupIssueForm();
  setupShortcuts();
  setupLiveStatus();
  setupVerify();
  setupUnsavedWarning();
  setupPublicRefresh();
  document.documentElement.dataset.ready = "1";  // the keys work from now on (the browser tests wait for it)
});
