/* Teams tab: list with spend against the team budget; create and edit (members
 * included: the edit adds and removes them through /team/member_*); block; delete. */
"use strict";

(() => {
  const table = document.getElementById("teams");
  const dialog = document.getElementById("team-dialog");
  const form = document.getElementById("team-form");
  const title = document.getElementById("team-dialog-title");
  const idInput = form.elements.namedItem("team_id");
  let editing = null;

  function nameOf(team) {
    return team.team_alias ? `${team.team_alias} (${team.team_id})` : team.team_id;
  }

  function memberIds(team) {
    return team.members_with_roles.map((m) => m.user_id);
  }

  function row(team) {
    const blocked = team.blocked;
    const members = memberIds(team);
    return UI.el("tr", { dataset: { teamId: team.team_id } }, [
      UI.el("td", {}, [
        UI.el("div", {}, team.team_alias || team.team_id),
        team.team_alias ? UI.el("div", { className: "mono muted" }, team.team_id) : null,
      ]),
      UI.el("td", { className: "num spend" }, UI.spendOf(team.spend, team.max_budget)),
      UI.limits(team),
      UI.el("td", {}, team.budget_duration || "never"),
      UI.el("td", { className: "members" }, members.length ? members.join(", ") : "—"),
      UI.el("td", {}, UI.badge(blocked)),
      UI.el("td", { className: "row-actions" }, [
        UI.button("Edit", () => openForm(team)),
        UI.button(blocked ? "Unblock" : "Block", () => setBlocked(team, !blocked), !blocked),
        UI.button("Delete", () => remove(team), true),
      ]),
    ]);
  }

  const list = UI.listing({
    table,
    search: document.getElementById("team-search"),
    pager: document.querySelector(".pager"),
    noun: "teams",
    render: row,
    fetchPage: async (state) => {
      const answer = await UI.exchange("GET", `/team/list?${UI.listQuery(state)}`);
      return { rows: answer.data, total: Number(answer.headers.get("x-total-count")) };
    },
  });
  const load = list.load;

  function openForm(team) {
    editing = team || null;
    UI.openDialog(dialog, form);
    title.textContent = editing ? `Edit team ${nameOf(editing)}` : "Create Team";
    idInput.readOnly = Boolean(editing);
    if (editing) UI.fillForm(form, { ...editing, members: memberIds(editing) });
    (editing ? form.elements.namedItem("team_alias") : idInput).focus();
  }

  /* Members named in the form that the team lacks, and members it has that the form dropped. */
  function memberChanges(body) {
    const wanted = body.members || [];
    const had = editing ? memberIds(editing) : [];
    return {
      added: wanted.filter((id) => !had.includes(id)),
      removed: had.filter((id) => !wanted.includes(id)),
    };
  }

  async function save(event) {
    event.preventDefault();
    const body = UI.formValues(form, { clearEmpty: Boolean(editing) });
    const { added, removed } = memberChanges(body);
    delete body.members;
    let saved;
    if (!editing) {
      body.members_with_roles = added.map((id) => ({ user_id: id, role: "user" }));
      saved = await UI.submit(form, "/team/new", body);
    } else {
      body.team_id = editing.team_id;
      saved = await UI.submit(form, "/team/update", body);
      if (saved && added.length) {
        const member = added.map((id) => ({ user_id: id, role: "user" }));
        saved = await UI.submit(form, "/team/member_add", { team_id: editing.team_id, member });
      }
      for (const id of saved ? removed : []) {
        saved = await UI.submit(form, "/team/member_delete", { team_id: editing.team_id, user_id: id });
        if (!saved) break;
      }
    }
    if (!saved) return;
    dialog.close();
    UI.notice(`Team ${editing ? nameOf(editing) : saved.team_id} ${editing ? "saved" : "created"}.`);
    await load();
  }

  async function setBlocked(team, blocked) {
    const verb = blocked ? "block" : "unblock";
    try {
      await UI.api("POST", `/team/${verb}`, { team_id: team.team_id });
      UI.notice(blocked ? `Team ${nameOf(team)} blocked: its keys' calls are refused.` : `Team ${nameOf(team)} unblocked.`);
    } catch (err) {
      UI.notice(`Could not ${verb} team ${nameOf(team)}: ${err.message}`, "error");
    }
    await load();
  }

  async function remove(team) {
    if (!window.confirm(`Delete team ${nameOf(team)} and every key made for it?`)) return;
    try {
      const answer = await UI.api("POST", "/team/delete", { team_ids: [team.team_id] });
      UI.notice(`Team ${nameOf(team)} deleted with ${answer.deleted_keys.length} key(s).`);
    } catch (err) {
      UI.notice(`Team ${nameOf(team)} was not deleted: ${err.message}`, "error");
    }
    await load();
  }

  document.getElementById("create-team").addEventListener("click", () => openForm(null));
  form.addEventListener("submit", save);
  load();
})();
