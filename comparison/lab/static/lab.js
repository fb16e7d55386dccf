// twinnet lab: draw on the pad, send it to POST /api/predict, show the answer.
// Plain browser JavaScript, no build step. At most one request is in flight; a drawing that
// changes meanwhile is sent when the answer arrives, so the page follows the pen.
"use strict";

const SLIDERS = ["dx", "dy", "rotate", "scale", "thickness"];
const INK = 18;  // pen width in pad pixels (the pad is 280 wide, ten times MNIST's 28)
const $ = (id) => document.getElementById(id);

const pad = $("pad");
const pen = pad.getContext("2d");
const lab = { last: null, answers: 0, inFlight: false, again: false, hasInk: false, ready: false,
              note: "" };
window.lab = lab;  // for the browser tests and the curious

function clearPad() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
  lab.hasInk = false;
  lab.last = null;
  lab.note = "";
  $("download").disabled = true;
  for (const id of ["step-crop", "step-box", "step-field", "step-input"]) {
    const c = $(id);
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
  }
  showTwins(null);
}

// --- drawing: pointer events cover mouse, touch and pen -----------------------------------
let drawing = false;

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = padPoint(event);
  pen.strokeStyle = "#000";
  pen.fillStyle = "#000";
  pen.lineWidth = INK;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.arc(x, y, INK / 2, 0, 2 * Math.PI);  // a dot for a tap
  pen.fill();
  pen.beginPath();
  pen.moveTo(x, y);
  lab.hasInk = true;
  lab.note = "";  // your strokes now, not the test digit alone
  requestAnswer();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = padPoint(event);
  pen.lineTo(x, y);
  pen.stroke();
  pen.beginPath();
  pen.moveTo(x, y);
  requestAnswer();
});

for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (drawing) requestAnswer();
    drawing = false;
  });
}

// --- talking to the server -----------------------------------------------------------------
function requestBody() {
  const transform = {};
  for (const name of SLIDERS) transform[name] = Number($(name).value);
  const target = $("target").value;
  return { png: pad.toDataURL("image/png"), transform, method: $("method").value,
           target: target === "" ? null : Number(target) };
}

function requestAnswer() {
  if (!lab.ready || !lab.hasInk) return;
  if (lab.inFlight) { lab.again = true; return; }
  lab.inFlight = true;
  lab.again = false;
  fetch("/api/predict", { method: "POST", headers: { "Content-Type": "application/json" },
                          body: JSON.stringify(requestBody()) })
    .then((response) => response.json().then((reply) => ({ ok: response.ok, reply })))
    .then(({ ok, reply }) => {
      if (ok) show(reply);
      else $("message").textContent = reply.error;
    })
    .catch((err) => { $("message").textContent = `no answer from the lab server (${err})`; })
    .finally(() => {
      lab.inFlight = false;
      if (lab.again) requestAnswer();
    });
}

function pollStatus() {
  fetch("/api/status").then((r) => r.json()).then((status) => {
    const training = status.state === "training";
    $("training").hidden = !training;
    $("progress").value = status.progress;
    $("training-message").textContent = status.message;
    if (status.state === "ready") {
      $("model").textContent = `Model: ${status.model.source}.`;
      lab.ready = true;
      requestAnswer();
    } else {
      $("model").textContent = training
        ? "No --models given: training a quick convnet once; it is cached for the next start."
        : status.message;
      if (training) setTimeout(pollStatus, 500);
    }
  }).catch(() => setTimeout(pollStatus, 2000));
}

// --- showing the answer ---------------------------------------------------------------------
function show(reply) {
  lab.last = reply;
  lab.answers += 1;
  const note = lab.note ? `${lab.note}; ` : "";
  $("message").textContent = `${note}answered in ${reply.milliseconds} ms`;
  $("download").disabled = false;
  showSteps(reply.steps);
  showTwins(reply);
  document.body.dataset.answers = String(lab.answers);
}

function drawGrey(canvas, rows, left = 0, top = 0, scale = canvas.width / 28) {
  // rows: values in [0, 1], drawn white on black like MNIST
  const ctx = canvas.getContext("2d");
  for (let r = 0; r < rows.length; r++) {
    for (let c = 0; c < rows[r].length; c++) {
      const v = Math.round(255 * Math.min(1, Math.max(0, rows[r][c])));
      ctx.fillStyle = `rgb(${v},${v},${v})`;
      ctx.fillRect(left + c * scale, top + r * scale, Math.ceil(scale), Math.ceil(scale));
    }
  }
}

function showSteps(steps) {
  const crop = $("step-crop").getContext("2d");
  const [height, width] = steps.size;
  const side = $("step-crop").width, fit = side / Math.max(height, width);
  crop.clearRect(0, 0, side, side);
  crop.drawImage(pad, 0, 0, width * fit, height * fit);
  const [top, bottom, left, right] = steps.crop;
  crop.strokeStyle = "#d33";
  crop.lineWidth = 2;
  crop.strokeRect(left * fit, top * fit, (right - left) * fit, (bottom - top) * fit);

  const box = $("step-box");
  const boxCtx = box.getContext("2d");
  boxCtx.fillStyle = "#000";
  boxCtx.fillRect(0, 0, box.width, box.height);
  const cell = box.width / 20;
  const boxLeft = (20 - steps.box[0].length) / 2 * cell;
  const boxTop = (20 - steps.box.length) / 2 * cell;
  drawGrey(box, steps.box, boxLeft, boxTop, cell);

  const field = $("step-field");
  drawGrey(field, steps.mnist);
  const ctx = field.getContext("2d"), px = field.width / 28;
  ctx.strokeStyle = "#d33";
  ctx.lineWidth = 1;
  ctx.strokeRect(steps.top_left[1] * px, steps.top_left[0] * px,
                 steps.box[0].length * px, steps.box.length * px);
  ctx.beginPath();  // the centre of mass sits on pixel (14, 14)
  ctx.moveTo(14.5 * px, 10 * px); ctx.lineTo(14.5 * px, 19 * px);
  ctx.moveTo(10 * px, 14.5 * px); ctx.lineTo(19 * px, 14.5 * px);
  ctx.stroke();
  drawGrey($("step-input"), steps.input);
}

