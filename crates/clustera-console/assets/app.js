// Clustera Console: the little JavaScript it needs (no inline scripts: the CSP forbids them).
// "Select all" boxes, confirmations on mutating buttons, and live refresh of pages that ask for it.
document.addEventListener('change', function (e) {
  if (e.target.matches('input[data-select-all]')) {
    document.querySelectorAll('input[name="sel"]').forEach(function (b) { b.checked = e.target.checked; });
  }
});
document.addEventListener('submit', function (e) {
  var q = e.target.getAttribute('data-confirm');
  if (q && !window.confirm(q)) { e.preventDefault(); }
});
(function () {
  var every = document.body.getAttribute('data-refresh');
  var box = document.getElementById('live');
  if (!every || !box) { return; }
  box.checked = localStorage.getItem('clustera-live') !== 'off';
  box.addEventListener('change', function () { localStorage.setItem('clustera-live', box.checked ? 'on' : 'off'); });
  setInterval(function () { if (box.checked) { window.location.reload(); } }, Number(every) * 1000);
})();
