// Draws the data-quality charts from the JSON block the page carries (no inline script: the CSP forbids it).
"use strict";
(function () {
  const palette = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4b5563"];
  function draw() {
    const block = document.getElementById("chart-data");
    if (!block || typeof Chart === "undefined") return;
    const data = JSON.parse(block.textContent);
    Chart.defaults.animation = false;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      const spec = data[canvas.dataset.chart];
      const kind = canvas.dataset.kind;
      const datasets = Object.keys(spec.series).map(function (name, i) {
        return {label: name, data: spec.series[name], backgroundColor: palette[i % palette.length],
                borderColor: palette[i % palette.length], tension: 0.2, fill: false};
      });
      if (spec.dead_letters) {
        datasets.push({label: "dead letters", data: spec.dead_letters, borderColor: "#dc2626",
                       backgroundColor: "#dc2626", borderDash: [6, 4], fill: false});
      }
      new Chart(canvas, {
        type: kind, data: {labels: spec.labels, datasets: datasets},
        options: {responsive: true, maintainAspectRatio: false,
                  plugins: {legend: {position: "bottom"}},
                  scales: {y: {beginAtZero: true}}}
      });
      canvas.dataset.drawn = "yes";
    });
    document.body.dataset.chartsDrawn = "yes";
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
