// Shared by every page: the CSRF token every write must carry, and a JSON POST that sends it.
"use strict";
const xw = {
  csrf: document.querySelector('meta[name="csrf-token"]').content,
  async post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": xw.csrf},
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({error: response.statusText}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  },
  async get(url) {
    const response = await fetch(url, {credentials: "same-origin"});
    if (!response.ok) throw new Error(response.statusText);
    return response.json();
  },
  text(tag, cls, content) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (content !== undefined && content !== null) el.textContent = content;
    return el;
  },
};
