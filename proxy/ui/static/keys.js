/* Keys tab: list; create and edit with every /key/generate field; block and unblock;
 * regenerate (the new secret is shown once, like a new key); delete. */
"use strict";

(() => {
  const table = document.getElementById("keys");
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const title = document.getElementById("key-dialog-title");
  const submitButton = form.querySelector('button[type="submit"]');
  const durationHint = document.getElementById("h-duration");
  const newKey = document.getElementById("new-key");
  const newKeyTitle = document.getElementById("new-key-title");
  const newKeyValue = document.getElementById("new-key-value");
  const pager = document.querySelector(".pager");
  let editing = null; // the key being edited, or null when creating

  function nameOf(key) {
    return key.key_alias ? `${key.key_alias} (${key.key_name})` : key.key_name;
  }

  function row(key) {
    const blocked = key.blocked;
    return UI.el("tr", { dataset: { token: key.token } }, [
      UI.el("td", {}, key.key_alias || UI.el("span", { className: "muted" }, "(no alias)")),
      UI.el("td", { className: "mono" }, key.key_name),
      UI.el("td", { className: "mono" }, key.user_id || ""),
      UI.el("td", { className: "mono" }, key.team_id || ""),
      UI.el("td", { className: "num" }, UI.money(key.spend)),
      UI.el("td", { className: "num" }, UI.money(key.max_budget, "unlimited")),
      UI.limits(key),
      UI.el("td", { className: "nowrap" }, UI.day(key.expires)),
      UI.el("td", {}, UI.badge(blocked)),
      UI.el("td", { className: "row-actions" }, [
        UI.button("Edit", () => edit(key)),
        UI.button(blocked ? "Unblock" : "Block", () => setBlocked(key, !blocked), !blocked),
        UI.button("Regenerate", () => regenerate(key)),
        UI.button("Delete", () => remove(key), true),
      ]),
    ]);
  }

  const list = UI.listing({
    table,
    search: document.getElementById("key-search"),
    pager,
    noun: "keys",
    render: row,
    fetchPage: async (state) => {
      const answer = await UI.api("GET", `/key/list?${UI.listQuery(state, "size", { return_full_object: true })}`);
      return { rows: answer.keys, total: answer.total_count };
    },
  });
  const load = list.load;

  function showSecret(heading, plain) {
    // The only time the secret exists outside the client: the API stores its hash.
    newKeyTitle.textContent = heading;
    newKeyValue.value = plain;
    newKey.hidden = false;
    newKeyValue.select();
  }

  function openForm(key) {
    editing = key;
    forgetNewKey();
    UI.openDialog(dialog, form);
    title.textContent = key ? `Edit key ${nameOf(key)}` : "Create Key";
    submitButton.textContent = key ? "Save" : "Create key";
    durationHint.textContent = key
      ? `Empty: the expiry stays ${key.expires ? UI.day(key.expires) : "never"}; a duration counts from now.`
      : "Empty: never expires.";
    if (key) UI.fillForm(form, { ...key, duration: "" });
    form.elements.namedItem("key_alias").focus();
  }

  function edit(key) {
    openForm(key);
  }

  async function save(event) {
    event.preventDefault();
    if (!editing) {
      const created = await UI.submit(form, "/key/generate", UI.formValues(form));
      if (!created) return;
      dialog.close();
      showSecret("Your new key", created.key);
      UI.notice(`Key ${created.key_name} created.`);
      return load();
    }
    // An edit sends every field: an emptied one is cleared (null), except the
    // expiry, which only changes when a new duration is given.
    const body = UI.formValues(form, { clearEmpty: true });
    if (body.duration === null) delete body.duration;
    const updated = await UI.submit(form, "/key/update", { ...body, key: editing.token });
    if (!updated) return;
    dialog.close();
    UI.notice(`Key ${nameOf(updated)} saved.`);
    return load();
  }

  async function setBlocked(key, blocked) {
    const verb = blocked ? "block" : "unblock";
    try {
      await UI.api("POST", `/key/${verb}`, { key: key.token });
      UI.notice(blocked ? `Key ${nameOf(key)} blocked: its calls are refused.` : `Key ${nameOf(key)} unblocked.`);
    } catch (err) {
      UI.notice(`Could not ${verb} key ${nameOf(key)}: ${err.message}`, "error");
    }
    await load();
  }

  async function regenerate(key) {
    const question = `Give key ${nameOf(key)} a new secret? The current one stops working at once; settings and spend stay.`;
    if (!window.confirm(question)) return;
    try {
      const answer = await UI.api("POST", "/key/regenerate", { key: key.token });
      showSecret(`New secret for ${key.key_alias || answer.key_name}`, answer.key);
      UI.notice(`Key ${nameOf(key)} regenerated: it is now ${answer.key_name}.`);
    } catch (err) {
      UI.notice(`Key ${nameOf(key)} was not regenerated: ${err.message}`, "error");
    }
    await load();
  }

  async function remove(key) {
    if (!window.confirm(`Delete key ${nameOf(key)}? Calls with it will be refused.`)) return;
    try {
      await UI.api("POST", "/key/delete", { keys: [key.token] });
      UI.notice(`Key ${nameOf(key)} deleted.`);
    } catch (err) {
      UI.notice(`Key ${nameOf(key)} was not deleted: ${err.message}`, "error");
    }
    await load();
  }

  function forgetNewKey() {
    newKeyValue.value = "";
    newKey.hidden = true;
  }

  document.getElementById("copy-key").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(newKeyValue.value);
      UI.notice("Key copied to the clipboard.");
    } catch (err) {
      newKeyValue.select();
      UI.notice("Copy it with Ctrl+C: the browser did not allow clipboard access.", "error");
    }
  });
  document.getElementById("dismiss-key").addEventListener("click", forgetNewKey);
  document.getElementById("create-key").addEventListener("click", () => openForm(null));
  form.addEventListener("submit", save);
  load();
})();
