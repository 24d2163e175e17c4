// sitelog console: the Now page reloads itself (data-refresh seconds on <body>). Nothing else.
(function () {
  var s = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (s > 0) {
    setTimeout(function () { window.location.reload(); }, s * 1000);
  }
})();
