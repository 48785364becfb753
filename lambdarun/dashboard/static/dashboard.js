// lambdarun dashboard: refresh the elements marked data-live in place, without reloading.
// The server renders the same template's "live" block when asked with ?_fragment=live.
(function () {
  "use strict";
  var body = document.body;
  var interval = parseInt(body.getAttribute("data-refresh-ms") || "0", 10);
  var toggle = document.getElementById("live-toggle");
  if (toggle) {
    toggle.checked = localStorage.getItem("lambdarun-live") !== "off";
    toggle.addEventListener("change", function () {
      localStorage.setItem("lambdarun-live", toggle.checked ? "on" : "off");
    });
  }
  function liveUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("_fragment", "live");
    return url.toString();
  }
  function busy(el) {
    var a = document.activeElement;
    return a && el.contains(a) && (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "SELECT");
  }
  function openDetails(el) {
    var ids = [];
    el.querySelectorAll("details[id]").forEach(function (d) { if (d.open) ids.push(d.id); });
    return ids;
  }
  var inflight = false;
  function refresh() {
    var el = document.querySelector("[data-live]");
    if (!el || inflight || document.hidden || (toggle && !toggle.checked) || busy(el)) return;
    inflight = true;
    fetch(liveUrl(), { credentials: "same-origin", headers: { "X-Requested-With": "lambdarun-dashboard" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || html === el.getAttribute("data-last") || busy(el)) return;
        var open = openDetails(el);
        el.innerHTML = html;
        el.setAttribute("data-last", html);
        open.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the server may be restarting: try again next tick */ })
      .finally(function () { inflight = false; });
  }
  if (interval > 0) window.setInterval(refresh, interval);
  // filters submit on change
  document.querySelectorAll("form.filters select").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });
})();
