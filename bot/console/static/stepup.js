// Security keys (WebAuthn) for step-up approvals: register a key, and approve with one.
// The broker makes every challenge and checks every answer; this only carries them
// between the page and the browser's authenticator. Listeners are delegated from the
// document, so forms the live update swaps in keep working.
(function () {
  "use strict";

  function b64urlToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function bufToB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(o) {
    o.challenge = b64urlToBuf(o.challenge);
    o.user.id = b64urlToBuf(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    return o;
  }

  function requestOptions(o) {
    o.challenge = b64urlToBuf(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    return o;
  }

  function credentialJSON(cred) {
    var r = cred.response, response = { clientDataJSON: bufToB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = bufToB64url(r.attestationObject);
      if (r.getTransports) response.transports = r.getTransports();
    } else {
      response.authenticatorData = bufToB64url(r.authenticatorData);
      response.signature = bufToB64url(r.signature);
      if (r.userHandle) response.userHandle = bufToB64url(r.userHandle);
    }
    return JSON.stringify({ id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type, response: response,
                            clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {} });
  }

  function post(url, fields) {
    var body = new URLSearchParams();
    Object.keys(fields).forEach(function (k) { body.append(k, fields[k]); });
    return fetch(url, { method: "POST", credentials: "same-origin", cache: "no-store", body: body }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
        return j;
      });
    });
  }

  function say(el, text) {
    var out = document.getElementById("stepup-status");
    if (out) { out.textContent = text; out.hidden = false; }
    if (el) el.disabled = false;
  }

  // Exposed for the page's own use and for tests that drive a second person's authenticator.
  window.jitgateWebAuthn = {
    get: function (options) {
      return navigator.credentials.get({ publicKey: requestOptions(options) }).then(credentialJSON);
    },
    create: function (options) {
      return navigator.credentials.create({ publicKey: creationOptions(options) }).then(credentialJSON);
    },
    post: post
  };

  // Approve with a security key: ask the broker for a challenge, the key for an answer, then send the form.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.hasAttribute || !form.hasAttribute("data-step-up")) return;
    var field = form.querySelector("input[name=assertion]");
    if (field.value) return; // the answer is in: let the form go
    ev.preventDefault();
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    var csrf = form.querySelector("input[name=csrf]").value;
    post(form.getAttribute("data-step-up"), { csrf: csrf }).then(function (options) {
      return window.jitgateWebAuthn.get(options);
    }).then(function (json) {
      field.value = json;
      form.submit();
    }).catch(function (e) {
      say(button, "Not approved: " + e.message);
    });
  }, true);

  // Register a key on the Security keys page.
  document.addEventListener("click", function (ev) {
    var button = ev.target;
    if (!button || button.id !== "register-key") return;
    ev.preventDefault();
    button.disabled = true;
    var csrf = button.getAttribute("data-csrf");
    var labelEl = document.getElementById("key-label");
    post("/console/keys/options", { csrf: csrf }).then(function (options) {
      return window.jitgateWebAuthn.create(options);
    }).then(function (json) {
      return post("/console/keys/register", { csrf: csrf, credential: json, label: labelEl ? labelEl.value : "" });
    }).then(function () {
      location.reload();
    }).catch(function (e) {
      say(button, "Not registered: " + e.message);
    });
  });
})();
