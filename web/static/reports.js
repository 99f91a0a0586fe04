// The Reports charts: Chart.js (vendored) draws each <canvas data-chart> from the report's JSON data block.
(function () {
  "use strict";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"];
  function hours(seconds) { return seconds === null ? null : Math.round(seconds / 36) / 100; }
  function series(rows, key, label, color, extra) {
    var set = { label: label, data: rows.map(function (r) { return r[key]; }), borderColor: color, backgroundColor: color };
    for (var k in extra || {}) set[k] = extra[k];
    return set;
  }
  function configs(r) {
    var daily = r.daily, groups = r.sla.by_group, causes = r.recurring.causes;
    return {
      daily: { type: "line", data: { labels: daily.map(function (d) { return d.day; }), datasets: [
        series(daily, "opened", "Opened", COLORS[0]), series(daily, "resolved", "Resolved", COLORS[2])] } },
      trend: { type: "line", data: { labels: daily.map(function (d) { return d.day; }), datasets: [
        { label: "MTTA (h)", data: daily.map(function (d) { return hours(d.mtta_mean); }), borderColor: COLORS[3], backgroundColor: COLORS[3], spanGaps: true },
        { label: "MTTR (h)", data: daily.map(function (d) { return hours(d.mttr_mean); }), borderColor: COLORS[4], backgroundColor: COLORS[4], spanGaps: true }] } },
      sla_by_group: { type: "bar", data: { labels: groups.map(function (g) { return g.key || "(none)"; }), datasets: [
        series(groups, "response_breached", "Response breached", COLORS[3]),
        series(groups, "resolution_breached", "Resolution breached", COLORS[1])] } },
      backlog_age: { type: "bar", data: { labels: r.backlog.buckets.map(function (b) { return b.age; }), datasets: [
        series(r.backlog.buckets, "count", "Open incidents", COLORS[0])] } },
      top_causes: { type: "bar", options: { indexAxis: "y" }, data: { labels: causes.map(function (c) { return c.cause; }), datasets: [
        series(causes, "incidents", "Incidents", COLORS[4])] } }
    };
  }
  function draw() {
    var node = document.getElementById("report-data");
    if (!node || typeof Chart === "undefined") return;
    var all = configs(JSON.parse(node.textContent));
    var canvases = document.querySelectorAll("canvas[data-chart]");
    for (var i = 0; i < canvases.length; i++) {
      var config = all[canvases[i].getAttribute("data-chart")];
      if (!config) continue;
      config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
      canvases[i].chart = new Chart(canvases[i], config);
    }
    document.documentElement.setAttribute("data-charts", String(canvases.length));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
