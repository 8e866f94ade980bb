/* ray_dissect report: the unit grid (sort, filter, search, pages; state in the URL hash),
   unit-page toggles and keys, the concept table. Plain script: no modules, no network. */
(function () {
  "use strict";
  var RD = window.RD = window.RD || {};
  var PAGE = 100;
  var METRICS = ["act", "det", "samp", "expl", "cm"];

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function parseHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) { return; }
      var i = part.indexOf("=");
      var k = i < 0 ? part : part.slice(0, i);
      out[decodeURIComponent(k)] = i < 0 ? "" : decodeURIComponent(part.slice(i + 1));
    });
    return out;
  }

  function unitList(q) {
    if (!/^[\d,\s-]+$/.test(q)) { return null; }
    var set = {};
    q.split(",").forEach(function (p) {
      var m = p.trim().match(/^(\d+)(?:-(\d+))?$/);
      if (!m) { return; }
      var a = +m[1], b = m[2] === undefined ? a : +m[2];
      for (var u = a; u <= b; u++) { set[u] = true; }
    });
    return set;
  }

  /* ---- the unit grid of a layer page ---- */
  function Grid(layer, data) {
    this.layer = layer;
    this.data = data;
    this.units = data.units;
    this.t = data.threshold;
    this.counts = {};
    this.best = {};
    var self = this;
    this.units.forEach(function (d) {
      if (!d.l || !d.ok) { return; }
      self.counts[d.l] = (self.counts[d.l] || 0) + 1;
      self.best[d.l] = Math.max(self.best[d.l] || 0, d.i);
    });
  }

  Grid.prototype.defaults = function () {
    return {sort: "unit", dir: "asc", cat: "", int: "", min: String(this.t), q: "", op: "",
            len: "", r: "", gap: "", page: "1"};
  };

  Grid.prototype.read = function () {
    var s = this.defaults(), h = parseHash();
    Object.keys(s).forEach(function (k) { if (h[k] !== undefined) { s[k] = h[k]; } });
    if (h.sort && h.sort.indexOf(":") >= 0) {
      s.sort = h.sort.split(":")[0];
      s.dir = h.sort.split(":")[1] === "desc" ? "desc" : "asc";
    }
    return s;
  };

  Grid.prototype.hashOf = function (s) {
    var d = this.defaults(), parts = [];
    if (s.sort !== d.sort || s.dir !== d.dir) { parts.push("sort=" + s.sort + ":" + s.dir); }
    ["cat", "int", "min", "q", "op", "len", "r", "gap", "page"].forEach(function (k) {
      if (s[k] !== d[k] && s[k] !== "") { parts.push(k + "=" + encodeURIComponent(s[k])); }
    });
    return parts.join("&");
  };

  Grid.prototype.key = function (d, s) {
    switch (s.sort) {
      case "iou": return [d.i];
      case "label": return [d.cr, -(this.counts[d.l] || 0), -(this.best[d.l] || 0), -d.i];
      case "best": return [d.b === null ? -1 : d.b];
      case "len": return [d.n];
      case "px": return [d.px];
      case "gap": return [d.g === null || d.g === undefined ? -1 : d.g];
      default:
        if (METRICS.indexOf(s.sort) >= 0) {
          return [d.m[s.sort] === undefined ? -1 : d.m[s.sort]];
        }
        return [d.u];
    }
  };

  Grid.prototype.matches = function (d, s) {
    var min = parseFloat(s.min);
    if (s.cat && s.cat.split(",").indexOf(d.c) < 0) { return false; }
    if (s.int && !(d.j !== null && d.j >= min)) { return false; }
    if (s.gap && !(d.g > 0)) { return false; }
    if (s.op && !d.r.some(function (r) { return r[5].indexOf(s.op) >= 0; })) { return false; }
    if (s.len && !d.r.some(function (r) { return String(r[4]) === s.len; })) { return false; }
    if (s.r && !d.r.some(function (r) { return String(r[0]) === s.r; })) { return false; }
    if (s.q) {
      var list = unitList(s.q);
      if (list) { return !!list[d.u]; }
      var q = s.q.toLowerCase().replace(/_/g, " ").trim();
      return d.q.some(function (t) { return t.indexOf(q) >= 0; });
    }
    return true;
  };

  Grid.prototype.select = function (s) {
    var self = this, sign = s.dir === "desc" ? -1 : 1;
    var rows = this.units.filter(function (d) { return self.matches(d, s); });
    var keyed = rows.map(function (d) { return [self.key(d, s), d]; });
    keyed.sort(function (a, b) {
      for (var i = 0; i < a[0].length; i++) {
        if (a[0][i] < b[0][i]) { return -sign; }
        if (a[0][i] > b[0][i]) { return sign; }
      }
      return a[1].u - b[1].u;
    });
    return keyed.map(function (k) { return k[1]; });
  };

  Grid.prototype.card = function (d, min) {
    var judged = d.j !== null, below = judged && !(d.j >= min);
    var art = el("article", {"class": below ? "card muted" : "card", "data-layer": this.layer,
                             "data-unit": String(d.u), "data-label": d.l,
                             "data-iou": d.i.toFixed(6)});
    var h = el("h3");
    h.appendChild(d.h ? el("a", {href: d.h}, "unit " + d.u) : document.createTextNode("unit " + d.u));
    h.appendChild(document.createTextNode(" "));
    if (judged) {
      h.appendChild(below ? el("span", {"class": "badge below"}, "below " + min)
                          : el("span", {"class": "badge"}, "interpretable"));
    }
    art.appendChild(h);
    var p = el("p", {"class": "lab"});
    if (judged) { art.appendChild(p); }
    if (d.c) {
      p.appendChild(el("span", {"class": "chip", style: "--c:" + this.data.colors[d.c]}, d.c));
      p.appendChild(document.createTextNode(" "));
    }
    p.appendChild(el("span", {"class": "name"}, d.l || "no label"));
    p.appendChild(document.createTextNode(" "));
    p.appendChild(el("span", {"class": "iou", title: d.i.toFixed(4)}, d.i.toFixed(2)));
    if (d.r.length) {
      var ul = el("ul", {"class": "ranges"});
      d.r.forEach(function (r) {
        var li = el("li", {}, "r" + r[0] + " " + r[1] + " ");
        li.appendChild(el("span", {"class": "formula"}, r[2]));
        li.appendChild(document.createTextNode(" \u00b7 " + r[3].toFixed(2)));
        r[6].forEach(function (ch) {
          li.appendChild(document.createTextNode(" "));
          li.appendChild(el("span", {"class": "mchip", title: ch[2]}, ch[0] + " " + ch[1]));
        });
        ul.appendChild(li);
      });
      art.appendChild(ul);
    }
    if (d.s) {
      art.appendChild(el("img", {"class": "sprite", src: d.s[0], width: String(d.s[1]),
                                 height: String(d.s[2]), loading: "lazy",
                                 alt: "unit " + d.u + " tiles"}));
    } else {
      art.appendChild(el("p", {"class": "notiles"}, "no tiles in the records"));
    }
    return art;
  };

  Grid.prototype.header = function (min) {
    var good = this.units.filter(function (d) { return d.l && d.i >= min; });
    var names = {};
    good.forEach(function (d) { names[d.c + "\u0000" + d.l] = true; });
    var node = document.getElementById("header");
    if (this.data.concepts === false) { return; }
    node.textContent = good.length + "/" + this.units.length + " units covering " +
      Object.keys(names).length + " concepts with IoU \u2265 " + min.toFixed(2);
    node.setAttribute("data-k", String(good.length));
  };

  Grid.prototype.render = function () {
    var s = this.read(), min = parseFloat(s.min);
    if (isNaN(min)) { min = this.t; }
    this.sync(s);
    var rows = this.select(s);
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    var page = Math.min(Math.max(1, parseInt(s.page, 10) || 1), pages);
    var grid = document.getElementById("grid");
    var frag = document.createDocumentFragment(), self = this;
    rows.slice((page - 1) * PAGE, page * PAGE).forEach(function (d) {
      frag.appendChild(self.card(d, min));
    });
    grid.textContent = "";
    grid.appendChild(frag);
    this.header(min);
    var a = rows.length ? (page - 1) * PAGE + 1 : 0, b = Math.min(page * PAGE, rows.length);
    document.getElementById("count").textContent = "Showing " + a + "\u2013" + b + " of " +
      rows.length + " matching units (" + this.units.length + " in the layer), page " + page +
      " of " + pages + ".";
    this.pager(page, pages);
  };

  Grid.prototype.pager = function (page, pages) {
    var nav = document.getElementById("pager"), self = this;
    nav.textContent = "";
    [["\u2190 previous", page - 1], ["next \u2192", page + 1]].forEach(function (p) {
      var btn = el("button", {type: "button"}, p[0]);
      btn.disabled = p[1] < 1 || p[1] > pages;
      btn.addEventListener("click", function () { self.set({page: String(p[1])}, true); });
      nav.appendChild(btn);
    });
  };

  Grid.prototype.sync = function (s) {
    var f = function (id) { return document.getElementById(id); };
    f("q").value = s.q;
    f("sort").value = s.sort;
    f("dir").textContent = s.dir === "desc" ? "descending" : "ascending";
    f("dir").setAttribute("aria-pressed", s.dir === "desc" ? "true" : "false");
    f("int").checked = !!s.int;
    f("gap").checked = !!s.gap;
    f("min").value = s.min;
    f("minval").textContent = parseFloat(s.min).toFixed(2);
    f("op").value = s.op;
    f("len").value = s.len;
    f("range").value = s.r;
    var cats = s.cat ? s.cat.split(",") : [];
    Array.prototype.forEach.call(document.querySelectorAll("input[name=cat]"), function (c) {
      c.checked = cats.indexOf(c.value) >= 0;
    });
  };

  Grid.prototype.set = function (change, keepPage) {
    var s = this.read();
    Object.keys(change).forEach(function (k) { s[k] = change[k]; });
    if (!keepPage) { s.page = "1"; }
    var h = this.hashOf(s);
    if (location.hash.replace(/^#/, "") === h) { this.render(); } else { location.hash = h; }
  };

  Grid.prototype.bind = function () {
    var self = this, f = function (id) { return document.getElementById(id); };
    f("q").addEventListener("input", function () { self.set({q: f("q").value}); });
    f("sort").addEventListener("change", function () { self.set({sort: f("sort").value}); });
    f("dir").addEventListener("click", function () {
      self.set({dir: self.read().dir === "desc" ? "asc" : "desc"});
    });
    f("int").addEventListener("change", function () { self.set({int: f("int").checked ? "1" : ""}); });
    f("gap").addEventListener("change", function () { self.set({gap: f("gap").checked ? "1" : ""}); });
    f("min").addEventListener("input", function () { self.set({min: f("min").value}); });
    f("op").addEventListener("change", function () { self.set({op: f("op").value}); });
    f("len").addEventListener("change", function () { self.set({len: f("len").value}); });
    f("range").addEventListener("change", function () { self.set({r: f("range").value}); });
    Array.prototype.forEach.call(document.querySelectorAll("input[name=cat]"), function (c) {
      c.addEventListener("change", function () {
        var on = Array.prototype.filter.call(document.querySelectorAll("input[name=cat]"),
                                             function (x) { return x.checked; });
        self.set({cat: on.map(function (x) { return x.value; }).join(",")});
      });
    });
    window.addEventListener("hashchange", function () { self.render(); });
  };

  RD.add = function (layer, data) {
    var start = function () {
      var grid = new Grid(layer, data);
      RD.grid = grid;
      document.getElementById("controls").hidden = false;
      grid.bind();
      grid.render();
    };
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", start);
    } else { start(); }
  };

  /* ---- compact data tables: <pre class="rows">, a header line then one line per row ---- */
  function rowsTables() {
    Array.prototype.forEach.call(document.querySelectorAll("pre.rows"), function (pre) {
      var table = document.createElement("table");
      table.className = "data";
      pre.textContent.split("\n").forEach(function (line, i) {
        var row = (i ? (table.tBodies[0] || table.createTBody()) : table.createTHead()).insertRow();
        line.split(" ").forEach(function (value) {
          var cell = document.createElement(i ? "td" : "th");
          if (!i) { cell.scope = "col"; }
          cell.textContent = value;
          row.appendChild(cell);
        });
      });
      pre.parentNode.replaceChild(table, pre);
    });
  }

  /* The heat view's colour filter (ray_dissect/report/heat.py's jet_filter(), verbatim): added
     once per unit page with heat rows, unless the page carries it (one that opens on them). */
  var JET = '<svg class="defs" width="0" height="0" aria-hidden="true"><filter id="jet" color-interpolation-filters="sRGB"><feComponentTransfer><feFuncR type="table" tableValues="0 0 0 0 0.5 1 1 1 0.5"/><feFuncG type="table" tableValues="0 0 0.5 1 1 1 0.5 0 0"/><feFuncB type="table" tableValues="0.5 1 1 1 0.5 0 0 0 0"/><feFuncA type="linear" slope="0.6"/></feComponentTransfer></filter></svg>';

  /* ---- unit pages: view toggles, j/k, zoom dialog ---- */
  function unitPage() {
    rowsTables();
    if (document.querySelector(".strip .heat") && !document.getElementById("jet")) {
      document.body.insertAdjacentHTML("beforeend", JET);
    }
    Array.prototype.forEach.call(document.querySelectorAll("button[data-view]"), function (b) {
      b.addEventListener("click", function () {
        var view = b.getAttribute("data-view");
        document.body.setAttribute("data-tiles", view);
        Array.prototype.forEach.call(document.querySelectorAll("img[data-" + view + "]"),
          function (img) { img.src = img.getAttribute("data-" + view); });
        Array.prototype.forEach.call(document.querySelectorAll("button[data-view]"),
          function (o) { o.setAttribute("aria-pressed", o === b ? "true" : "false"); });
      });
    });
    document.addEventListener("keydown", function (e) {
      if (e.target && /INPUT|TEXTAREA|SELECT/.test(e.target.tagName)) { return; }
      var link = e.key === "j" ? document.getElementById("next")
               : e.key === "k" ? document.getElementById("prev") : null;
      if (link && link.href) { location.href = link.href; }
    });
    var dialog = document.getElementById("zoom");
    if (!dialog || !dialog.showModal) { return; }
    var opener = null;
    Array.prototype.forEach.call(document.querySelectorAll(".strip .frame > img, .strip .layers"),
                                 function (img) {
      img.tabIndex = 0;
      var open = function () {
        opener = img;
        var old = dialog.querySelector("img, .layers");
        if (old) { dialog.removeChild(old); }
        var big = img.cloneNode(true);
        big.removeAttribute("tabindex");
        dialog.insertBefore(big, dialog.firstChild);
        dialog.showModal();
      };
      img.addEventListener("click", open);
      img.addEventListener("keydown", function (e) { if (e.key === "Enter") { open(); } });
    });
    dialog.addEventListener("close", function () { if (opener) { opener.focus(); } });
    dialog.addEventListener("click", function () { dialog.close(); });
  }

  /* ---- concepts page: #c=<name> filter, sortable columns ---- */
  function conceptPage(table) {
    var body = table.tBodies[0];
    var apply = function () {
      var c = parseHash().c;
      var want = c === undefined ? null : c.toLowerCase().replace(/_/g, " ");
      Array.prototype.forEach.call(body.rows, function (row) {
        row.hidden = want !== null && row.getAttribute("data-c") !== want;
      });
      Array.prototype.forEach.call(document.querySelectorAll("section.gallery"), function (s) {
        s.hidden = want !== null && s.getAttribute("data-c") !== want;
      });
      var note = document.getElementById("cfilter");
      note.textContent = want === null ? "" : "Showing units detecting \u201c" + want + "\u201d.";
    };
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var btn = th.querySelector("button");
      if (!btn) { return; }
      btn.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (o) {
          o.removeAttribute("aria-sort");
        });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var num = th.classList.contains("num");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
          var r = num ? parseFloat(x) - parseFloat(y) : (x < y ? -1 : x > y ? 1 : 0);
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
    window.addEventListener("hashchange", apply);
    apply();
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.body.getAttribute("data-page") === "unit") { unitPage(); }
    var table = document.getElementById("concept-table");
    if (table) { conceptPage(table); }
  });
})();
