"use strict";
let loginCsrf = null;

async function loginToken() {
  const res = await fetch("/console/api/login", { credentials: "same-origin" });
  const body = await res.json();
  loginCsrf = body.csrf;
  return body;
}

document.addEventListener("DOMContentLoaded", async () => {
  const info = await loginToken();
  setupLanguage(info.language);
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = document.getElementById("login-error");
    error.textContent = "";
    const res = await fetch("/console/api/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": loginCsrf },
      body: JSON.stringify({
        user: document.getElementById("user").value,
        password: document.getElementById("password").value,
      }),
    });
    if (res.ok) {
      window.location.assign("/console/");
      return;
    }
    let why = t("login_failed");
    try { why = why + ": " + (await res.json()).error; } catch (e) { /* not JSON */ }
    error.textContent = why;
    if (res.status === 403) await loginToken();
  });
});
