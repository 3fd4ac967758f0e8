// The task page's live view: poll the progress endpoint until the task finishes,
// then show its result in place. The server escapes everything it sends; this file
// only sets text, except the result section, which the server renders as escaped HTML.
"use strict";

(function () {
  const section = document.getElementById("task");
  if (!section || section.dataset.finished === "yes") {
    return;
  }
  const url = section.dataset.progress;
  const INTERVAL_MS = 1000;
  const note = document.getElementById("live-note");
  if (note) {
    note.textContent = "This page updates by itself.";
  }

  function show(id, text) {
    const element = document.getElementById(id);
    if (element && element.textContent !== text) {
      element.textContent = text;
    }
  }

  async function poll() {
    let response;
    try {
      // One request at a time: in the seed profile each answer moves the password on.
      response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    } catch (error) {
      window.setTimeout(poll, INTERVAL_MS * 5);
      return;
    }
    const body = await response.json();
    if (!response.ok) {
      show("stage", body.reason || "The server refused this page's request.");
      return;
    }
    show("status", body.status);
    show("stage", body.stage);
    show("queue-position", body.queue_position === null ? "–" : String(body.queue_position));
    show("log", body.log);
    if (body.finished) {
      const parsed = new DOMParser().parseFromString(body.result_html, "text/html");
      document.getElementById("result").replaceChildren(...parsed.body.childNodes);
      section.dataset.finished = "yes";
      if (note) {
        note.remove();
      }
      return;
    }
    window.setTimeout(poll, INTERVAL_MS);
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
