// The 届出 and hold forms, as fast as paper: the kind by its number key,
// Enter moves to the next field instead of sending, Ctrl+Enter records.
// Only the chosen kind's fields are shown and sent. Without JavaScript
// every field shows and the server reads the chosen kind's only.
"use strict";

(function () {
  const form = document.getElementById("filing-form") || document.getElementById("hold-form");
  if (!form) return;
  const fieldsets = Array.from(form.querySelectorAll("fieldset[data-kinds]"));

  function chosenKind() {
    const radio = form.querySelector('input[name="kind"]:checked');
    return radio ? radio.value : "";
  }

  function showKind() {
    const kind = chosenKind();
    fieldsets.forEach((set) => {
      const shown = set.dataset.kinds.split(" ").includes(kind);
      set.hidden = !shown;
      set.disabled = !shown;
    });
  }

  function fields() {
    return Array.from(form.querySelectorAll("input, select, textarea"))
      .filter((el) => el.type !== "hidden" && !el.disabled && el.offsetParent !== null);
  }

  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { form.requestSubmit(); e.preventDefault(); return; }
    const t = e.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA") && t.type !== "radio" && t.type !== "checkbox";
    if (e.key === "Enter" && typing && t.tagName !== "TEXTAREA") {
      const list = fields();
      const next = list[list.indexOf(t) + 1];
      if (next) { next.focus(); e.preventDefault(); }
      return;
    }
    if (typing) return;
    const radio = form.querySelector(`input[name="kind"][data-key="${e.key}"]:not([disabled])`);
    if (radio) { radio.checked = true; radio.focus(); showKind(); e.preventDefault(); }
  });
  form.querySelectorAll('input[name="kind"]').forEach((radio) => radio.addEventListener("change", showKind));
  form.addEventListener("submit", () => {
    const button = form.querySelector('button[type="submit"]');
    if (button) { button.disabled = true; }
  });
  showKind();
  const first = fields().find((el) => el.name !== "kind");
  if (first) first.focus();
})();
