// A running training's page follows the training: every few seconds it fetches itself again and replaces the
// progress (state, stages, log), until the training has finished. Without JavaScript the page reloads instead
// (a <meta http-equiv="refresh"> inside <noscript>); nothing here is needed to read or use the page.
(function () {
  "use strict";
  var progress = document.getElementById("progress");
  if (!progress || progress.getAttribute("data-finished") === "true" || !window.fetch || !window.DOMParser) {
    return;
  }
  var seconds = parseInt(progress.getAttribute("data-refresh"), 10) || 2;

  function update(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var freshProgress = fresh.getElementById("progress");
    if (!freshProgress) {
      return false;
    }
    var line = document.getElementById("state-line");
    var freshLine = fresh.getElementById("state-line");
    if (line && freshLine && line.innerHTML !== freshLine.innerHTML) {
      line.innerHTML = freshLine.innerHTML; // the live region stays in place, so screen readers announce it
    }
    var details = document.getElementById("details");
    var freshDetails = fresh.getElementById("details");
    if (details && freshDetails) {
      details.replaceWith(document.importNode(freshDetails, true));
    }
    var finished = freshProgress.getAttribute("data-finished") === "true";
    progress.setAttribute("data-finished", finished ? "true" : "false");
    return !finished;
  }

  function poll() {
    fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store", redirect: "manual" })
      .then(function (answer) {
        if (answer.type === "opaqueredirect" || answer.status === 401) {
          window.location.reload(); // the session ended: the server sends the browser to sign in
          return null;
        }
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        if (html === null || update(html)) {
          window.setTimeout(poll, seconds * 1000);
        }
      })
      .catch(function () {
        window.setTimeout(poll, seconds * 4000); // the server is restarting: look again, less often
      });
  }

  window.setTimeout(poll, seconds * 1000);
})();
