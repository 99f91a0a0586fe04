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
  document.addEventListener("htmx:afterSwap", function (event) {
    update(event.target.isConnected ? event.target : document);  // an outerHTML swap detaches the old target
  });
  setInterval(function () { update(document); }, 60000);
})();

// The queue: its rows refresh themselves (htmx, hx-trigger="every Ns" on #rows, see queue_rows.html).
// Across each swap the agent keeps the selected rows, the focused control, and the scroll of the page
// and of the table; the bulk form and its menus sit outside #rows, so a refresh never touches them.
(function () {
  "use strict";
  var kept = null;
  function picks(root) { return (root || document).querySelectorAll('input[name="ref"][form="bulk"]'); }
  function count() {
    var shown = document.getElementById("bulk-count");
    if (!shown) return;
    var n = 0, boxes = picks();
    for (var i = 0; i < boxes.length; i++) if (boxes[i].checked) n++;
    shown.textContent = String(n);
  }
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (box.matches && box.matches("input[data-select-all]")) {
      var boxes = picks();
      for (var i = 0; i < boxes.length; i++) if (!boxes[i].disabled) boxes[i].checked = box.checked;
    }
    count();
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "rows") return;
    var checked = {}, boxes = picks(event.detail.target);
    for (var i = 0; i < boxes.length; i++) if (boxes[i].checked) checked[boxes[i].value] = true;
    var wrap = event.detail.target.querySelector(".table-wrap");
    var active = document.activeElement;
    kept = {
      checked: checked,
      focus: active && active.id && event.detail.target.contains(active) ? active.id : null,
      left: wrap ? wrap.scrollLeft : 0,
      x: window.scrollX,
      y: window.scrollY
    };
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (!kept) return;
    var state = kept, rows = document.getElementById("rows");
    kept = null;
    if (!rows) return;
    var boxes = picks(rows);
    for (var i = 0; i < boxes.length; i++) if (state.checked[boxes[i].value] && !boxes[i].disabled) boxes[i].checked = true;
    var wrap = rows.querySelector(".table-wrap");
    if (wrap) wrap.scrollLeft = state.left;
    if (window.scrollX !== state.x || window.scrollY !== state.y) window.scrollTo(state.x, state.y);
    if (state.focus) {
      var again = document.getElementById(state.focus);
      if (again && document.activeElement !== again) again.focus({ preventScroll: true });
    }
    count();
  });
})();
