// The 届出 and hold forms, as fast as paper: the kind by its number key
// (the cursor then goes to the first field), Enter moves to the next field
// instead of sending, Ctrl+Enter records. Only the chosen kind's fields are
// shown and sent; without JavaScript every field shows and the server
// reads the chosen kind's only.
"use strict";

(function () {
  const form = document.getElementById("filing-form") || document.getElementById("hold-form");
  if (!form) return;
  const fieldsets = Array.from(form.querySelectorAll("fieldset[data-kinds]"));
  const kinds = Array.from(form.querySelectorAll('input[name="kind"]'));

  function showKind() {
    const chosen = kinds.find((radio) => radio.checked);
    fieldsets.forEach((set) => {
      const shown = Boolean(chosen) && set.dataset.kinds.split(" ").includes(chosen.value);
      set.hidden = !shown;
      set.disabled = !shown;
    });
  }

  function fields() {
    return Array.from(form.querySelectorAll("input, select, textarea"))
      .filter((el) => el.type !== "hidden" && el.name !== "kind" && !el.disabled && el.offsetParent !== null);
  }

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || (el.tagName === "INPUT" && !["radio", "checkbox"].includes(el.type)));
  }

  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { form.requestSubmit(); e.preventDefault(); return; }
    const t = e.target;
    if (e.key === "Enter" && form.contains(t) && t.tagName !== "TEXTAREA" && t.tagName !== "BUTTON") {
      const list = fields();
      const next = t.name === "kind" ? list[0] : list[list.indexOf(t) + 1];
      if (next) { next.focus(); e.preventDefault(); }
      return;
    }
    if (typing(t)) return;
    const radio = kinds.find((r) => r.dataset.key === e.key && !r.disabled);
    if (radio) {
      radio.checked = true;
      showKind();
      const first = fields()[0];
      (first || radio).focus();
      e.preventDefault();
    }
  });
  kinds.forEach((radio) => radio.addEventListener("change", showKind));
  form.addEventListener("submit", () => {
    const button = form.querySelector('button[type="submit"]');
    if (button) { button.disabled = true; }
  });
  showKind();
  const start = kinds.find((r) => r.checked) || kinds.find((r) => !r.disabled);
  if (start) start.focus();
})();
