// Tidings dashboard: what the pages do when scripts run. Every page works
// without this file; with it, times follow the Time setting, live parts
// refresh in place (with a pause), a topic's live tail follows new events,
// commands copy with one click, and keyboard shortcuts move around.
"use strict";

(function () {
  const root = document.documentElement;
  const REFRESH_MS = 5000;
  const TAIL_ROWS_MAX = 1000;

  // Times: UTC as rendered, or the browser's zone, or how long ago.
  function showTimes(scope) {
    const mode = root.dataset.time || "utc";
    if (mode === "utc") return;
    const now = Date.now();
    for (const el of scope.querySelectorAll("time[data-ms]")) {
      const ms = Number(el.dataset.ms);
      if (!el.title) el.title = el.textContent + " UTC";
      if (mode === "local") {
        const d = new Date(ms);
        const pad = (n, w) => String(n).padStart(w || 2, "0");
        el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
          pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
      } else {
        el.textContent = ago(now - ms);
      }
    }
  }

  function ago(ms) {
    const future = ms < 0;
    let s = Math.round(Math.abs(ms) / 1000);
    let text;
    if (s < 60) text = s + " s";
    else if (s < 3600) text = Math.floor(s / 60) + " min " + (s % 60) + " s";
    else if (s < 86400) text = Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    else text = Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
    return future ? "in " + text : text + " ago";
  }

  // One pause for everything that updates by itself (WCAG 2.2.2).
  let paused = false;
  const pausers = [];
  function setPaused(value) {
    paused = value;
    for (const b of document.querySelectorAll("[data-pause]")) {
      b.setAttribute("aria-pressed", String(paused));
      b.textContent = paused ? "Resume live updates" : "Pause live updates";
    }
    for (const f of pausers) f(paused);
  }

  // Sections marked data-refresh are fetched again every few seconds and
  // swapped in place, while the tab is visible and nothing is paused.
  function startRefresh() {
    const parts = document.querySelectorAll("[data-refresh][id]");
    if (parts.length === 0) return false;
    let busy = false;
    setInterval(async function () {
      if (paused || busy || document.hidden) return;
      busy = true;
      try {
        const answer = await fetch(location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
        if (!answer.ok) return;
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        for (const old of document.querySelectorAll("[data-refresh][id]")) {
          const fresh = page.getElementById(old.id);
          if (fresh && fresh.innerHTML !== old.innerHTML && !old.contains(document.activeElement)) {
            old.innerHTML = fresh.innerHTML;
            showTimes(old);
          }
        }
      } catch (e) {
        // The server is away for a moment; the next round tries again.
      } finally {
        busy = false;
      }
    }, REFRESH_MS);
    return true;
  }

  // A topic's live tail: rows arrive over one event stream, newest where
  // the table puts them. Pausing closes the stream; resuming opens it again
  // from where it stopped, so nothing is missed.
  function startTail() {
    const button = document.querySelector("[data-tail]");
    const body = document.querySelector("[data-tail-target]");
    if (!button || !body) return false;
    const state = document.querySelector("[data-tail-state]");
    const top = body.dataset.tailTarget === "top";
    let source = null;
    let lastId = "";
    let arrived = 0;
    let announce = null;
    button.hidden = false;
    function say(text) { if (state) state.textContent = text; }
    function open() {
      let url = button.dataset.tail;
      if (lastId) url += (url.includes("?") ? "&" : "?") + "at=" + encodeURIComponent(lastId);
      source = new EventSource(url);
      source.onmessage = function (m) {
        lastId = m.lastEventId || lastId;
        const t = document.createElement("template");
        t.innerHTML = m.data.trim();
        const row = t.content.firstElementChild;
        if (!row) return;
        row.classList.add("new");
        showTimes(row);
        if (top) body.prepend(row); else body.append(row);
        while (body.rows.length > TAIL_ROWS_MAX) {
          if (top) body.lastElementChild.remove(); else body.firstElementChild.remove();
        }
        arrived += 1;
        if (!announce) {
          announce = setTimeout(function () {
            say(arrived + " new event" + (arrived === 1 ? "" : "s") + " since the tail started");
            announce = null;
          }, 1000);
        }
      };
      source.addEventListener("error", function () {
        if (source && source.readyState === EventSource.CLOSED) say("The live tail stopped; press Live tail to start it again.");
      });
      button.setAttribute("aria-pressed", "true");
      say("Following new events");
    }
    function close() {
      if (source) source.close();
      source = null;
      button.setAttribute("aria-pressed", "false");
      say("Live tail paused");
    }
    button.addEventListener("click", function () { if (source) close(); else open(); });
    pausers.push(function (p) { if (p && source) close(); });
    document.addEventListener("visibilitychange", function () {
      if (document.hidden && source) { close(); button.dataset.resume = "1"; }
      else if (!document.hidden && button.dataset.resume) { delete button.dataset.resume; if (!paused) open(); }
    });
    if (button.dataset.tailOn === "true") open(); else button.setAttribute("aria-pressed", "false");
    return true;
  }

  function addPause() {
    const main = document.getElementById("main");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.pause = "";
    b.className = "quiet";
    b.setAttribute("aria-pressed", "false");
    b.textContent = "Pause live updates";
    b.addEventListener("click", function () { setPaused(!paused); });
    main.prepend(b);
  }

  function addCopyButtons() {
    for (const pre of document.querySelectorAll("pre.copyable")) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "copy";
      b.textContent = "Copy";
      b.addEventListener("click", async function () {
        try {
          await navigator.clipboard.writeText(pre.innerText);
          b.textContent = "Copied";
        } catch (e) {
          b.textContent = "Select and copy by hand";
        }
        setTimeout(function () { b.textContent = "Copy"; }, 2000);
      });
      pre.after(b);
    }
  }

  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }

  function openHelp() {
    const d = document.getElementById("help-dialog");
    if (d && !d.open) d.showModal();
  }

  const GO = { o: "/ui", t: "/ui/topics", c: "/ui/groups", q: "/ui/queues" };
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Escape" && typing(e.target)) { e.target.blur(); return; }
    if (typing(e.target) || document.querySelector("dialog[open]")) return;
    if (e.key === "/") {
      const field = document.querySelector("[data-search]") || document.getElementById("goto");
      if (field) { e.preventDefault(); field.focus(); field.select(); }
    } else if (e.key === "g") {
      e.preventDefault();
      document.getElementById("goto").focus();
    } else if (e.key === "?") {
      e.preventDefault();
      openHelp();
    } else if (e.key === "p") {
      if (document.querySelector("[data-pause]")) setPaused(!paused);
    } else if (GO[e.key]) {
      location.href = GO[e.key];
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    showTimes(document);
    for (const select of document.querySelectorAll("select[data-autosubmit]")) {
      select.addEventListener("change", function () { select.form.requestSubmit(); });
    }
    for (const b of document.querySelectorAll("form.prefs button")) b.hidden = true;
    const help = document.querySelector("[data-help]");
    if (help) help.addEventListener("click", function (e) { e.preventDefault(); openHelp(); });
    const refreshing = startRefresh();
    const tailing = startTail();
    if (refreshing || tailing) addPause();
    addCopyButtons();
    if (root.dataset.time === "relative") setInterval(function () { showTimes(document); }, 10000);
  });
})();
