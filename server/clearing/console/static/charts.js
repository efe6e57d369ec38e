// Draws every chart of a page with Chart.js (chart.umd.min.js, vendored): each
// <figure class="chart"> holds its data as a JSON block (overview.py's chart_spec) and a
// canvas. Tooltips show the exact text the server formatted from integers.
"use strict";
(function () {
  var palette = ["#457b9d", "#e76f51", "#2a9d8f", "#8d99ae"];
  document.querySelectorAll("figure.chart").forEach(function (figure) {
    var spec = JSON.parse(figure.querySelector("script.chart-data").textContent);
    var datasets = spec.datasets.map(function (d, i) {
      return {label: d.label, data: d.data, tips: d.tips, borderColor: palette[i % 4],
              backgroundColor: palette[i % 4], pointRadius: 0, borderWidth: 1.5};
    });
    new Chart(figure.querySelector("canvas"), {
      type: spec.type,
      data: {labels: spec.labels, datasets: datasets},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {y: {beginAtZero: true}},
        plugins: {
          legend: {display: datasets.length > 1},
          tooltip: {callbacks: {label: function (ctx) {
            return ctx.dataset.tips[ctx.dataIndex];
          }}}
        }
      }
    });
  });
})();
