// cxr-edge screening page: upload (picker or drag and drop), call the JSON API, show the result.
// No inline script (the page's CSP forbids it) and no innerHTML: every value is set as text.
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  var fileInput = document.getElementById("file");
  var dropZone = document.getElementById("drop-zone");
  var fileName = document.getElementById("file-name");
  var submit = document.getElementById("submit");
  var statusText = document.getElementById("status");
  var errorBox = document.getElementById("error");
  var resultBox = document.getElementById("result");
  var opacity = document.getElementById("opacity");
  var opacityValue = document.getElementById("opacity-value");
  var heat = document.getElementById("image-heatmap");

  function byId(id) { return document.getElementById(id); }

  // The page's strings in its language, from the server (no inline script: a data attribute).
  var strings = {};
  try { strings = JSON.parse(document.body.dataset.strings || "{}"); } catch (ignored) { strings = {}; }
  function t(key, values) {
    var text = strings[key] || key;
    Object.keys(values || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(values[name]));
    });
    return text;
  }

  function chosenFile() {
    return fileInput.files && fileInput.files.length ? fileInput.files[0] : null;
  }

  function fileChanged() {
    var file = chosenFile();
    fileName.textContent = file ? file.name : "";
    submit.disabled = !file;
  }

  fileInput.addEventListener("change", fileChanged);

  ["dragenter", "dragover"].forEach(function (name) {
    dropZone.addEventListener(name, function (event) {
      event.preventDefault();
      dropZone.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropZone.addEventListener(name, function (event) {
      event.preventDefault();
      dropZone.classList.remove("dragging");
    });
  });
  dropZone.addEventListener("drop", function (event) {
    var files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) {
      fileInput.files = files;
      fileChanged();
    }
  });
  dropZone.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      fileInput.click();
    }
  });

  function setOpacity() {
    heat.style.opacity = String(opacity.value / 100);
    opacityValue.textContent = opacity.value + "%";
  }
  opacity.addEventListener("input", setOpacity);

  function dataUrl(image) {
    return "data:" + image.media_type + ";base64," + image.data;
  }

  function percent(value) {
    return (value * 100).toFixed(1) + "%";
  }

  function showError(status, body) {
    var error = (body && body.error) || {};
    var refused = error.code === "not_chest_xray";
    byId("error-title").textContent = refused ? t("error.refused") : t("error.title");
    byId("error-message").textContent = (error.message || ("HTTP " + status)) +
      (error.code ? " (" + error.code + ")" : "");
    errorBox.dataset.code = error.code || "";
    errorBox.hidden = false;
    resultBox.hidden = true;
  }

  function showHeatmap(visible) {
    byId("overlay-figure").hidden = !visible;
    byId("show-heatmap").textContent = visible ? t("result.hide_heatmap") : t("result.show_heatmap");
    byId("show-heatmap").setAttribute("aria-expanded", visible ? "true" : "false");
    byId("heatmap-note").hidden = !visible;
  }

  function showResult(body) {
    var positive = body.positive;
    var tone = positive ? "positive" : "negative";
    var plain = byId("result-plain");
    plain.textContent = body.plain;
    plain.className = "plain " + tone;
    byId("result-population").textContent = body.population;
    var check = body.population_check;
    var outside = !!(check && check.outside);
    byId("population-warning").textContent = outside ? body.population_notice : "";
    byId("population-warning").hidden = !outside;
    byId("population-check").textContent = check ? body.population_notice : "";
    byId("population-check-line").hidden = !check || outside;
    byId("result-reference").textContent = body.reference || "";
    byId("result-reference-line").hidden = !body.reference;
    var label = byId("result-label");
    label.textContent = body.label;
    label.className = "label " + tone;
    var decision = byId("result-decision");
    decision.textContent = body.decision;
    decision.className = "decision " + tone;
    byId("result-threshold").textContent = t("result.score_line", {
      score: body.score.toFixed(3),
      relation: positive ? t("result.at_or_above") : t("result.below"),
      threshold: body.threshold.toFixed(3)
    }) + " " + t("result.rule", { negative: body.model.negative_label || "NORMAL" });
    byId("result-details").open = false;

    var bars = byId("probabilities");
    while (bars.firstChild) { bars.removeChild(bars.firstChild); }
    Object.keys(body.probabilities).forEach(function (name) {
      var value = body.probabilities[name];
      var row = document.createElement("div");
      row.className = "prob";
      var text = document.createElement("span");
      text.textContent = name;
      var track = document.createElement("span");
      track.className = "track";
      track.setAttribute("role", "img");
      track.setAttribute("aria-label", name + " " + percent(value));
      var fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = Math.max(0, Math.min(100, value * 100)).toFixed(1) + "%";
      track.appendChild(fill);
      var number = document.createElement("span");
      number.className = "value";
      number.textContent = percent(value);
      row.appendChild(text);
      row.appendChild(track);
      row.appendChild(number);
      bars.appendChild(row);
    });

    if (body.preview) {
      byId("image-original").src = dataUrl(body.preview);
      byId("image-base").src = dataUrl(body.preview);
    }
    var hasHeatmap = Boolean(body.heatmap);
    // A bright map on a normal film reads like a finding: it is shown only on request, and labelled.
    byId("overlay-caption").textContent = positive ? t("result.overlay") : t("result.overlay_normal");
    byId("heatmap-note").textContent = positive ? t("heatmap.note") : t("heatmap.note_normal");
    byId("show-heatmap").hidden = !hasHeatmap || positive;
    showHeatmap(hasHeatmap && positive);
    if (hasHeatmap) {
      heat.src = dataUrl(body.heatmap);
      setOpacity();
    } else {
      heat.removeAttribute("src");
    }

    byId("result-latency").textContent = body.latency_ms.toFixed(0) + " ms";
    byId("result-model").textContent = body.model.title + " (" + body.model.file + ")";
    byId("result-sha").textContent = body.model_sha256;
    byId("result-id").textContent = body.id === null ? t("result.not_saved") : String(body.id);
    var warnings = byId("warnings");
    var others = (body.warnings || []).filter(function (w) { return w !== body.population_notice; });
    warnings.textContent = others.join(" ");
    warnings.hidden = !others.length;
    [["download", body.report_url, ".png"], ["download-pdf", body.report_pdf_url, ".pdf"]].forEach(function (item) {
      var link = byId(item[0]);
      if (item[1]) {
        link.href = item[1];
        link.setAttribute("download", "cxr-screening-" + body.id + item[2]);
        link.hidden = false;
      } else {
        link.hidden = true;
      }
    });
    errorBox.hidden = true;
    resultBox.hidden = false;
    resultBox.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function send(url, file) {
    var data = new FormData();
    if (file) { data.append("file", file); }
    data.append("model", byId("model").value);
    data.append("heatmap", "true");
    data.append("preview", "true");
    var reference = byId("reference");
    if (reference && reference.value.trim()) { data.append("reference", reference.value.trim()); }
    submit.disabled = true;
    statusText.textContent = t("status.screening");
    fetch(url, { method: "POST", body: data, credentials: "same-origin" })
      .then(function (response) {
        return response.json().then(
          function (body) { return { status: response.status, ok: response.ok, body: body }; },
          function () { return { status: response.status, ok: false, body: null }; });
      })
      .then(function (answer) {
        if (answer.ok) { showResult(answer.body); } else { showError(answer.status, answer.body); }
      })
      .catch(function () {
        showError(0, { error: { code: "network_error", message: t("error.network") } });
      })
      .then(function () {
        statusText.textContent = "";
        submit.disabled = !chosenFile();
      });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var file = chosenFile();
    if (file) { send(form.action, file); }
  });

  var camera = byId("camera");
  if (camera) {
    camera.addEventListener("click", function () { send(camera.dataset.url, null); });
  }

  byId("show-heatmap").addEventListener("click", function () {
    showHeatmap(byId("overlay-figure").hidden);
  });

  byId("again").addEventListener("click", function () {
    form.reset();
    fileChanged();
    resultBox.hidden = true;
    errorBox.hidden = true;
    window.scrollTo(0, 0);
  });

  fileChanged();
})();
