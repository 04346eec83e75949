/* Spend tab: proxy total, spend per day as an inline SVG bar chart, top customers and keys. */
"use strict";

(() => {
  const DAYS = 30;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 760;
  const H = 240;
  const PAD = { left: 64, right: 12, top: 12, bottom: 28 };

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /* The smallest 1, 2 or 5 times a power of ten that is >= value. */
  function niceCeiling(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= value) || value;
  }

  function drawChart(box, days, emptyText = `No spend in the last ${DAYS} days.`) {
    const peak = Math.max(...days.map((d) => d.spend));
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, "aria-hidden": "true" });
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const top = peak > 0 ? niceCeiling(peak) : 1;
    for (const fraction of [0, 0.5, 1]) {
      const y = PAD.top + plotH * (1 - fraction);
      chart.append(svg("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
      chart.append(svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, UI.money(top * fraction)));
    }
    const slot = plotW / days.length;
    days.forEach((day, i) => {
      const x = PAD.left + i * slot;
      const height = (day.spend / top) * plotH;
      if (height > 0) {
        const barWidth = Math.min(slot * 0.7, 48);
        const bar = svg("rect", {
          class: "bar",
          x: x + (slot - barWidth) / 2,
          width: barWidth,
          y: PAD.top + plotH - height,
          height: Math.max(height, 1),
          "data-date": day.date,
        });
        bar.append(svg("title", {}, `${day.date}: ${UI.money(day.spend)} (${day.requests} requests)`));
        chart.append(bar);
      }
      // Labels counted back from the last day, so it is always labelled (weekly, or
      // fewer on a long range).
      if ((days.length - 1 - i) % Math.max(7, Math.ceil(days.length / 10)) === 0) {
        chart.append(svg("text", { x: x + slot / 2, y: H - 8, "text-anchor": "middle" }, day.date.slice(5)));
      }
    });
    if (peak === 0) {
      chart.append(svg("text", { x: PAD.left + plotW / 2, y: PAD.top + plotH / 2, "text-anchor": "middle" }, emptyText));
    }
    box.replaceChildren(chart);
  }

  function customerRow(entry) {
    return UI.el("tr", {}, [
      UI.el("td", { className: "mono" }, entry.end_user),
      UI.el("td", { className: "num" }, UI.count(entry.requests)),
      UI.el("td", { className: "num" }, UI.money(entry.spend)),
    ]);
  }

  function keyRow(entry) {
    let name;
    if (entry.is_master_key) name = "master key";
    else if (entry.key_name) name = entry.key_alias ? `${entry.key_alias} (${entry.key_name})` : entry.key_name;
    else name = `deleted key ${entry.token.slice(0, 8)}…`;
    return UI.el("tr", {}, [
      UI.el("td", {}, name),
      UI.el("td", { className: "mono" }, entry.user_id || ""),
      UI.el("td", { className: "num" }, UI.count(entry.requests)),
      UI.el("td", { className: "num" }, UI.money(entry.spend)),
    ]);
  }

  async function load() {
    try {
      const [total, daily, customers, keys] = await Promise.all([
        UI.api("GET", "/global/spend"),
        UI.api("GET", `/global/spend/daily?days=${DAYS}`),
        UI.api("GET", `/global/spend/top_customers?days=${DAYS}&limit=10`),
        UI.api("GET", `/global/spend/top_keys?days=${DAYS}&limit=10`),
      ]);
      document.getElementById("proxy-spend").textContent = UI.money(total.spend);
      document.getElementById("proxy-budget").textContent =
        total.max_budget === null ? "no proxy budget" : `of ${UI.money(total.max_budget)} proxy budget`;
      document.getElementById("period-spend").textContent = UI.money(daily.total_spend);
      document.getElementById("period-requests").textContent = `${UI.count(daily.total_requests)} metered requests`;
      drawChart(document.getElementById("daily-chart"), daily.days);
      UI.fillTable(document.getElementById("top-customers"), customers.map(customerRow));
      UI.fillTable(document.getElementById("top-keys"), keys.map(keyRow));
    } catch (err) {
      UI.notice(`Could not load spend: ${err.message}`, "error");
    }
  }

  /* --- the report: a date range, grouped by team, customer, key, user or model --- */
  const reportForm = document.getElementById("report-form");
  const GROUPS = {
    team: ["teams", "team_name", "Team", "(no team)"],
    customer: ["customers", "customer", "Customer", "(no customer)"],
    api_key: ["api_keys", "api_key", "Key", "(none)"],
    user: ["users", "user", "User", "(no user)"],
    model: ["models", "model", "Model", "(none)"],
  };

  function isoDay(date) {
    return date.toISOString().slice(0, 10);
  }

  /* Every day of the range, with the report's spend (zero where it has none). */
  function rangeDays(start, end, report) {
    const spend = new Map();
    for (const day of report) {
      const groups = Object.values(day).find(Array.isArray) || [];
      spend.set(day.group_by_day.slice(0, 10), {
        spend: groups.reduce((sum, g) => sum + g.total_spend, 0),
        requests: groups.reduce((sum, g) => sum + g.requests, 0),
      });
    }
    const days = [];
    for (let d = new Date(`${start}T00:00:00Z`); isoDay(d) <= end; d.setUTCDate(d.getUTCDate() + 1)) {
      const found = spend.get(isoDay(d)) || { spend: 0, requests: 0 };
      days.push({ date: isoDay(d), ...found });
    }
    return days;
  }

  function reportRow(day, group, idName, none) {
    const id = group[idName];
    const models = group.metadata.map((m) => `${m.model}: ${UI.money(m.spend)}`).join(", ");
    return UI.el("tr", {}, [
      UI.el("td", { className: "nowrap" }, day.group_by_day.slice(0, 10)),
      UI.el("td", { className: "mono" }, id === null ? UI.el("span", { className: "muted" }, none) : id),
      UI.el("td", { className: "models" }, models),
      UI.el("td", { className: "num" }, UI.count(group.requests)),
      UI.el("td", { className: "num" }, UI.count(group.total_tokens)),
      UI.el("td", { className: "num" }, UI.money(group.total_spend)),
    ]);
  }

  async function showReport(event) {
    if (event) event.preventDefault();
    const { start_date: start, end_date: end, group_by: groupBy } = UI.formValues(reportForm);
    const [listName, idName, heading, none] = GROUPS[groupBy];
    const query = new URLSearchParams({ start_date: start || "", end_date: end || "", group_by: groupBy });
    const report = await UI.submit(reportForm, `/global/spend/report?${query}`, undefined, "GET");
    if (!report) return;
    document.getElementById("report-group-head").textContent = heading;
    const rows = report.flatMap((day) => day[listName].map((group) => reportRow(day, group, idName, none)));
    UI.fillTable(document.getElementById("report"), rows);
    drawChart(document.getElementById("report-chart"), rangeDays(start, end, report), "No spend in this range.");
  }

  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86400000);
  reportForm.elements.namedItem("start_date").value = isoDay(monthAgo);
  reportForm.elements.namedItem("end_date").value = isoDay(today);
  reportForm.addEventListener("submit", showReport);

  load();
  showReport();
})();
