/* payq dashboard: the throughput chart of the overview page, drawn on a
   <canvas>, and the live refresh of task lists. No dependencies; data comes
   from this server only: the chart's first from the canvas's data-series
   attribute, then from throughput.json; a task list's from its own URL. */
(function () {
  "use strict";

  var COLORS = {
    succeeded: "#2e7d32", dead: "#c62828", cancelled: "#9e9e9e",
    pending: "#1565c0", running: "#ef6c00", grid: "#e2e2e2", text: "#555"
  };
  var HOUR_MS = 3600 * 1000;
  var REFRESH_S_MIN = 5;

  function niceMax(value) {
    if (!(value > 0)) { return 1; }
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var n = value / power;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * power;
  }

  function prepare(canvas) {
    // Draw at the screen's resolution, in CSS pixels.
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || 960;
    var height = canvas.clientHeight || 300;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return { ctx: ctx, width: width, height: height };
  }

  function frame(ctx, left, top, width, height, max, label) {
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    ctx.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var y = Math.round(top + height * i / 4) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.fillText(String(max), left - 6, top);
    ctx.fillText("0", left - 6, top + height);
    ctx.textAlign = "left";
    ctx.textBaseline = "bottom";
    ctx.fillText(label, left + 4, top - 2);
  }

  function draw(canvas, data) {
    var c = prepare(canvas);
    var ctx = c.ctx;
    var left = 52, right = 12, top = 18, bottom = 22, gap = 30;
    var plotW = c.width - left - right;
    var panelH = (c.height - top - bottom - gap) / 2;
    var depth = data.depth || [];
    var minutes = data.finished || [];
    // The axis ends with the current minute, so that its (partial) bar shows whole.
    var last = depth.length ? depth[depth.length - 1].t : Date.now();
    var end = (Math.floor(last / 60000) + 1) * 60000;
    var start = end - HOUR_MS;
    function x(t) { return left + (t - start) / HOUR_MS * plotW; }

    ctx.clearRect(0, 0, c.width, c.height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, 0, plotW, c.height);
    ctx.clip();

    // Panel 1: tasks finished per minute, stacked by final state.
    var maxFinished = 0;
    minutes.forEach(function (m) { maxFinished = Math.max(maxFinished, m.succeeded + m.dead + m.cancelled); });
    maxFinished = niceMax(maxFinished);
    var barW = Math.max(1, plotW / 60 - 1);
    minutes.forEach(function (m) {
      var base = top + panelH;
      [["succeeded", m.succeeded], ["dead", m.dead], ["cancelled", m.cancelled]].forEach(function (part) {
        if (!part[1]) { return; }
        var h = part[1] / maxFinished * panelH;
        ctx.fillStyle = COLORS[part[0]];
        ctx.fillRect(x(m.t), base - h, barW, h);
        base -= h;
      });
    });

    // Panel 2: live tasks (pending, running) as sampled.
    var top2 = top + panelH + gap;
    var maxDepth = 0;
    depth.forEach(function (s) { maxDepth = Math.max(maxDepth, s.pending, s.running); });
    maxDepth = niceMax(maxDepth);
    ["pending", "running"].forEach(function (key) {
      ctx.strokeStyle = COLORS[key];
      ctx.lineWidth = 2;
      ctx.beginPath();
      depth.forEach(function (s, i) {
        var y = top2 + panelH - s[key] / maxDepth * panelH;
        if (i === 0) { ctx.moveTo(x(s.t), y); } else { ctx.lineTo(x(s.t), y); }
      });
      ctx.stroke();
      if (depth.length === 1) {
        ctx.fillStyle = COLORS[key];
        ctx.fillRect(x(depth[0].t) - 2, top2 + panelH - depth[0][key] / maxDepth * panelH - 2, 4, 4);
      }
    });
    ctx.restore();

    frame(ctx, left, top, plotW, panelH, maxFinished, "finished per minute");
    frame(ctx, left, top2, plotW, panelH, maxDepth, "pending and running");
    ctx.fillStyle = COLORS.text;
    ctx.textBaseline = "top";
    [60, 45, 30, 15, 0].forEach(function (ago) {
      ctx.textAlign = ago === 60 ? "left" : ago === 0 ? "right" : "center";
      ctx.fillText(ago ? "-" + ago + " min" : "now", x(end - ago * 60000), top2 + panelH + 6);
    });
    if (data.error) {
      ctx.fillStyle = COLORS.dead;
      ctx.textAlign = "right";
      ctx.textBaseline = "bottom";
      ctx.fillText("sampling failed: " + data.error, left + plotW, top - 2);
    }
    canvas.setAttribute("data-drawn", depth.length + "/" + minutes.length);
  }

  function refresh(canvas, state) {
    fetch(canvas.getAttribute("data-src"), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) { state.data = data; draw(canvas, data); } })
      .catch(function () { /* the next refresh tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var canvas = document.getElementById("throughput");
    if (!canvas || !canvas.getContext) { return; }
    var state = { data: JSON.parse(canvas.getAttribute("data-series")) };
    draw(canvas, state.data);
    window.addEventListener("resize", function () { draw(canvas, state.data); });
    var every = Math.max(REFRESH_S_MIN, state.data.interval_s || 10) * 1000;
    window.setInterval(function () { refresh(canvas, state); }, every);
  });

  /* Task lists: the table and pager are fetched again every
     data-refresh-s seconds while "live" is ticked, the tab is visible and
     no task is selected (a refresh would drop the selection). */
  function liveTaskList(list) {
    var every = Math.max(REFRESH_S_MIN, Number(list.getAttribute("data-refresh-s")) || REFRESH_S_MIN) * 1000;
    var toggle = document.getElementById("live-refresh");
    var status = document.getElementById("live-status");
    var count = 0;
    var busy = false;
    function selected() { return list.querySelectorAll("input[name=task]:checked").length; }
    function say(text) { if (status) { status.textContent = text; } }
    function swap(fresh) {
      ["table", ".pager"].forEach(function (selector) {
        var old = list.querySelector(selector);
        var next = fresh.querySelector(selector);
        if (old && next) { old.replaceWith(document.importNode(next, true)); }
      });
      count += 1;
      list.setAttribute("data-refreshed", String(count));
      say("refreshed " + new Date().toLocaleTimeString());
    }
    function tick() {
      if (busy || (toggle && !toggle.checked) || document.hidden) { return; }
      if (selected()) { say("paused while tasks are selected"); return; }
      busy = true;
      // The list alone (fragment=list): the page's counts are not refreshed.
      var url = window.location.href.split("#")[0];
      url += (url.indexOf("?") < 0 ? "?" : "&") + "fragment=list";
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (text) {
          if (text === null || selected()) { return; }
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("task-list");
          if (fresh) { swap(fresh); }
        })
        .catch(function () { say("refresh failed; trying again"); })
        .then(function () { busy = false; });
    }
    if (toggle) {
      toggle.addEventListener("change", function () { say(toggle.checked ? "" : "paused"); });
    }
    // "Select all" sits in the table's head, which a refresh replaces: listen on the list.
    list.addEventListener("change", function (event) {
      if (event.target && event.target.id === "select-all") {
        list.querySelectorAll("input[name=task]").forEach(function (box) { box.checked = event.target.checked; });
      }
    });
    window.setInterval(tick, every);
    list.setAttribute("data-live", "armed");  // for tests: the handlers above are in place
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("task-list");
    if (list && window.fetch && window.DOMParser) { liveTaskList(list); }
  });
})();
