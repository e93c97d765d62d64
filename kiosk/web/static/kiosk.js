/* Lightbox kiosk page behaviour. Served from the kiosk itself; the CSP forbids inline scripts. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function post(url) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), "Accept": "application/json" }
    });
  }

  /* ---- live page ---- */
  var PREVIEW_MS = 1000;
  var POLL_MS = 4000;

  function setupLive() {
    var preview = document.getElementById("preview");
    var statusBox = document.getElementById("status");
    var message = document.getElementById("state-message");
    var advice = document.getElementById("state-advice");
    var cameraNote = document.getElementById("camera-note");
    var latest = document.getElementById("latest");
    var button = document.getElementById("capture-now");
    var feedback = document.getElementById("capture-feedback");
    var shownResult = null;
    var card = latest.querySelector("[data-result-id]");
    if (card) { shownResult = card.getAttribute("data-result-id"); }

    function refreshPreview() {
      var next = new Image();
      next.onload = function () { preview.src = next.src; setTimeout(refreshPreview, PREVIEW_MS); };
      next.onerror = function () { setTimeout(refreshPreview, PREVIEW_MS * 3); };
      next.src = "/preview.jpg?t=" + Date.now();
    }

    function refreshLatest() {
      fetch("/live/latest", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          latest.innerHTML = html;
          feedback.textContent = "";
          var c = latest.querySelector("[data-result-id]");
          shownResult = c ? c.getAttribute("data-result-id") : null;
        });
    }

    function showStatus(s) {
      if (!s || !s.state) { return; }
      statusBox.className = "status state-" + s.state + " latest-" + (s.latest_result_status || "none");
      statusBox.setAttribute("data-state", s.state);
      message.textContent = s.message;
      advice.textContent = s.advice;
      if (s.camera) {
        cameraNote.textContent = s.camera.ok ? "Camera working" : "Camera not working";
      }
      if (s.latest_result_id && s.latest_result_id !== shownResult) { refreshLatest(); }
      if (s.state !== "analysing" && s.state !== "film_detected") { button.disabled = false; }
    }

    function poll() {
      fetch("/status.json", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(showStatus)
        .catch(function () {})
        .then(function () { setTimeout(poll, POLL_MS); });
    }

    if (window.EventSource) {
      var source = new EventSource("/events");
      source.addEventListener("status", function (e) { showStatus(JSON.parse(e.data)); });
      source.addEventListener("result", function () { refreshLatest(); });
    }
    poll();
    refreshPreview();

    button.addEventListener("click", function () {
      button.disabled = true;
      feedback.textContent = "Taking the photo…";
      post("/capture")
        .then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
        .then(function (pair) {
          feedback.textContent = pair[0] ? pair[1].message : (pair[1].error + ". " + (pair[1].fix || ""));
          if (!pair[0]) { button.disabled = false; }
        })
        .catch(function () { feedback.textContent = "The kiosk did not answer. Try again."; button.disabled = false; });
      setTimeout(function () { button.disabled = false; }, 5000);
    });
  }

  /* ---- result page ---- */
  function setupResult() {
    var toggle = document.getElementById("toggle-cam");
    var overlay = document.getElementById("cam");
    if (!toggle || !overlay) { return; }
    toggle.addEventListener("click", function () {
      var on = overlay.classList.toggle("hidden") === false;
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      toggle.textContent = on ? "Hide the map" : "Show where the model looked";
    });
  }

  /* ---- forms that ask before acting ---- */
  function setupConfirmations() {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.getAttribute("data-page");
    if (page === "live") { setupLive(); }
    if (document.getElementById("toggle-cam")) { setupResult(); }
    setupConfirmations();
  });
})();
