// The hits feed stays live: every few seconds ask for hits newer than the newest shown, and put them on top.
"use strict";
(function () {
  const list = document.getElementById("hits");
  let last = Number(list.dataset.lastId || 0);
  const imager = list.dataset.imager ? "&imager=" + encodeURIComponent(list.dataset.imager) : "";  // the page's filter
  const pct = (c) => (c === null || c === undefined ? "" : Math.round(c * 100) + "%");
  const link = (href, text) => { const a = xw.text("a", "", text); a.href = href; return a; };

  function item(h) {
    const li = xw.text("li", "hit");
    li.dataset.id = h.id;
    li.dataset.kind = h.kind;
    if (h.image_id) {
      const img = xw.text("img", "thumb");
      img.src = "/images/" + h.image_id + "/thumb.jpg";
      img.alt = "";
      li.append(img, " ");
    }
    li.append(xw.text("span", "when", h.when), " ", link("/plates/" + encodeURIComponent(h.plate), h.plate), " ");
    if (h.imager) li.append(xw.text("span", "muted imager", h.imager), " ");
    if (h.kind === "plate_hits") {
      li.append(xw.text("span", "class", h.wells + (h.wells === 1 ? " well" : " wells") + " with crystals"));
    } else {
      li.append(h.well_id ? link("/wells/" + h.well_id, h.well) : (h.well || ""), " ",
                xw.text("span", "class", h.class), " ", xw.text("span", "confidence", pct(h.confidence)));
    }
    li.classList.add("new");
    return li;
  }

  async function poll() {
    try {
      const data = await xw.get("/api/hits?after=" + last + imager);
      for (const h of data.hits.slice().reverse()) list.prepend(item(h));  // newest first on top
      if (data.hits.length) document.getElementById("hits-empty").hidden = true;
      last = Math.max(last, data.last_id);
      document.getElementById("hits-live").classList.remove("stale");
    } catch (e) {
      document.getElementById("hits-live").classList.add("stale");
    }
  }
  setInterval(poll, 3000);
})();
