// retape report.html: sorting, filtering and the per-stream charts, drawn when a stream is
// first opened from the JSON embedded in the page (plotly.js, inlined above).
(function () {
  "use strict";

  var KIND_COLORS = {
    gap: "#d62728", checksum_mismatch: "#e377c2", snapshot_mismatch: "#8c564b", invalid_value: "#ff7f0e",
    disconnect: "#9467bd", crossed_book: "#bcbd22", format_change: "#17becf", duplicate: "#7f7f7f",
    funding_discontinuity: "#1f77b4", out_of_order: "#aec7e8", timestamp_drift: "#2ca02c"
  };
  var CAUSE_COLORS = {
    gap: "#d62728", checksum_mismatch: "#e377c2", invalid_value: "#ff7f0e", disconnect: "#9467bd",
    no_snapshot: "#9aa0a6"
  };
  var CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud", "select2d", "lasso2d"] };
  var SHADE_MAX = 300;   // unsafe intervals and gaps also drawn across the whole chart, up to this many

  var table = document.getElementById("stream-table");
  var heads = table.tHead.rows[0].cells;

  // ---- sorting -------------------------------------------------------------------------

  function cellValue(body, col) {
    return body.rows[0].cells[col].getAttribute("data-v");
  }

  function sortBy(col, dir) {
    var numeric = heads[col].getAttribute("data-type") === "num";
    var bodies = Array.prototype.slice.call(table.tBodies);
    bodies.sort(function (a, b) {
      var va = cellValue(a, col), vb = cellValue(b, col);
      var ia = +a.getAttribute("data-i"), ib = +b.getAttribute("data-i");
      if (va === "" || vb === "") {
        if (va === vb) { return ia - ib; }
        return va === "" ? 1 : -1;     // no value: last, either way
      }
      var c;
      if (numeric) { c = parseFloat(va) - parseFloat(vb); } else { c = va < vb ? -1 : (va > vb ? 1 : 0); }
      return c !== 0 ? dir * c : ia - ib;
    });
    var frag = document.createDocumentFragment();
    bodies.forEach(function (b) { frag.appendChild(b); });
    table.appendChild(frag);
    for (var i = 0; i < heads.length; i++) {
      if (i === col) { heads[i].setAttribute("aria-sort", dir > 0 ? "ascending" : "descending"); }
      else { heads[i].removeAttribute("aria-sort"); }
    }
  }

  Array.prototype.forEach.call(heads, function (th, col) {
    th.querySelector("button").addEventListener("click", function () {
      sortBy(col, th.getAttribute("aria-sort") === "ascending" ? -1 : 1);
    });
  });

  // ---- filtering -----------------------------------------------------------------------

  var filter = document.getElementById("filter");
  var onlyFaults = document.getElementById("only-faults");

  function applyFilter() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var text = body.rows[0].textContent.toLowerCase();
      var show = words.every(function (w) { return text.indexOf(w) >= 0; });
      if (onlyFaults.checked && body.getAttribute("data-clean") === "1") { show = false; }
      body.hidden = !show;
    });
  }
  filter.addEventListener("input", applyFilter);
  onlyFaults.addEventListener("change", applyFilter);

  // ---- opening a stream ----------------------------------------------------------------

  function setOpen(body, open) {
    var row = body.rows[0], detail = body.rows[1];
    detail.hidden = !open;
    row.setAttribute("aria-expanded", open ? "true" : "false");
    if (open && !body.getAttribute("data-drawn")) {
      body.setAttribute("data-drawn", "1");
      draw(body);
    }
  }

  Array.prototype.forEach.call(table.tBodies, function (body) {
    var row = body.rows[0];
    row.addEventListener("click", function () { setOpen(body, row.getAttribute("aria-expanded") !== "true"); });
    row.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); setOpen(body, row.getAttribute("aria-expanded") !== "true"); }
    });
  });

  function openFromHash() {
    var m = /^#(s\d+)$/.exec(window.location.hash);
    var body = m && document.getElementById(m[1]);
    if (!body) { return; }
    body.hidden = false;
    setOpen(body, true);
    body.scrollIntoView({ block: "start" });
  }
  window.addEventListener("hashchange", openFromHash);

  // ---- charts --------------------------------------------------------------------------

  function iso(us) {
    var ms = Math.floor(us / 1000), rest = us - ms * 1000;
    var text = new Date(ms).toISOString();
    return text.slice(0, -1) + String(rest).padStart(3, "0") + "Z";
  }

  function fmtMs(us) { return (us / 1000).toFixed(3) + " ms"; }

  function escapeText(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function empty(div, text) {
    var p = document.createElement("p");
    p.className = "empty";
    p.textContent = text;
    div.appendChild(p);
  }

  function draw(body) {
    var i = body.getAttribute("data-i");
    var data = JSON.parse(document.getElementById("d" + i).textContent);
    var detail = body.rows[1];
    var timeline = detail.querySelector(".timeline"), latency = detail.querySelector(".latency");
    if (typeof Plotly === "undefined") {
      empty(timeline, "The plotting library did not load: no charts.");
      return;
    }
    drawTimeline(timeline, data);
    drawLatency(latency, data);
  }

  function drawTimeline(div, d) {
    if (!d.span) {
      empty(div, "No receive times in this stream's format: no timeline.");
      return;
    }
    var first = d.span[0], last = d.span[1];
    var rows = [];
    var isBook = / book$/.test(d.name);
    if (isBook || d.unsafe.length) { rows.push("unsafe book"); }
    rows.push("gap");
    d.kinds.forEach(function (k) { if (rows.indexOf(k) < 0) { rows.push(k); } });
    var traces = [], shapes = [];

    // Every row shows, found or not.
    traces.push({
      type: "scatter", mode: "markers", x: rows.map(function () { return first / 1000; }), y: rows,
      marker: { opacity: 0 }, hoverinfo: "skip", showlegend: false, name: "rows"
    });

    // Unsafe intervals: exact, one bar each, coloured by cause; shaded across the chart.
    var byCause = {};
    d.unsafe.forEach(function (u) {
      if (u[0] === null) { return; }
      (byCause[u[2]] = byCause[u[2]] || []).push(u);
    });
    var shade = d.unsafe.length <= SHADE_MAX;
    Object.keys(byCause).sort().forEach(function (cause) {
      var list = byCause[cause];
      traces.push({
        type: "bar", orientation: "h", name: "unsafe: " + cause,
        y: list.map(function () { return "unsafe book"; }),
        base: list.map(function (u) { return u[0] / 1000; }),
        x: list.map(function (u) { return Math.max(((u[1] === null ? last : u[1]) - u[0]) / 1000, 0.001); }),
        marker: { color: CAUSE_COLORS[cause] || "#666" }, width: 0.6,
        hovertext: list.map(function (u) {
          return "unsafe (" + cause + ")<br>from " + iso(u[0]) + "<br>" +
            (u[1] === null ? "to the end of the stream" : "to " + iso(u[1])) + "<br>" + u[3] + " message(s)";
        }),
        hoverinfo: "text"
      });
      if (shade) {
        list.forEach(function (u) {
          shapes.push({
            type: "rect", xref: "x", yref: "paper", x0: u[0] / 1000, x1: (u[1] === null ? last : u[1]) / 1000,
            y0: 0, y1: 1, fillcolor: CAUSE_COLORS[cause] || "#666", opacity: cause === "no_snapshot" ? 0.08 : 0.14,
            line: { width: 0 }, layer: "below"
          });
        });
      }
    });

    // Gaps: exact, where the first message after the break arrived.
    var gaps = d.gaps.filter(function (g) { return g[0] !== null; });
    if (gaps.length) {
      traces.push({
        type: "scatter", mode: "markers", name: "gap", y: gaps.map(function () { return "gap"; }),
        x: gaps.map(function (g) { return g[0] / 1000; }),
        marker: { symbol: "x-thin-open", size: 14, line: { width: 3, color: KIND_COLORS.gap }, color: KIND_COLORS.gap },
        hovertext: gaps.map(function (g) {
          return "gap at " + iso(g[0]) + "<br>after " + g[1] + ", before " + g[2] +
            (g[3] === null ? "" : "<br>missing " + g[3]) + (g[4] ? "<br>repaired from " + escapeText(g[5]) : "<br>not repaired");
        }),
        hoverinfo: "text"
      });
      if (gaps.length <= SHADE_MAX) {
        gaps.forEach(function (g) {
          shapes.push({
            type: "line", xref: "x", yref: "paper", x0: g[0] / 1000, x1: g[0] / 1000, y0: 0, y1: 1,
            line: { color: KIND_COLORS.gap, width: 1, dash: "dot" }, layer: "below"
          });
        });
      }
    }

    // Other findings: one marker each where few, else a marker per time bin sized by its count.
    Object.keys(d.exact).forEach(function (kind) {
      var ev = d.exact[kind];
      traces.push({
        type: "scatter", mode: "markers", name: kind, y: ev.map(function () { return kind; }),
        x: ev.map(function (e) { return e[0] / 1000; }),
        marker: { symbol: kind === "disconnect" ? "line-ns-open" : "circle", size: kind === "disconnect" ? 16 : 8,
                  color: KIND_COLORS[kind] || "#444", line: { width: 2, color: KIND_COLORS[kind] || "#444" } },
        hovertext: ev.map(function (e) {
          return kind + " at " + iso(e[0]) + "<br>" + escapeText(d.paths[e[1]]) + ":" + e[2] +
            (e[3] ? "<br>" + escapeText(e[3]) : "");
        }),
        hoverinfo: "text"
      });
    });
    Object.keys(d.bins).forEach(function (kind) {
      var bins = d.bins[kind], top = 1;
      bins.forEach(function (b) { top = Math.max(top, b[1]); });
      traces.push({
        type: "scatter", mode: "markers", name: kind + " (per " + (d.bin_us / 1e6).toFixed(3) + " s)",
        y: bins.map(function () { return kind; }),
        x: bins.map(function (b) { return (first + (b[0] + 0.5) * d.bin_us) / 1000; }),
        marker: { size: bins.map(function (b) { return 5 + 17 * Math.sqrt(b[1] / top); }),
                  color: KIND_COLORS[kind] || "#444", opacity: 0.75 },
        hovertext: bins.map(function (b) {
          var t0 = first + b[0] * d.bin_us;
          return b[1] + " " + kind + "<br>from " + iso(t0) + "<br>to " + iso(Math.min(t0 + d.bin_us, last));
        }),
        hoverinfo: "text"
      });
    });

    var pad = Math.max((last - first) / 1000 * 0.01, 500);
    var untimed = Object.keys(d.untimed).map(function (k) { return d.untimed[k] + " " + k; });
    var layout = {
      title: { text: "Receive-time timeline" + (untimed.length ? " (not placed, no receive time: " + untimed.join(", ") + ")" : ""),
               font: { size: 13 }, x: 0, xanchor: "left" },
      height: 90 + 34 * rows.length,
      margin: { l: 130, r: 20, t: 30, b: 40 },
      barmode: "overlay",
      xaxis: { type: "date", range: [first / 1000 - pad, last / 1000 + pad], title: { text: "receive time (UTC)" } },
      yaxis: { type: "category", categoryorder: "array", categoryarray: rows.slice().reverse(),
               range: [-0.5, rows.length - 0.5], fixedrange: true },
      shapes: shapes, showlegend: true, legend: { orientation: "h", y: -0.35 }, hovermode: "closest"
    };
    layout.height += 30;
    Plotly.newPlot(div, traces, layout, CONFIG);
  }

  function drawLatency(div, d) {
    var lat = d.latency;
    if (!lat) {
      empty(div, "The venue sends no exchange time for this stream: no latency distribution.");
      return;
    }
    var w = lat.width_us, traces = [], shapes = [], annotations = [];
    traces.push({
      type: "bar", name: "messages", marker: { color: "#4c78a8" },
      x: lat.counts.map(function (_, i) { return (lat.start_us + (i + 0.5) * w) / 1000; }),
      y: lat.counts, width: lat.counts.map(function () { return w / 1000; }),
      hovertext: lat.counts.map(function (n, i) {
        var a = lat.start_us + i * w;
        return n + " message(s)<br>" + fmtMs(a) + " to " + fmtMs(a + w);
      }),
      hoverinfo: "text"
    });
    var end = lat.start_us + lat.counts.length * w;
    if (lat.under[0]) {
      traces.push({ type: "bar", name: "below the 0.1% quantile", marker: { color: "#bab0ac" },
        x: [(lat.start_us - 0.5 * w) / 1000], y: [lat.under[0]], width: [w / 1000],
        hovertext: [lat.under[0] + " message(s) below " + fmtMs(lat.start_us) + " (lowest " + fmtMs(lat.under[1]) + ")"],
        hoverinfo: "text" });
    }
    if (lat.over[0]) {
      traces.push({ type: "bar", name: "above the 99.9% quantile", marker: { color: "#e45756" },
        x: [(end + 0.5 * w) / 1000], y: [lat.over[0]], width: [w / 1000],
        hovertext: [lat.over[0] + " message(s) at or above " + fmtMs(end) + " (highest " + fmtMs(lat.over[1]) + ")"],
        hoverinfo: "text" });
    }
    if (lat.ms) {
      [["p50", "#333"], ["p99", "#b3261e"]].forEach(function (p) {
        var v = lat.ms[p[0]];
        if (typeof v !== "number") { return; }
        shapes.push({ type: "line", xref: "x", yref: "paper", x0: v, x1: v, y0: 0, y1: 1, line: { color: p[1], width: 1, dash: "dash" } });
        annotations.push({ x: v, xref: "x", y: 1, yref: "paper", yanchor: "bottom", text: p[0] + " " + v + " ms",
                           showarrow: false, font: { size: 11, color: p[1] } });
      });
    }
    Plotly.newPlot(div, traces, {
      title: { text: "Receive latency (receive time \u2212 exchange time), " + lat.total + " message(s)" +
               (lat.ms ? ", max " + lat.ms.max + " ms" : ""), font: { size: 13 }, x: 0, xanchor: "left" },
      height: 260, margin: { l: 60, r: 20, t: 40, b: 40 }, bargap: 0.02, barmode: "overlay",
      xaxis: { title: { text: "ms" } }, yaxis: { title: { text: "messages" }, rangemode: "tozero" },
      shapes: shapes, annotations: annotations, showlegend: false
    }, CONFIG);
  }

  openFromHash();
  document.documentElement.setAttribute("data-ready", "1");
})();
