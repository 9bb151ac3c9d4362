// Keyboard-first counter: search → select → type → issue → print without
// the mouse. No framework, no CDN; works in Chromium and Edge.
"use strict";

function typingInField(event) {
  const t = event.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT") && t.type !== "radio" && t.type !== "checkbox";
}

function setupResults() {
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
  rows[0].focus();
}

function setupIssueForm() {
  const form = document.getElementById("issue-form");
  if (!form) return;
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { form.requestSubmit(); e.preventDefault(); return; }
    if (typingInField(e)) return;
    const radio = form.querySelector(`input[name="kind"][data-key="${e.key}"]`);
    if (radio) { radio.checked = true; radio.focus(); e.preventDefault(); }
  });
  // The submit button disables itself: a double press must not issue twice.
  form.addEventListener("submit", () => {
    const button = document.getElementById("issue-button");
    if (button) { button.disabled = true; button.textContent = "交付処理中…"; }
  });
}

function setupShortcuts() {
  document.addEventListener("keydown", (e) => {
    if (typingInField(e) && e.key !== "Escape") return;
    if (e.key === "Escape") {
      const back = document.getElementById("back-to-search");
      if (back) { window.location = back.href; return; }
      const kana = document.getElementById("q-kana");
      if (kana) { kana.focus(); kana.select(); }
    }
    if ((e.key === "n" || e.key === "N") && document.getElementById("next-resident")) {
      window.location = document.getElementById("next-resident").href;
    }
    if ((e.key === "p" || e.key === "P") && document.getElementById("open-pdf")) {
      window.open(document.getElementById("open-pdf").href, "_blank");
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupResults();
  setupIssueForm();
  setupShortcuts();
});
