// Live figures: poll /stats, refresh the summary bar and draw processed/failed deltas.
(function () {
  "use strict";
  var interval = Number(localStorage.getItem("timeInterval") || 5000);
  var live = document.getElementById("live");
  var points = [];
  var last = null;
  function set(name, value) {
    var el = document.querySelector('[data-stat="' + name + '"]');
    if (el) el.textContent = typeof value === "number" ? value.toLocaleString("en-US") : value;
  }
  function draw() {
    if (!live) return;
    var peak = Math.max(1, Math.max.apply(null, points.map(function (p) { return p[0]; })));
    var bars = points.map(function (p, i) {
      var h = p[0] * 100 / peak, f = p[1] * 100 / peak;
      return '<rect class="live-ok" x="' + (i * 10 + 1) + '" y="' + (100 - h) + '" width="8" height="' + h + '"></rect>' +
             '<rect class="live-bad" x="' + (i * 10 + 3) + '" y="' + (100 - f) + '" width="4" height="' + f + '"></rect>';
    }).join("");
    live.innerHTML = '<svg viewBox="0 0 600 100" preserveAspectRatio="none" role="img">' + bars + "</svg>";
  }
  function poll() {
    fetch("/stats", { cache: "no-store", credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (s) {
      var f = s.faktory;
      set("processed", f.total_processed); set("failures", f.total_failures); set("enqueued", f.total_enqueued);
      set("working", f.sets.working); set("retries", f.sets.retries); set("scheduled", f.sets.scheduled);
      set("dead", f.sets.dead); set("time", s.server_utc_time);
      if (last) {
        points.push([f.total_processed - last.total_processed, f.total_failures - last.total_failures]);
        if (points.length > 60) points.shift();
        draw();
      }
      last = f;
    }).catch(function () {});
  }
  poll();
  setInterval(poll, interval);
})();
