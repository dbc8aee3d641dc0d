// The review queue: one key per class labels the image shown and moves on; `u` undoes the last label.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("review-queue").textContent);
  const classes = data.classes;
  const queue = data.items.slice();
  const undo = [];  // {image_id, previous, item}
  const img = document.getElementById("review-image");
  const meta = document.getElementById("review-meta");
  const flash = document.getElementById("review-flash");
  let busy = false;

  function show() {
    const item = queue[0];
    meta.textContent = "";
    if (!item) {
      img.hidden = true;
      meta.dataset.imageId = "";
      meta.textContent = "Nothing left to review for now.";
      return;
    }
    img.hidden = false;
    img.src = "/images/" + item.image_id + "/thumb.jpg";
    meta.dataset.imageId = item.image_id;
    const guess = xw.text("span", "guess", "model says ");
    guess.append(xw.text("strong", "class", item.label), " " + Math.round(item.confidence * 100) + "%");
    meta.append(guess);
    if (item.uncertain) meta.append(" ", xw.text("span", "badge warn", "uncertain"));
    meta.append(" ", xw.text("span", "why", item.reason));
  }

  async function refill() {
    if (queue.length > 5) return;
    try {
      // Labelled images never come back (the queue holds unlabelled ones only): exclude the ones still
      // queued here, and the last few labelled in case their labels are being undone.
      const held = queue.map((i) => i.image_id).concat(undo.slice(-50).map((u) => u.image_id));
      const more = await xw.get("/api/review/next?n=" + data.batch + "&exclude=" + held.join(","));
      const queued = new Set(held);
      for (const item of more.items) {
        if (!queued.has(item.image_id)) { queued.add(item.image_id); queue.push(item); }
      }
      if (!meta.dataset.imageId) show();
    } catch (e) { /* the next label tries again */ }
  }

  function say(text, bad) {
    flash.textContent = text;
    flash.classList.toggle("bad", Boolean(bad));
  }

  async function label(cls) {
    const item = queue[0];
    if (!item || busy) return;
    busy = true;
    try {
      const answer = await xw.post("/api/labels", {image_id: item.image_id, label: cls});
      undo.push({image_id: item.image_id, previous: answer.previous, item: item});
      queue.shift();
      document.getElementById("label-count").textContent = answer.label_count;
      say("image " + item.image_id + ": " + cls + (answer.previous ? " (was " + answer.previous + ")" : ""));
      show();
      refill();
    } catch (e) {
      say(e.message, true);
    } finally {
      busy = false;
    }
  }

  async function undoLast() {
    const last = undo.pop();
    if (!last || busy) return;
    busy = true;
    try {
      const answer = await xw.post("/api/labels/undo", {image_id: last.image_id, previous: last.previous});
      queue.unshift(last.item);
      document.getElementById("label-count").textContent = answer.label_count;
      say("undone: image " + last.image_id);
      show();
    } catch (e) {
      undo.push(last);
      say(e.message, true);
    } finally {
      busy = false;
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
    const n = Number(event.key);
    if (Number.isInteger(n) && n >= 1 && n <= classes.length) {
      event.preventDefault();
      label(classes[n - 1]);
    } else if (event.key === "u") {
      event.preventDefault();
      undoLast();
    }
  });

  async function poll() {
    try {
      const state = await xw.get("/api/review/state");
      document.getElementById("label-count").textContent = state.label_count;
      document.getElementById("serving-version").textContent = state.serving_version || "none";
      const refit = state.refit;
      document.getElementById("refit-status").textContent =
        refit ? (refit.pending ? "pending" : (refit.reason || "idle")) : "off";
    } catch (e) { /* the service may be restarting; try again next second */ }
  }
  setInterval(poll, 1000);
  refill();
})();
