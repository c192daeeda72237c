// The demo site: menus built from window.MANIFEST (manifest.js, the same as manifest.json);
// the view lives in the URL hash (#model=…&basis=…&layer=…&k=…), so views can be linked and the
// back button works; ← / → step through the components.
(function () {
  "use strict";
  var M = window.MANIFEST;
  var $ = function (id) { return document.getElementById(id); };

  function parseHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
      var i = pair.indexOf("=");
      if (i > 0) { out[decodeURIComponent(pair.slice(0, i))] = decodeURIComponent(pair.slice(i + 1)); }
    });
    return out;
  }

  function byName(list, name) {
    for (var i = 0; i < list.length; i++) { if (list[i].name === name) { return list[i]; } }
    return null;
  }

  // A complete state from a (partial, possibly wrong) one; problems become messages.
  function normalise(s) {
    var notes = [];
    var model = byName(M.models, s.model);
    if (!model) {
      if (s.model) { notes.push("model " + s.model + " is not in this site"); }
      model = M.models[0];
    }
    var layer = byName(model.layers, s.layer);
    if (!layer) {
      if (s.layer) { notes.push("layer " + s.layer + " is not a layer of " + model.name); }
      layer = model.layers[0];
    }
    var basis = s.basis in layer.bases ? s.basis : (s.basis ? (notes.push("basis " + s.basis + " is unknown"), "pca") : "pca");
    var k = s.k === undefined || s.k === "" ? 1 : Number(s.k);
    return { view: s.view === "figures" ? "figures" : "grids", model: model.name, layer: layer.name,
             basis: basis, k: k, notes: notes };
  }

  function hashOf(s) {
    var parts = [];
    if (s.view === "figures") { parts.push("view=figures"); }
    parts.push("model=" + encodeURIComponent(s.model), "basis=" + encodeURIComponent(s.basis),
               "layer=" + encodeURIComponent(s.layer), "k=" + encodeURIComponent(s.k));
    return "#" + parts.join("&");
  }

  function go(changes) {
    var s = normalise(parseHash());
    for (var key in changes) { s[key] = changes[key]; }
    location.hash = hashOf(s);  // a new history entry; hashchange renders it
  }

  function fill(select, values, labels, value) {
    select.innerHTML = "";
    values.forEach(function (v, i) {
      var o = document.createElement("option");
      o.value = v;
      o.textContent = labels ? labels[i] : v;
      select.appendChild(o);
    });
    select.value = value;
  }

  function say(text) {
    $("message").textContent = text;
    $("message").hidden = !text;
  }

  function render() {
    var s = normalise(parseHash());
    var model = byName(M.models, s.model), layer = byName(model.layers, s.layer);
    var basis = layer.bases[s.basis], comps = basis.components, n = comps.length;
    fill($("model"), M.models.map(function (m) { return m.name; }), null, model.name);
    fill($("layer"), model.layers.map(function (l) { return l.name; }), null, layer.name);
    var names = Object.keys(layer.bases);
    fill($("basis"), names, names.map(function (b) { return layer.bases[b].name; }), s.basis);
    $("k").max = n;
    $("k").value = String(s.k);
    $("available").textContent = "/ " + n + " available in descending variance order (d = " + basis.d +
      (basis.vectors && basis.vectors !== basis.d ? ", " + basis.vectors + " vectors" : "") + ")";
    $("show-grids").className = s.view === "grids" ? "active" : "";
    $("show-figures").className = s.view === "figures" ? "active" : "";
    $("grids").hidden = s.view !== "grids";
    $("figures").hidden = s.view !== "figures";
    $("profile").textContent = "Profile: " + M.profile + ".";
    if (s.view === "figures") {
      showFigures(model);
      say(s.notes.join("; "));
      return;
    }
    if (!(Number.isInteger(s.k) && s.k >= 1 && s.k <= n)) {
      say(s.notes.concat(["component " + s.k + " is not available: choose 1 to " + n]).join("; "));
      $("grid").hidden = true;
      return;
    }
    say(s.notes.join("; "));
    var c = comps[s.k - 1];
    $("grid").hidden = false;
    var img = $("grid-image");
    img.onload = function () {
      var scale = Math.max(1, Math.floor(720 / img.naturalWidth));
      img.style.width = img.naturalWidth * scale + "px";
    };
    img.src = c.file;
    img.alt = c.label;
    $("label").textContent = c.label;
    $("formula").hidden = !c.formula;
    $("formula").textContent = c.formula ? "compositional explanation: " + c.formula : "";
  }

  function showFigures(model) {
    var box = $("figures");
    box.innerHTML = "";
    if (!model.figures.length) { box.textContent = "No figures for " + model.name + "."; }
    model.figures.forEach(function (f) {
      var fig = document.createElement("figure"), img = document.createElement("img");
      var cap = document.createElement("figcaption");
      img.src = f.file;
      img.alt = f.caption;
      cap.textContent = f.caption;
      fig.appendChild(cap);
      fig.appendChild(img);
      box.appendChild(fig);
    });
  }

  function step(delta) {
    var s = normalise(parseHash());
    var n = byName(byName(M.models, s.model).layers, s.layer).bases[s.basis].components.length;
    var k = Number.isInteger(s.k) ? s.k + delta : 1;
    if (k >= 1 && k <= n) { go({ k: k }); }
  }

  $("model").addEventListener("change", function (e) { go({ model: e.target.value, layer: "", k: 1 }); });
  $("layer").addEventListener("change", function (e) { go({ layer: e.target.value, k: 1 }); });
  $("basis").addEventListener("change", function (e) { go({ basis: e.target.value, k: 1 }); });
  $("k").addEventListener("change", function (e) { go({ k: e.target.value === "" ? "" : Number(e.target.value) }); });
  $("prev").addEventListener("click", function () { step(-1); });
  $("next").addEventListener("click", function () { step(1); });
  $("show-grids").addEventListener("click", function (e) { e.preventDefault(); go({ view: "grids" }); });
  $("show-figures").addEventListener("click", function (e) { e.preventDefault(); go({ view: "figures" }); });
  document.addEventListener("keydown", function (e) {
    if (e.target.tagName === "SELECT" || e.altKey || e.ctrlKey || e.metaKey) { return; }
    if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
    if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
  });
  window.addEventListener("hashchange", render);
  if (!location.hash) { history.replaceState(null, "", hashOf(normalise({}))); }
  render();
})();
