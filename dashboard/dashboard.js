// moongate dashboard: polls status/live about once a second and updates the
// page in place. Data from the gateway (route, upstream, target and plugin
// names, reload errors) only ever reaches the page as textContent, never as
// markup.
//
// Authorization: fetches are same-origin with credentials, so HTTP auth the
// browser holds for the admin listener (or headers a proxy in front adds) is
// sent with them as it was with the page. A bearer token can also be given in
// the fragment, /dashboard#token=..., which never leaves the browser; it is
// kept in sessionStorage for this tab and sent as "Authorization: Bearer".
(function () {
  "use strict";

  var POLL_MS = 1000, KEEP = 180, WINDOW = 10, TIMEOUT_MS = 5000;
  var state = { since: 0, seq: 0, routes: {}, paused: false, timer: 0, lastOk: 0, failures: 0 };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function token() {
    var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      try { sessionStorage.setItem("moongate-token", decodeURIComponent(m[1])); } catch (e) { /* storage off */ }
      history.replaceState(null, "", location.pathname + location.search);
    }
    try { return sessionStorage.getItem("moongate-token"); } catch (e) { return null; }
  }

  // ---------------------------------------------------------------- formats

  function num(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (Math.abs(v) >= 100 || digits === 0) return String(Math.round(v));
    return v.toFixed(digits === undefined ? 1 : digits);
  }
  function ms(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + " s";
    return (v >= 10 ? Math.round(v) : v.toFixed(v >= 1 ? 1 : 2)) + " ms";
  }
  function pct(v) { return isFinite(v) ? (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + "%" : "–"; }
  function bytes(v) {
    var u = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : v) + " " + u[i];
  }
  function duration(s) {
    s = Math.max(0, Math.round(s));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + (s % 60) + "s";
    return s + "s";
  }
  function clock(unixMs) {
    var d = new Date(unixMs);
    return d.toLocaleString(undefined, { hour12: false });
  }

  // ------------------------------------------------------------- sparklines

  var SVGNS = "http://www.w3.org/2000/svg";

  // One small line chart; `series` are arrays of numbers (null = gap).
  function spark(series, classes, label) {
    var w = 120, h = 24, max = 0, n = KEEP;
    series.forEach(function (s) { s.forEach(function (v) { if (v !== null && v > max) max = v; }); });
    var svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label + ", last " + Math.round(KEEP / 60) + " minutes, peak " + num(max));
    series.forEach(function (s, i) {
      var pts = [], off = n - s.length;
      s.forEach(function (v, j) {
        if (v === null) return;
        var y = max > 0 ? h - 1 - (v / max) * (h - 2) : h - 1;
        pts.push(((off + j) * w / (n - 1)).toFixed(1) + "," + y.toFixed(1));
      });
      var pl = document.createElementNS(SVGNS, "polyline");
      pl.setAttribute("points", pts.join(" "));
      if (classes[i]) pl.setAttribute("class", classes[i]);
      svg.appendChild(pl);
    });
    return svg;
  }

  // ----------------------------------------------------------------- history

  // Appends the new points of a route to what the page kept (or replaces them
  // when the server's history does not continue ours: first poll, restart).
  function merge(doc) {
    var contiguous = doc.from === state.seq + 1;
    var seen = {};
    doc.routes.forEach(function (r) {
      var key = r.name, h = state.routes[key];
      seen[key] = true;
      if (!h || !contiguous) h = state.routes[key] = { rps: [], eps: [], p50: [], p99: [], in_flight: [] };
      ["rps", "eps", "p50", "p99", "in_flight"].forEach(function (f) {
        var a = h[f].concat(r[f]);
        h[f] = a.length > KEEP ? a.slice(a.length - KEEP) : a;
      });
      h.doc = r;
    });
    Object.keys(state.routes).forEach(function (k) { if (!seen[k]) delete state.routes[k]; });
    state.seq = doc.seq;
  }

  function tail(a, n) { return a.slice(Math.max(0, a.length - n)); }
  function sum(a) { return a.reduce(function (s, v) { return s + (v || 0); }, 0); }
  function last(a) {
    for (var i = a.length - 1; i >= 0; i--) if (a[i] !== null) return a[i];
    return null;
  }

  // Per-route figures over the last WINDOW seconds.
  function figures(h) {
    var req = sum(tail(h.rps, WINDOW)), err = sum(tail(h.eps, WINDOW)), n = Math.min(WINDOW, h.rps.length) || 1;
    return {
      rps: req / n, errRate: req > 0 ? 100 * err / req : (err > 0 ? 100 : 0), eps: err / n,
      p50: last(tail(h.p50, WINDOW)), p99: last(tail(h.p99, WINDOW)), inFlight: h.in_flight.length ? h.in_flight[h.in_flight.length - 1] : 0
    };
  }

  // ------------------------------------------------------------------ render

  function keyed(parent, tag, key, attr) {
    var sel = parent.querySelector(tag + "[" + attr + "=\"" + CSS.escape(key) + "\"]");
    if (!sel) { sel = el(tag); sel.setAttribute(attr, key); }
    return sel;
  }

  // A text label beside the name: the highlight never relies on colour alone.
  function worstTag(node, yes, what) {
    if (yes) node.appendChild(el("span", { "class": "tag worst" }, what));
  }

  function renderRoutes(worst) {
    var body = $("routes-body"), names = Object.keys(state.routes), frag = document.createDocumentFragment();
    names.sort(function (a, b) { return (a === "") - (b === "") || a.localeCompare(b); });
    names.forEach(function (name) {
      var h = state.routes[name], r = h.doc, f = figures(h);
      if (name === "" && r.requests === 0) return; // no unmatched request yet: no row
      var tr = keyed(body, "tr", name, "data-route");
      tr.textContent = "";
      tr.className = name === worst.errors || name === worst.latency ? "worst" : "";
      var th = el("th", { scope: "row" }, name === "" ? "(no route matched)" : name);
      worstTag(th, name === worst.errors, "most errors");
      worstTag(th, name === worst.latency && name !== worst.errors, "slowest p99");
      tr.appendChild(th);
      tr.appendChild(el("td", null, r.upstream || "–"));

      var td = el("td");
      td.appendChild(el("span", { "class": "v", "data-field": "rps" }, num(f.rps)));
      td.appendChild(spark([h.rps], [""], "requests per second"));
      tr.appendChild(td);

      td = el("td");
      td.appendChild(el("span", { "class": "v", "data-field": "errors" }, pct(f.errRate)));
      td.appendChild(spark([h.eps], ["p99"], "errors per second"));
      var names1m = Object.keys(r.errors_1m || {}).map(function (k) { return k + " " + r.errors_1m[k]; });
      td.appendChild(el("span", { "class": "errnames", "data-field": "error-names" },
        names1m.length ? "last minute: " + names1m.join(", ") : ""));
      tr.appendChild(td);

      td = el("td");
      td.appendChild(el("span", { "class": "v", "data-field": "latency" }, ms(f.p50) + " / " + ms(f.p99)));
      td.appendChild(spark([h.p50, h.p99], ["", "p99"], "p50 and p99 latency"));
      tr.appendChild(td);

      td = el("td");
      td.appendChild(el("span", { "class": "v", "data-field": "in-flight" }, num(f.inFlight, 0)));
      td.appendChild(spark([h.in_flight], [""], "requests in flight"));
      tr.appendChild(td);
      frag.appendChild(tr);
    });
    body.textContent = "";
    body.appendChild(frag);
  }

  var STATE_TEXT = { closed: "closed", half_open: "half-open", open: "open" };

  function renderUpstreams(doc, worstUp) {
    var box = $("upstreams-body"), frag = document.createDocumentFragment();
    doc.upstreams.forEach(function (u) {
      var div = el("div", { "class": "upstream", "data-upstream": u.name });
      var h3 = el("h3", { id: "up-" + u.name.replace(/[^A-Za-z0-9_-]/g, "_") }, u.name);
      worstTag(h3, u.name === worstUp, "most saturated");
      div.appendChild(h3);
      var meta = el("p", { "class": "meta" }), b = u.bulkhead, rt = u.retry;
      function fact(label, value, field) {
        var s = el("span", null, label + " ");
        s.appendChild(el("b", { "data-field": field }, value));
        meta.appendChild(s);
      }
      fact("bulkhead in use", b.in_use + " / " + b.max, "bulkhead-in-use");
      fact("queued", b.queued + " / " + b.max_queue, "bulkhead-queued");
      fact("rejected", b.rejected + " (" + b.rejected_1m + " last min)", "bulkhead-rejected");
      fact("retry budget (10 s)", rt.retries_10s + " / " + rt.budget_10s + " used", "retry-budget");
      fact("retries last min", rt.retries_1m, "retries");
      div.appendChild(meta);
      var scroll = el("div", { "class": "scroll", role: "region", tabindex: "0", "aria-labelledby": h3.id });
      var table = el("table"), thead = el("thead"), hr = el("tr");
      ["Target", "Breaker", "Health", "In flight", "EWMA latency", "Failures (last min)", "In a row"].forEach(function (t) {
        hr.appendChild(el("th", { scope: "col" }, t));
      });
      thead.appendChild(hr);
      table.appendChild(thead);
      var tb = el("tbody");
      u.targets.forEach(function (t) {
        var tr = el("tr", { "data-target": u.name + "/" + t.address, "data-state": t.state });
        tr.appendChild(el("th", { scope: "row" }, t.address));
        var td = el("td"), txt = STATE_TEXT[t.state] || t.state;
        if (t.state === "open") txt += " · " + Math.ceil(t.retry_in_ms / 1000) + " s left";
        if (t.state === "half_open") txt += " · probing";
        td.appendChild(el("span", { "class": "state " + t.state, "data-field": "breaker" }, txt));
        tr.appendChild(td);
        td = el("td");
        td.appendChild(el("span", { "class": "state " + t.health }, t.health === "unknown" ? "not checked" : t.health));
        tr.appendChild(td);
        tr.appendChild(el("td", null, t.in_flight));
        tr.appendChild(el("td", null, ms(t.ewma_ms)));
        tr.appendChild(el("td", null, t.failures_1m + " of " + t.attempts_1m));
        tr.appendChild(el("td", null, t.consecutive));
        tb.appendChild(tr);
      });
      table.appendChild(tb);
      scroll.appendChild(table);
      div.appendChild(scroll);
      frag.appendChild(div);
    });
    box.textContent = "";
    box.appendChild(frag);
  }

  function renderPlugins(doc) {
    var body = $("plugins-body"), frag = document.createDocumentFragment();
    doc.plugins.forEach(function (p) {
      Object.keys(p.phases).forEach(function (ph) {
        var s = p.phases[ph], tr = el("tr", { "data-plugin": p.name + "/" + ph });
        tr.appendChild(el("th", { scope: "row" }, p.name));
        tr.appendChild(el("td", null, ph));
        tr.appendChild(el("td", null, s.calls));
        tr.appendChild(el("td", null, ms(s.mean_ms)));
        tr.appendChild(el("td", null, ms(s.total_ms)));
        var td = el("td", null, s.errors);
        if (s.errors > 0) td.appendChild(el("span", { "class": "tag worst" }, "errors"));
        tr.appendChild(td);
        frag.appendChild(tr);
      });
    });
    if (!frag.childNodes.length) {
      var tr = el("tr");
      tr.appendChild(el("td", { colspan: "6" }, "No plugin has run yet."));
      frag.appendChild(tr);
    }
    body.textContent = "";
    body.appendChild(frag);
  }

  function renderProcess(doc) {
    var p = doc.process, dl = $("process-body"), c = p.connections;
    dl.textContent = "";
    [["moongate", p.moongate],
     ["Config version", p.config_version + ", loaded " + clock(p.config_loaded_at * 1000)],
     ["Config file", p.config_path],
     ["Uptime", duration(p.uptime_s)],
     ["Memory (RSS)", bytes(p.rss_bytes)],
     ["Workers", p.workers],
     ["Client connections", c.client.active + " active, " + c.client.idle + " idle"],
     ["Upstream connections", c.upstream.active + " active, " + c.upstream.idle + " pooled"],
     ["Reloads", p.reloads_ok + " ok, " + p.reloads_failed + " failed"]].forEach(function (kv) {
      dl.appendChild(el("dt", null, kv[0]));
      dl.appendChild(el("dd", null, kv[1]));
    });
    var ol = $("reloads");
    ol.textContent = "";
    p.reloads.forEach(function (r) {
      var li = el("li", { "data-reload-ok": r.ok ? "true" : "false" });
      li.appendChild(el("span", { "class": "state " + (r.ok ? "ok" : "failed") }, r.ok ? "ok" : "failed"));
      li.appendChild(document.createTextNode(" " + clock(r.at) + " "));
      if (r.ok) li.appendChild(document.createTextNode("version " + r.version));
      else li.appendChild(el("span", { "class": "err" }, r.error));
      ol.appendChild(li);
    });
  }

  function setCard(id, big, sub, alert) {
    var c = $(id);
    c.querySelector(".big").textContent = big;
    c.querySelector(".sub").textContent = sub;
    c.classList.toggle("alert", !!alert);
  }

  // The four golden signals, each naming its worst offender.
  function renderSignals(doc) {
    var tot = { rps: 0, eps: 0, inFlight: 0 }, worst = { errors: null, latency: null }, we = 0, wl = 0;
    Object.keys(state.routes).forEach(function (name) {
      var f = figures(state.routes[name]);
      tot.rps += f.rps; tot.eps += f.eps; tot.inFlight += f.inFlight || 0;
      if (f.eps > 0 && f.errRate > we) { we = f.errRate; worst.errors = name; }
      if (f.p99 !== null && f.p99 > wl) { wl = f.p99; worst.latency = name; }
    });
    function rname(n) { return n === "" ? "(no route matched)" : n; }
    var errRate = tot.rps > 0 ? 100 * tot.eps / tot.rps : (tot.eps > 0 ? 100 : 0);
    setCard("sig-traffic", num(tot.rps) + " req/s", Object.keys(state.routes).length + " routes", false);
    setCard("sig-errors", pct(errRate), worst.errors !== null ? "worst: " + rname(worst.errors) + " " + pct(we) : "no errors", errRate >= 1);
    setCard("sig-latency", ms(wl || null), worst.latency !== null ? "worst: " + rname(worst.latency) : "no traffic", wl >= 1000);

    var open = 0, half = 0, worstUp = null, ws = -1, what = "";
    doc.upstreams.forEach(function (u) {
      var s = u.bulkhead.max ? (u.bulkhead.in_use + u.bulkhead.queued) / u.bulkhead.max : 0, o = 0;
      u.targets.forEach(function (t) { if (t.state === "open") { open++; o++; } if (t.state === "half_open") half++; });
      var score = s + o / Math.max(1, u.targets.length);
      if (score > ws && (score > 0)) { ws = score; worstUp = u.name; what = o ? o + " of " + u.targets.length + " targets open" : Math.round(100 * s) + "% of bulkhead"; }
    });
    var sat = num(tot.inFlight, 0) + " in flight";
    var sub = (open ? open + " breaker" + (open > 1 ? "s" : "") + " open" : "all breakers closed") + (half ? ", " + half + " half-open" : "");
    if (worstUp) sub += "; worst: " + worstUp + " (" + what + ")";
    setCard("sig-saturation", sat, sub, open > 0);
    return { routes: worst, upstream: worstUp };
  }

  function render(doc) {
    merge(doc);
    var w = renderSignals(doc);
    renderRoutes(w.routes);
    renderUpstreams(doc, w.upstream);
    renderPlugins(doc);
    renderProcess(doc);
  }

  // ------------------------------------------------------------------- poll

  function setConn(kind, text) {
    var c = $("conn");
    c.setAttribute("data-state", kind);
    if (c.textContent !== text) c.textContent = text;
  }

  function poll() {
    state.timer = 0;
    if (state.paused) return;
    var headers = { Accept: "application/json" }, tok = token();
    if (tok) headers.Authorization = "Bearer " + tok;
    var ctl = typeof AbortController === "function" ? new AbortController() : null;
    var kill = ctl ? setTimeout(function () { ctl.abort(); }, TIMEOUT_MS) : 0;
    fetch("status/live?since=" + state.seq, { headers: headers, cache: "no-store", credentials: "same-origin", signal: ctl ? ctl.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (doc) {
        render(doc);
        state.lastOk = Date.now();
        state.failures = 0;
        setConn("live", "live · config v" + doc.process.config_version + " · updated " + new Date(doc.now).toLocaleTimeString(undefined, { hour12: false }));
      })
      .catch(function (e) {
        state.failures++;
        setConn("lost", "connection lost (" + (e && e.message ? e.message : "error") + "), retrying" +
          (state.lastOk ? "; data from " + duration((Date.now() - state.lastOk) / 1000) + " ago" : ""));
      })
      .then(function () {
        clearTimeout(kill);
        if (!state.paused && !state.timer) state.timer = setTimeout(poll, state.failures ? Math.min(5000, POLL_MS * state.failures) : POLL_MS);
      });
  }

  $("pause").addEventListener("click", function () {
    state.paused = !state.paused;
    this.setAttribute("aria-pressed", state.paused ? "true" : "false");
    this.textContent = state.paused ? "Resume updates" : "Pause updates";
    if (state.paused) { clearTimeout(state.timer); state.timer = 0; setConn("paused", "paused"); }
    else poll();
  });

  poll();
})();
