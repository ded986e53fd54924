// Every page: the header's menu on narrow screens, and confirmation before destructive forms.
// The pages work without it (the menu wraps, the server asks before deleting).
(function () {
  "use strict";

  // The header's links fold into a "Menu" button on narrow screens.
  const toggle = document.querySelector('[data-role="menu-toggle"]');
  const nav = document.getElementById("site-nav");
  if (toggle && nav) {
    toggle.hidden = false;
    document.documentElement.classList.add("js");
    const setOpen = (open) => {
      toggle.setAttribute("aria-expanded", String(open));
      nav.classList.toggle("open", open);
    };
    toggle.addEventListener("click", () => setOpen(toggle.getAttribute("aria-expanded") !== "true"));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && nav.classList.contains("open")) {
        event.preventDefault(); // handled: the chat page must not also stop a reply
        setOpen(false);
        toggle.focus();
      }
    });
    document.addEventListener("click", (event) => {
      if (nav.classList.contains("open") && !nav.contains(event.target) && event.target !== toggle) setOpen(false);
    });
  }

  // Forms with data-confirm ask in a dialog; then the server need not ask again on a page.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    const ask = form.querySelector('[data-role="ask"]');
    if (ask) ask.remove();
  });

  // An open menu (details.menu) closes on Escape or a click elsewhere, like any menu.
  document.addEventListener("click", (event) => {
    document.querySelectorAll("details.menu[open]").forEach((menu) => {
      if (!menu.contains(event.target)) menu.open = false;
    });
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const menu = event.target.closest && event.target.closest("details.menu[open]");
    if (menu) {
      event.preventDefault(); // handled: the chat page must not also stop a reply
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });
})();
