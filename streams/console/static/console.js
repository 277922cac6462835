// Sentinel console: live updates over server-sent events, and lazily loaded sections.
// No framework; everything the page shows is rendered by the server.
"use strict";

function refresh(el) {
  return fetch(el.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } })
    .then((r) => (r.ok ? r.text() : null))
    .then((html) => {
      if (html !== null) {
        el.innerHTML = html;
        el.dispatchEvent(new CustomEvent("refreshed", { bubbles: true }));
      }
    });
}

function loadSections() {
  document.querySelectorAll("[data-src]").forEach((el) => {
    fetch(el.dataset.src, { credentials: "same-origin" })
      .then((r) => r.text())
      .then((html) => {
        el.innerHTML = html;
        el.classList.add("loaded");
      });
  });
}

function updateBanner() {
  const banner = document.getElementById("banner");
  if (!banner) return;
  fetch("/healthz")
    .then((r) => r.json())
    .then((h) => {
      if (h.caught_up && h.following) banner.remove();
      else banner.textContent = "reading the topics: " + h.records_read.toLocaleString() + " records";
    });
}

function follow() {
  const live = Array.from(document.querySelectorAll("[data-live]"));
  const banner = document.getElementById("banner");
  if (!live.length && !banner) return;
  const source = new EventSource("/events");
  let pending = null;
  source.addEventListener("change", (msg) => {
    const items = (msg.data.split(" ")[1] || "").split(",");
    updateBanner();
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      live.forEach((el) => {
        const only = el.dataset.incident;
        const concerns = !only || items.includes(only) || items.includes("silences") ||
          items.includes("containment") || items.length >= 50;
        if (concerns) refresh(el);
      });
    }, 300);
  });
  window.addEventListener("pagehide", () => source.close());
}

document.addEventListener("DOMContentLoaded", () => {
  loadSections();
  follow();
});
