// Relative times: every <time data-relative> shows "5 min ago" / "in 2 h"; the absolute time stays in its title.
(function () {
  "use strict";
  function span(seconds) {
    var s = Math.abs(seconds);
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }
  function relative(iso, now) {
    var seconds = (Date.parse(iso) - now) / 1000;
    var text = span(seconds);
    if (text === "just now") return text;
    return seconds < 0 ? text + " ago" : "in " + text;
  }
  function update(root) {
    var now = Date.now();
    var nodes = (root || document).querySelectorAll("time[data-relative]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      if (!isNaN(Date.parse(node.dateTime))) node.textContent = relative(node.dateTime, now);
    }
  }
  document.addEventListener("DOMContentLoaded", function () { update(document); });
  document.addEventListener("htmx:afterSwap", function (event) { update(event.target); });
  setInterval(function () { update(document); }, 60000);
})();
