// dotevals heat map of a matrix experiment: a click on a cell (or Enter on
// a focused one; Tab reaches a grid's first cell, the arrow keys the others)
// lists below its table the samples whose verdict differs from the baseline
// cell's. The lists are in the matrix JSON, parsed on the first click:
// nothing runs per cell at load. Every value from the store is set as text,
// never parsed as HTML.
(function () {
  "use strict";
  var section = document.getElementById("matrix");
  var holder = document.getElementById("matrix-data");
  if (!section || !holder) return;
  var data = null, selected = null;

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function verdict(v, score) {
    return score === null ? v : v + " (" + Math.round(score * 1000) / 1000 + ")";
  }

  function cls(v) {
    return v === "passed" ? "pass" : v === "failed" || v === "errored" ? "fail" : "";
  }

  function show(td) {
    if (data === null) data = JSON.parse(holder.textContent);
    var i = Number(td.getAttribute("data-i")), c = data.cells[i];
    var box = td.closest(".heatmap").querySelector(".matrix-detail");
    if (!c || !box) return;
    if (selected) { selected.classList.remove("selected"); selected.removeAttribute("aria-selected"); }
    selected = td;
    td.classList.add("selected");
    td.setAttribute("aria-selected", "true");
    box.textContent = "";
    var head = c.evaluation + " (" + c.evaluator + ")";
    if (c.base) {
      box.appendChild(el("p", head + " is the baseline: every other cell is compared with it. Click another cell to see where it differs.", "note"));
    } else if (c.note) {
      box.appendChild(el("p", head + ": " + c.note + ".", "note"));
    } else {
      var said = c.differ === 0
        ? "no sample's verdict differs from the baseline's (" + data.baseline + ") over the " + c.paired + " samples both cells ran."
        : c.differ + " of the " + c.paired + " samples both cells ran differ in verdict from the baseline (" + data.baseline + ")" +
          (c.differ > c.rows.length ? "; the first " + c.rows.length + " are listed (capped at " + data.cap + ")." : ":");
      box.appendChild(el("p", head + ": " + said, "note"));
      if (c.rows.length) {
        var table = el("table", null, "differ");
        var tr = el("tr");
        ["id", "baseline", "this cell", "baseline output", "this cell's output"].forEach(function (h) { tr.appendChild(el("th", h)); });
        table.appendChild(el("thead")).appendChild(tr);
        var body = el("tbody");
        c.rows.forEach(function (r) {
          var b = data.base[r[0]], row = el("tr", null, "differ");
          row.appendChild(el("td", b[0]));
          row.appendChild(el("td", verdict(r[1], r[2]), cls(r[1])));
          row.appendChild(el("td", verdict(r[3], r[4]), cls(r[3])));
          row.appendChild(el("td", b[1] === null ? "" : b[1]));
          row.appendChild(el("td", r[5] === null ? "" : r[5]));
          body.appendChild(row);
        });
        table.appendChild(body);
        box.appendChild(table);
      }
    }
    box.hidden = false;
    section.setAttribute("data-shown", String(i));
  }

  function target(ev) {
    var t = ev.target;
    return t && t.closest ? t.closest("td[data-i]") : null;
  }
  section.addEventListener("click", function (ev) {
    var td = target(ev);
    if (!td) return;
    var was = td.closest("table").querySelector("td[tabindex='0']");
    if (was) focus(was, td);
    show(td);
  });
  // The next cell from `td` by `dr` rows and `dc` columns, skipping holes.
  function step(td, dr, dc) {
    var tr = td.parentNode, col = td.cellIndex;
    for (;;) {
      if (dr) {
        tr = dr < 0 ? tr.previousElementSibling : tr.nextElementSibling;
        if (!tr) return null;
      } else {
        col += dc;
      }
      var c = tr.cells[col];
      if (!c) return null;
      if (c.hasAttribute("data-i")) return c;
    }
  }
  function focus(from, to) {
    if (!to || to === from) return;
    from.setAttribute("tabindex", "-1");
    to.setAttribute("tabindex", "0");
    to.focus();
  }
  var moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  section.addEventListener("keydown", function (ev) {
    var td = target(ev);
    if (!td) return;
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      show(td);
    } else if (moves[ev.key]) {
      ev.preventDefault();
      focus(td, step(td, moves[ev.key][0], moves[ev.key][1]));
    }
  });
})();
// dotevals sample browser: reads the samples JSON, filters by verdict,
// evaluator and text, and renders matching rows a page at a time. Every
// value from the store is set as text, never parsed as HTML.
(function () {
  "use strict";
  var PAGE = 200;
  var data = JSON.parse(document.getElementById("samples-data").textContent);
  var evals = data.evals, rows = data.rows;
  var filter = document.getElementById("filter");
  var evaluator = document.getElementById("evaluator");
  var search = document.getElementById("search");
  var tbody = document.getElementById("samples");
  var shown = document.getElementById("shown-count");
  var more = document.getElementById("more");
  var hay = new Array(rows.length);
  var matching = [], rendered = 0;

  function haystack(i) {
    if (hay[i] === undefined) {
      var r = rows[i];
      hay[i] = [r[1], r[2], r[3] || "", JSON.stringify(r[4]), r[8] || "", r[9] || "", r[7].join(" ")].join("\n").toLowerCase();
    }
    return hay[i];
  }

  function verdict(r, idx) {
    if (r[8] !== null) return "error";
    var passed = r[6];
    if (idx !== undefined) return passed[idx] === true ? "pass" : passed[idx] === false ? "fail" : "none";
    var any = false;
    for (var k = 0; k < passed.length; k++) {
      if (passed[k] === false) return "fail";
      if (passed[k] === true) any = true;
    }
    return any ? "pass" : "none";
  }

  function matches(i, f, ev, q) {
    var r = rows[i], idx;
    if (ev !== "") {
      idx = evals[r[0]].evaluators.indexOf(ev);
      if (idx < 0) return false;
    }
    if (f !== "all" && verdict(r, idx) !== f) return false;
    return q === "" || haystack(i).indexOf(q) >= 0;
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    var div = document.createElement("div");
    div.className = "clip";
    div.textContent = text;
    td.appendChild(div);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function variables(v) {
    if (v === null || typeof v !== "object") return String(v);
    return Object.keys(v).map(function (k) {
      var x = v[k];
      return k + ": " + (typeof x === "string" ? x : JSON.stringify(x));
    }).join("\n");
  }

  function row(i) {
    var r = rows[i], names = evals[r[0]].evaluators;
    var tr = document.createElement("tr");
    tr.className = "sample " + verdict(r);
    cell(tr, r[1]);
    cell(tr, evals[r[0]].label);
    cell(tr, r[2]);
    cell(tr, r[3] === null ? "" : r[3]);
    cell(tr, variables(r[4]));
    var td = document.createElement("td");
    names.forEach(function (name, k) {
      var line = document.createElement("div");
      var p = r[6][k];
      line.className = p === true ? "pass" : p === false ? "fail" : "";
      var text = name + ": " + (r[5][k] === null ? "not scored" : r[5][k] + (p ? " ✓" : " ✗"));
      if (r[7][k]) text += " (" + r[7][k] + ")";
      line.textContent = text;
      td.appendChild(line);
    });
    tr.appendChild(td);
    cell(tr, r[8] === null ? "" : r[8] + ": " + (r[9] || ""));
    cell(tr, (r[10] === null ? "–" : (r[10] < 1 ? (r[10] * 1000).toFixed(1) + " ms" : r[10].toFixed(2) + " s")) + (r[11] > 1 ? "\n" + r[11] + " attempts" : ""));
    return tr;
  }

  function renderMore() {
    var end = Math.min(matching.length, rendered + PAGE);
    var frag = document.createDocumentFragment();
    for (; rendered < end; rendered++) frag.appendChild(row(matching[rendered]));
    tbody.appendChild(frag);
    more.hidden = rendered >= matching.length;
    more.textContent = "Show more (" + (matching.length - rendered) + " left)";
  }

  function apply() {
    var f = filter.value, ev = evaluator.value, q = search.value.trim().toLowerCase();
    matching = [];
    for (var i = 0; i < rows.length; i++) if (matches(i, f, ev, q)) matching.push(i);
    shown.textContent = String(matching.length);
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    rendered = 0;
    renderMore();
    document.body.dataset.ready = "1";
  }

  function setSelect(el, value) {
    for (var k = 0; k < el.options.length; k++) {
      if (el.options[k].value === value) { el.value = value; return; }
    }
  }

  function fromHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    filter.value = "all";
    evaluator.value = "";
    setSelect(filter, params.get("filter") || "all");
    setSelect(evaluator, params.get("evaluator") || "");
    search.value = params.get("q") || "";
  }

  function toHash() {
    var params = new URLSearchParams();
    if (filter.value !== "all") params.set("filter", filter.value);
    if (evaluator.value !== "") params.set("evaluator", evaluator.value);
    if (search.value !== "") params.set("q", search.value);
    var hash = params.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }

  var timer = null;
  function changed() { toHash(); apply(); }
  filter.addEventListener("change", changed);
  evaluator.addEventListener("change", changed);
  search.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(changed, 150);
  });
  more.addEventListener("click", renderMore);
  window.addEventListener("hashchange", function () { fromHash(); apply(); });
  fromHash();
  apply();
})();
