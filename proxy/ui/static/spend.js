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

  function drawChart(box, days) {
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
        const bar = svg("rect", {
          class: "bar",
          x: x + slot * 0.15,
          width: slot * 0.7,
          y: PAD.top + plotH - height,
          height: Math.max(height, 1),
          "data-date": day.date,
        });
        bar.append(svg("title", {}, `${day.date}: ${UI.money(day.spend)} (${day.requests} requests)`));
        chart.append(bar);
      }
      // Weekly labels counted back from today, so today is always labelled.
      if ((days.length - 1 - i) % 7 === 0) {
        chart.append(svg("text", { x: x + slot / 2, y: H - 8, "text-anchor": "middle" }, day.date.slice(5)));
      }
    });
    if (peak === 0) {
      chart.append(svg("text", { x: PAD.left + plotW / 2, y: PAD.top + plotH / 2, "text-anchor": "middle" }, `No spend in the last ${DAYS} days.`));
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
    const name = entry.key_name
      ? entry.key_alias ? `${entry.key_alias} (${entry.key_name})` : entry.key_name
      : `deleted key ${entry.token.slice(0, 8)}…`;
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

  load();
})();
