// shiplog dashboard: live updates over server-sent events. No build step, no library.
"use strict";

function connect(url, handlers) {
  const dot = document.getElementById("live-state");
  const source = new EventSource(url);
  source.onopen = () => dot && dot.classList.add("on");
  source.onerror = () => dot && dot.classList.remove("on");
  for (const [name, fn] of Object.entries(handlers)) source.addEventListener(name, fn);
  return source;
}

function liveOverview(root) {
  connect(root.dataset.events, {
    overview: (e) => { root.innerHTML = e.data; },
  });
}

function liveDeployment(root) {
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const answer = await fetch(root.dataset.fragment, { credentials: "same-origin" });
      if (answer.ok) {
        const open = [...root.querySelectorAll("details[open]")].map((d, i) => i);
        root.innerHTML = await answer.text();
        root.querySelectorAll("details").forEach((d, i) => { if (open.includes(i)) d.open = true; });
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  connect(root.dataset.events, { deployment: refresh });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live=overview]").forEach(liveOverview);
  document.querySelectorAll("[data-live=deployment]").forEach(liveDeployment);
});
