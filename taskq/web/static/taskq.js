// taskq dashboard: progressive enhancement only; every action works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input.select-all").forEach(function (box) {
    box.addEventListener("change", function () {
      var form = box.closest("form");
      form.querySelectorAll('input[type="checkbox"][name="id"]').forEach(function (item) {
        item.checked = box.checked;
      });
    });
  });
});
