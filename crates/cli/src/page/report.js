// Draws the report from the JSON in #data with uPlot. Each chart's element
// carries data-series and data-points, and <html> gets data-charts when
// everything is drawn, so that a headless browser's DOM dump can be checked.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var h = data.history;
  var main = document.getElementById("main");
  var charts = [];
  (window.__early || []).forEach(function (text) { window.__noteError(text); });
  document.getElementById("chart-library").textContent = data.chart_library;

  // ----- helpers ----------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function section(id, title, note) {
    var div = el("section", { id: id });
    div.appendChild(el("h2", { text: title }));
    if (note) div.appendChild(el("p", { class: "note", text: note }));
    main.appendChild(div);
    return div;
  }

  // rows: arrays of cells; a cell is text, or {text, cls, attrs}.
  function table(id, headers, rows) {
    var t = el("table", { id: id });
    var head = el("tr");
    headers.forEach(function (name, i) {
      head.appendChild(el("th", { text: name, class: i === 0 || /^(kind|host|cause|detail|examples|command)$/.test(name) ? "text" : "" }));
    });
    t.appendChild(head);
    rows.forEach(function (row) {
      var tr = el("tr");
      row.forEach(function (cell) {
        var c = typeof cell === "object" && cell !== null ? cell : { text: String(cell) };
        var td = el("td", Object.assign({ text: c.text }, c.attrs || {}));
        if (c.cls) td.className = c.cls;
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    return t;
  }

  function ms(us) {
    var v = us / 1000;
    if (v >= 10000) return (v / 1000).toFixed(1) + " s";
    if (v >= 100) return v.toFixed(0) + " ms";
    if (v >= 1) return v.toFixed(1) + " ms";
    return v.toFixed(3) + " ms";
  }

  function clock(seconds) {
    var s = Math.max(0, Math.round(seconds));
    var hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return (hh > 0 ? hh + ":" + two(mm) : mm) + ":" + two(ss);
  }

  function when(unixMs) {
    return unixMs ? new Date(unixMs).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "-";
  }

  function width() {
    return Math.max(560, Math.min(1180, (document.documentElement.clientWidth || 1200) - 60));
  }

  var palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"];
  function color(i) { return palette[i % palette.length]; }

  // Seconds with a decimal for short runs, m:ss (or h:mm:ss) for long ones.
  var timeAxis = {
    label: "time since start",
    values: function (u, ticks) {
      var range = u.scales.x.max - u.scales.x.min;
      return ticks.map(function (v) { return range < 100 ? +v.toFixed(range < 10 ? 1 : 0) + " s" : clock(v); });
    },
  };

  function chart(parent, id, title, opts, columns) {
    var div = el("div", { class: "chart", id: id });
    parent.appendChild(div);
    opts.title = title;
    opts.width = opts.width || width();
    opts.height = opts.height || 220;
    var u = new uPlot(opts, columns, div);
    div.setAttribute("data-series", String(opts.series.length - 1));
    div.setAttribute("data-points", String(columns[0].length));
    charts.push(u);
    return u;
  }

  // Ends that are not part of a normal life: crashes, kills, hangs.
  var calm = { finished: 1, recycled: 1, restarted: 1, retired: 1, shutdown: 1 };
  var causeColors = {
    running: "#4c78a8", finished: "#9fb7d0", recycled: "#54a24b", restarted: "#72b7b2",
    retired: "#b8b8b8", crashed: "#d62728", killed_outside: "#f58518", killed_on_request: "#9467bd",
    hung: "#8c564b", stuck: "#a0522d", task_timeout: "#bcbd22", violation: "#e377c2",
    no_handshake: "#7f7f7f", overdue: "#c49c94", shutdown: "#c7c7c7", spawn_failed: "#222222",
  };
  function causeName(cause) { return cause ? cause.replace(/_/g, " ") : "running"; }

  // ----- header -------------------------------------------------------------

  (function header() {
    var rows = [];
    var meta = data.meta, end = data.end, progress = h.progress || {};
    function fact(name, value, attrs) {
      var tr = el("tr", {}, [el("th", { text: name }), el("td", Object.assign({ text: value }, attrs || {}))]);
      rows.push(tr);
      return tr;
    }
    var status;
    if (end) {
      var cls = end.exit_code === 0 ? "ok" : end.exit_code === 1 ? "warn" : "bad";
      status = el("span", { class: "badge " + cls, text: end.outcome.replace(/_/g, " ") + " (exit " + end.exit_code + ")" });
    } else if (data.finished) {
      status = el("span", { class: "badge warn", text: "finished (no exit status: make the page with the run's --stats file)" });
    } else {
      status = el("span", { class: "badge run", text: "running: page written " + when(data.generated_unix_ms) });
    }
    var outcome = end ? end.outcome : data.finished ? "unknown" : "running";
    rows.push(el("tr", {}, [el("th", { text: "status" }), el("td", { id: "status", "data-outcome": outcome }, [status])]));
    if (end && end.message) fact("message", end.message);
    if (meta) {
      fact("command", meta.command.join(" "), { class: "mono", id: "command" });
      fact("machine", meta.host + " (" + meta.cpus + " CPUs, " + meta.os + "), multiloop " + meta.version);
      fact("task kind", meta.kind + ", " + meta.workers + " workers");
      fact("started", when(meta.started_unix_ms));
    }
    if (end) {
      fact("ended", when(end.ended_unix_ms) + " (" + clock(end.wall_s) + " wall)");
      var done = end.ok + end.failed;
      fact("tasks", done + " done: " + end.ok + " ok, " + end.failed + " failed (" +
        (done / Math.max(end.wall_s, 1e-9)).toFixed(0) + "/s); " + end.restarts + " worker restarts",
        { id: "totals", "data-ok": end.ok, "data-failed": end.failed, "data-restarts": end.restarts });
    } else if (h.progress) {
      fact("tasks", progress.done + " done, " + progress.failed + " failed, " + progress.restarts + " restarts so far",
        { id: "totals", "data-ok": progress.done - progress.failed, "data-failed": progress.failed });
    }
    var header = document.getElementById("header");
    rows.forEach(function (r) { header.appendChild(r); });
    // While the run goes, the page is rewritten every 5 s: follow it.
    if (!data.finished) setTimeout(function () { location.reload(); }, 5000);
  })();

  // ----- over time ----------------------------------------------------------

  var t = h.t;
  var lastT = t.length ? t[t.length - 1] : 0;
  h.lives.forEach(function (l) { lastT = Math.max(lastT, l.end || l.start); });
  if (data.end) lastT = Math.max(lastT, data.end.wall_s);
  var troubles = h.lives.filter(function (l) { return l.cause && !calm[l.cause]; });

  // Draws a dashed line at each troubled worker end (a crash, kill, hang).
  function markRestarts(u) {
    var ctx = u.ctx, top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
    ctx.save();
    ctx.lineWidth = 1 * uPlot.pxRatio;
    ctx.setLineDash([4 * uPlot.pxRatio, 3 * uPlot.pxRatio]);
    troubles.forEach(function (l) {
      var x = Math.round(u.valToPos(l.end, "x", true));
      ctx.strokeStyle = causeColors[l.cause] || "#d62728";
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
    });
    ctx.restore();
  }

  var overTime = section("over-time", "Throughput and load",
    t.length > 1
      ? "One point a second for the last " + clock(Math.min(300, lastT)) + "; older points are merged " + h.bucket_samples +
        " to a bucket. Dashed lines: workers that crashed, were killed or hung (" + troubles.length + ")."
      : "No samples over time: make the report with the run's --stats file.");
  if (t.length > 1) {
    var rate = function (col) { return col.map(function (n, i) { return h.span[i] > 0 ? n / h.span[i] : null; }); };
    chart(overTime, "chart-throughput", "Tasks per second", {
      scales: { x: { time: false, range: [0, lastT] } },
      axes: [timeAxis, { label: "tasks/s", size: 60 }],
      series: [{ label: "t", value: function (u, v) { return v == null ? "-" : clock(v); } },
        { label: "done/s", stroke: "#1f77b4", width: 2, fill: "rgba(31,119,180,0.08)" },
        { label: "failed/s", stroke: "#d62728", width: 2 }],
      hooks: { draw: [markRestarts] },
    }, [t, rate(h.done), rate(h.failed)]);
    chart(overTime, "chart-load", "In flight and queued", {
      scales: { x: { time: false, range: [0, lastT] } },
      axes: [timeAxis, { label: "tasks", size: 60 }],
      series: [{ label: "t", value: function (u, v) { return v == null ? "-" : clock(v); } },
        { label: "in flight", stroke: "#2ca02c", width: 2 },
        { label: "queued", stroke: "#9467bd", width: 1.5 },
        { label: "workers alive", stroke: "#7f7f7f", width: 1, dash: [4, 3] }],
      hooks: { draw: [markRestarts] },
    }, [t, h.in_flight, h.queued, h.alive]);
  }

  // ----- lives --------------------------------------------------------------

  var livesSection = section("lives", "Worker lives",
    "One lane per worker slot; each bar is one process, coloured by how it ended (blue: still running). " +
    (h.lives_forgotten ? h.lives_forgotten + " older ended lives are not drawn. " : "") +
    (h.probes ? h.probes + " lives were blame probes (outlined). " : ""));
  var slots = 0;
  h.lives.forEach(function (l) { slots = Math.max(slots, l.slot + 1); });
  slots = Math.max(slots, h.workers.length);
  var legend = el("div", { class: "legend-row", id: "lives-legend" });
  var counts = Object.assign({}, h.ends);
  var running = h.lives.filter(function (l) { return l.end == null; }).length;
  if (running) counts.running = running;
  Object.keys(counts).forEach(function (cause) {
    legend.appendChild(el("span", { "data-cause": cause, "data-count": counts[cause] }, [
      el("span", { class: "swatch", style: "background:" + (causeColors[cause] || "#999") }),
      causeName(cause) + ": " + counts[cause]]));
  });
  livesSection.appendChild(legend);
  if (slots > 0) {
    var lane = function (u, slot) { return u.valToPos(slot, "slot", true); };
    var drawLives = function (u) {
      var ctx = u.ctx;
      var laneHeight = Math.abs(lane(u, 0) - lane(u, 1)) * 0.7;
      ctx.save();
      h.lives.forEach(function (l) {
        var x0 = u.valToPos(l.start, "x", true);
        var x1 = u.valToPos(l.end == null ? lastT : l.end, "x", true);
        var y = lane(u, l.slot) - laneHeight / 2;
        ctx.fillStyle = causeColors[l.cause || "running"] || "#999";
        ctx.globalAlpha = l.cause && calm[l.cause] ? 0.55 : 0.9;
        ctx.fillRect(x0, y, Math.max(x1 - x0, 2 * uPlot.pxRatio), laneHeight);
        ctx.globalAlpha = 1;
        if (l.cause && !calm[l.cause]) {
          ctx.fillStyle = "#000";
          ctx.fillRect(x1 - 2 * uPlot.pxRatio, y - 2, 3 * uPlot.pxRatio, laneHeight + 4);
        }
        if (l.probe) {
          ctx.strokeStyle = "#000";
          ctx.lineWidth = 1.5 * uPlot.pxRatio;
          ctx.strokeRect(x0, y, Math.max(x1 - x0, 2), laneHeight);
        }
      });
      ctx.restore();
    };
    var hover = el("div", { id: "life-hover" });
    chart(livesSection, "chart-lives", "Worker slots over time", {
      height: Math.min(560, 90 + 36 * slots),
      scales: { x: { time: false, range: [0, Math.max(lastT, 1)] }, slot: { range: [-0.5, slots - 0.5], dir: -1 } },
      axes: [timeAxis, { scale: "slot", label: "worker", size: 60, splits: function () {
        var s = []; for (var i = 0; i < slots; i++) s.push(i); return s;
      }, values: function (u, ticks) { return ticks.map(function (v) { return "w" + v; }); } }],
      legend: { show: false },
      cursor: { y: false, points: { show: false } },
      series: [{}, { label: "lives", scale: "slot", stroke: "transparent", points: { show: false } }],
      hooks: {
        draw: [drawLives, markRestarts],
        setCursor: [function (u) {
          if (u.cursor.left == null || u.cursor.left < 0) { hover.textContent = ""; return; }
          var x = u.posToVal(u.cursor.left, "x"), slot = Math.round(u.posToVal(u.cursor.top, "slot"));
          var found = h.lives.filter(function (l) {
            return l.slot === slot && l.start <= x && (l.end == null ? lastT : l.end) >= x;
          })[0];
          hover.textContent = found
            ? "worker " + found.slot + " #" + found.generation + (found.pid ? " (pid " + found.pid + ")" : "") + ": " +
              clock(found.start) + " to " + (found.end == null ? "now" : clock(found.end)) + ", " +
              causeName(found.cause) + (found.detail ? " (" + found.detail + ")" : "") + (found.probe ? ", blame probe" : "")
            : "";
        }],
      },
    }, [[0, Math.max(lastT, 1)], [null, null]]);
    livesSection.appendChild(hover);
    var ended = h.lives.filter(function (l) { return l.cause && !calm[l.cause]; }).slice(-20).reverse();
    if (ended.length) {
      livesSection.appendChild(el("p", { class: "note", text: "Troubled ends, latest first (at most 20; hover the chart for any life):" }));
      livesSection.appendChild(table("lives-table", ["worker", "process", "pid", "from", "to", "cause", "detail"],
        ended.map(function (l) {
          return [String(l.slot), "#" + l.generation, l.pid == null ? "-" : String(l.pid), clock(l.start), clock(l.end),
            { text: causeName(l.cause) + (l.probe ? " (blame probe)" : ""), cls: "text", attrs: { "data-cause": l.cause } },
            { text: l.detail, cls: "text" }];
        })));
    }
  }

  // ----- per-worker resources -----------------------------------------------

  if (t.length > 1 && h.workers.length) {
    var res = section("resources", "Worker resources",
      "Per worker slot: mean CPU and peak memory and event-loop lag of each point; blocked is the share of time " +
      "the loop was held by single polls (CPU work starving the I/O).");
    var perWorker = function (id, title, label, key) {
      var series = [{ label: "t", value: function (u, v) { return v == null ? "-" : clock(v); } }];
      var cols = [t];
      h.workers.forEach(function (w) {
        series.push({ label: "w" + w.slot, stroke: color(w.slot), width: 1.5, spanGaps: false });
        cols.push(w[key]);
      });
      chart(res, id, title, {
        height: 200,
        scales: { x: { time: false, range: [0, lastT] } },
        axes: [timeAxis, { label: label, size: 60 }],
        series: series,
        hooks: { draw: [markRestarts] },
      }, cols);
    };
    perWorker("chart-cpu", "CPU per worker", "CPU %", "cpu");
    perWorker("chart-rss", "Memory (RSS) per worker", "MiB", "rss_mib");
    perWorker("chart-lag", "Event-loop lag per worker", "ms", "lag_ms");
    perWorker("chart-blocked", "Loop blocked per worker", "share", "blocked");
  }
  if (data.end && data.end.workers.length) {
    var wsec = document.getElementById("resources") || section("resources", "Worker resources");
    wsec.appendChild(table("workers-table", ["worker", "pid", "tasks", "failed", "restarts", "CPU s", "peak RSS", "max lag"],
      data.end.workers.map(function (w) {
        return [String(w.index), w.pid == null ? "-" : String(w.pid),
          { text: String(w.done), attrs: { "data-done": w.done } }, String(w.failed), String(w.restarts),
          (w.cpu_us / 1e6).toFixed(2), (w.peak_rss_bytes / 1048576).toFixed(1) + " MiB", ms(w.max_lag_us)];
      })));
  }

  // ----- task times -----------------------------------------------------------

  var tasks = h.tasks;
  if (tasks && tasks.count > 0) {
    var tsec = section("task-times", "Task time",
      "Time per task (the record's ms). Percentiles come from a histogram with 16 buckets per doubling: " +
      "each is at most 4.4 % above the true value.");
    var num = function (us) { return { text: ms(us), attrs: { "data-us": String(us) } }; };
    tsec.appendChild(table("task-summary", ["tasks", "ok", "failed", "mean", "p50", "p90", "p99", "max"], [[
      { text: String(tasks.count), attrs: { "data-count": tasks.count } },
      { text: String(tasks.ok), attrs: { "data-ok": tasks.ok } },
      { text: String(tasks.failed), attrs: { "data-failed": tasks.failed } },
      num(tasks.mean_us), num(tasks.p50_us), num(tasks.p90_us), num(tasks.p99_us), num(tasks.max_us)]]));
    var xs = [], ys = [];
    tasks.histogram.forEach(function (b) {
      var low = Math.max(b[0], 0.5), high = b[1];
      xs.push(Math.sqrt(low * high) / 1000);
      ys.push(b[2]);
    });
    chart(tsec, "chart-task-times", "Distribution of task time", {
      height: 220,
      scales: { x: { time: false, distr: 3 } },
      axes: [{ label: "ms (log)" }, { label: "tasks", size: 60 }],
      series: [{ label: "ms", value: function (u, v) { return v == null ? "-" : v.toPrecision(3); } },
        { label: "tasks", stroke: "#1f77b4", fill: "rgba(31,119,180,0.35)", paths: uPlot.paths.bars({ size: [0.9, 24] }), points: { show: false } }],
    }, [xs, ys]);
    tsec.appendChild(el("p", { class: "note", text: "Slowest tasks:" }));
    tsec.appendChild(table("slowest", ["seq", "time"], tasks.slowest.map(function (s) {
      return [{ text: String(s[0]), attrs: { "data-seq": s[0] } }, num(s[1])];
    })));
    var kinds = Object.keys(tasks.errors);
    var esec = section("errors", "Errors", kinds.length ? "By kind, with the first few examples." : "No task failed.");
    if (kinds.length) {
      esec.appendChild(table("errors-table", ["kind", "count", "examples"], kinds.map(function (kind) {
        var e = tasks.errors[kind];
        return [{ text: kind, cls: "text", attrs: { "data-kind": kind } },
          { text: String(e.count), attrs: { "data-count": e.count } }, { text: "", cls: "text" }];
      })));
      // Examples are lists: put them in their cells.
      Array.prototype.forEach.call(document.querySelectorAll("#errors-table tr"), function (tr, i) {
        if (i === 0) return;
        var e = tasks.errors[kinds[i - 1]];
        var list = el("ul");
        e.examples.forEach(function (x) { list.appendChild(el("li", { class: "mono", text: "seq " + x.seq + ": " + x.message })); });
        tr.lastChild.appendChild(list);
      });
    }
  }

  // ----- fetch ----------------------------------------------------------------

  var fetch = h.fetch;
  if (fetch) {
    var fsec = section("fetch", "Fetch: status codes and hosts",
      "Requests that got no response (DNS, refused, timeout): " + fetch.no_response +
      " (their records name no host). The per-host limits live in the workers and are not in the records.");
    var codes = Object.keys(fetch.statuses);
    fsec.appendChild(table("statuses", ["status", "count"], codes.map(function (code) {
      return [{ text: code, attrs: { "data-status": code } }, { text: String(fetch.statuses[code]), attrs: { "data-count": fetch.statuses[code] } }];
    })));
    fsec.appendChild(table("hosts", ["host", "requests", "errors (≥400)", "p50", "p99"], fetch.hosts.map(function (r) {
      return [{ text: r.host, cls: "text", attrs: { "data-host": r.host } }, { text: String(r.requests), attrs: { "data-requests": r.requests } },
        String(r.errors), ms(r.p50_ms * 1000), ms(r.p99_ms * 1000)];
    })));
    if (fetch.more_hosts) fsec.appendChild(el("p", { class: "note", text: fetch.more_hosts + " more hosts are summed in the last row." }));
  }

  document.documentElement.setAttribute("data-charts", String(charts.length));
  // From navigation start to everything drawn: what "opens in" means.
  document.documentElement.setAttribute("data-render-ms", String(Math.round(performance.now())));
  document.documentElement.setAttribute("data-rendered", "yes");
})();
