// Live updates by a short poll of the audit chain's length (it grows with every state
// change): no long-lived connection, so stopping the broker is never held up by a tab.
// Everything inserted comes from the server's escaped HTML or is set as text.
(function () {
  "use strict";
  var POLL_MS = 1000;
  var seq = Number(document.body.getAttribute("data-seq"));
  var statusEl = document.getElementById("live-status");
  var stopped = false;

  function say(text, problem) {
    if (!statusEl) return;
    statusEl.textContent = text;
    statusEl.className = "live-status " + (problem ? "problem" : "muted");
  }

  function relative(iso) {
    var t = Date.parse(iso);
    if (isNaN(t)) return "";
    var s = Math.round((t - Date.now()) / 1000), a = Math.abs(s), txt;
    if (a < 5) return "just now";
    if (a < 60) txt = a + " s"; else if (a < 7200) txt = Math.round(a / 60) + " min"; else txt = Math.round(a / 3600) + " h";
    return s >= 0 ? "in " + txt : txt + " ago";
  }

  function times(root) {
    var els = (root || document).querySelectorAll("time[data-rel]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i], iso = el.getAttribute("datetime");
      var d = new Date(iso);
      if (isNaN(d.getTime())) continue;
      el.textContent = d.toLocaleString() + " (" + relative(iso) + ")";
      el.title = iso;
    }
  }

  // Someone typing a reason or with a form open must not lose it to a refresh.
  function editing() {
    var live = document.getElementById("live");
    if (!live) return false;
    var fields = live.querySelectorAll("textarea, input[type=number]");
    for (var i = 0; i < fields.length; i++) if (fields[i].value) return true;
    return live.querySelector("details[open] form") !== null;
  }

  // Audit trails someone opened stay open across a refresh.
  function openDetails() {
    var ids = [], els = document.querySelectorAll("#live details[open][id]");
    for (var i = 0; i < els.length; i++) ids.push(els[i].id);
    return ids;
  }

  function swap(doc) {
    ["live", "status"].forEach(function (id) {
      var fresh = doc.getElementById(id), old = document.getElementById(id);
      if (fresh && old) old.replaceWith(document.importNode(fresh, true));
    });
    if (doc.title) document.title = doc.title;
  }

  function refresh() {
    if (editing()) {
      say("Something changed. Finish or close the open form, or reload the page (F5) to see it.", false);
      return Promise.resolve(false);
    }
    var focused = document.activeElement && document.activeElement.id;
    var opened = openDetails();
    return fetch(location.href, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (html) {
      swap(new DOMParser().parseFromString(html, "text/html"));
      opened.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
      times();
      if (focused) { var el = document.getElementById(focused); if (el) el.focus(); }
      say("Updated at " + new Date().toLocaleTimeString() + ".", false);
      return true;
    });
  }

  function poll() {
    if (stopped) return;
    fetch("/console/changes", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (r.status === 401) {
        stopped = true;
        say("You are signed out (the session ended). Ask for a new sign-in link: jitgate console login <your-id>", true);
        return null;
      }
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (body) {
      if (!body) return;
      if (body.seq !== seq) {
        return refresh().then(function (done) { if (done) seq = body.seq; });
      }
      if (statusEl && statusEl.className.indexOf("problem") >= 0) say("Live updates resumed.", false);
    }).catch(function (e) {
      say("Live updates paused: the broker is not answering (" + e.message + "). Retrying every second…", true);
    }).then(function () { if (!stopped) setTimeout(poll, POLL_MS); });
  }

  times();
  setInterval(function () { times(); }, 15000);
  setTimeout(poll, POLL_MS);
})();