function mapColour(value, largest, signed) {
  const t = largest > 0 ? value / largest : 0;
  if (!signed) {  // black -> orange -> light yellow
    const v = Math.max(0, t);
    const [r, g, b] = [255 * Math.min(1, 1.6 * v), 230 * v * v, 160 * v ** 4].map(Math.round);
    return `rgb(${r},${g},${b})`;
  }
  const a = Math.min(1, Math.abs(t));  // white at 0, red for the class, blue against
  return t >= 0 ? `rgb(255,${Math.round(255 * (1 - a))},${Math.round(255 * (1 - a))})`
                : `rgb(${Math.round(255 * (1 - a))},${Math.round(255 * (1 - a))},255)`;
}

function showTwins(reply) {
  let largest = 0;
  if (reply) {
    for (const side of ["numpy", "keras"]) {
      for (const row of reply.twins[side].map) {
        for (const v of row) largest = Math.max(largest, Math.abs(v));
      }
    }
  }
  for (const side of ["numpy", "keras"]) {
    const twin = reply ? reply.twins[side] : null;
    $(`${side}-digit`).textContent = twin ? twin.digit : "–";
    const bars = document.querySelector(`#${side} .bars`);
    bars.replaceChildren();
    for (let d = 0; d < 10; d++) {
      const p = twin ? twin.probabilities[d] : 0;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.classList.toggle("top", Boolean(twin) && d === twin.digit);
      bar.classList.toggle("target", Boolean(reply) && d === reply.target);
      bar.innerHTML = `<span>${d}</span><div class="track"><div class="fill"></div></div>`
        + '<span class="value"></span>';
      bar.querySelector(".fill").style.width = `${(100 * p).toFixed(2)}%`;
      bar.querySelector(".value").textContent = twin ? p.toFixed(4) : "";
      bar.title = twin ? `P(${d}) = ${p}` : "";
      bar.addEventListener("click", () => { $("target").value = String(d); requestAnswer(); });
      bars.appendChild(bar);
    }
    const map = document.querySelector(`#${side} .map`);
    const ctx = map.getContext("2d");
    ctx.clearRect(0, 0, map.width, map.height);
    if (!twin) continue;
    const signed = reply.method !== "saliency", px = map.width / 28;
    twin.map.forEach((row, r) => row.forEach((v, c) => {
      ctx.fillStyle = mapColour(v, largest, signed);
      ctx.fillRect(c * px, r * px, Math.ceil(px), Math.ceil(px));
    }));
  }
  $("difference").textContent = reply
    ? "largest difference between the twins' probabilities: "
      + reply.max_difference.toExponential(1)
      + ` (maps: ${reply.map_difference.toExponential(1)} of their largest value);`
      + ` class explained: ${reply.target}`
    : "largest difference between the twins' probabilities: –";
}

// --- buttons and sliders ----------------------------------------------------------------------
$("clear").addEventListener("click", () => {
  clearPad();
  $("message").textContent = "Draw with the mouse, a finger or a pen.";
});

$("random").addEventListener("click", () => {
  fetch("/api/random-digit").then((r) => r.json().then((reply) => ({ ok: r.ok, reply })))
    .then(({ ok, reply }) => {
      if (!ok) { $("message").textContent = reply.error; return; }
      const small = document.createElement("canvas");
      small.width = small.height = 28;
      const image = small.getContext("2d").createImageData(28, 28);
      reply.pixels.flat().forEach((v, i) => {  // MNIST is white on black; the pad is paper
        image.data.set([255 - v, 255 - v, 255 - v, 255], 4 * i);
      });
      small.getContext("2d").putImageData(image, 0, 0);
      clearPad();
      pen.imageSmoothingEnabled = true;
      pen.drawImage(small, 0, 0, pad.width, pad.height);
      lab.hasInk = true;
      lab.note = `MNIST test digit #${reply.index}, labelled ${reply.label}`;
      $("message").textContent = lab.note;
      requestAnswer();
    });
});

$("download").addEventListener("click", () => {
  // the 28x28 array the networks got, as MNIST stores digits: white ink on black
  if (!lab.last) return;
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const image = small.getContext("2d").createImageData(28, 28);
  lab.last.steps.input.flat().forEach((v, i) => {
    const g = Math.round(255 * v);
    image.data.set([g, g, g, 255], 4 * i);
  });
  small.getContext("2d").putImageData(image, 0, 0);
  const link = document.createElement("a");
  link.download = `digit-${lab.last.twins.numpy.digit}-28x28.png`;
  link.href = small.toDataURL("image/png");
  link.click();
});

for (const name of SLIDERS) {
  $(name).addEventListener("input", () => {
    document.querySelector(`output[for=${name}]`).textContent = $(name).value;
    requestAnswer();
  });
}

$("reset").addEventListener("click", () => {
  for (const name of SLIDERS) {
    $(name).value = name === "scale" ? "1" : "0";
    document.querySelector(`output[for=${name}]`).textContent = $(name).value;
  }
  requestAnswer();
});

$("method").addEventListener("change", requestAnswer);
$("target").addEventListener("change", requestAnswer);

clearPad();
pollStatus();
