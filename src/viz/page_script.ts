/**
 * The page's inline script (plain browser JavaScript, no imports): it reads the JSON data block,
 * lays out the text one span per byte coloured as the block says, and links the text, the heatmap
 * and the line plots: hovering any of them shows the byte's tooltip, highlights the byte in the
 * text and draws a cursor at its position in every figure.
 *
 * @module
 */

/** The script's source, inlined into the page in a `<script>` element. */
export const PAGE_SCRIPT = String.raw`(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("mb-data").textContent);
  var s = data.settings, n = data.bytes.length, bytes = data.bytes;
  var text = document.getElementById("text");
  var tip = document.getElementById("tooltip");
  var plotsBox = document.querySelector(".plots");
  var spans = new Array(n);
  var dec = new TextDecoder();

  // Length of the valid UTF-8 sequence starting at i (1 for a stray or invalid byte).
  function seqLen(i) {
    var b = bytes[i];
    var len = b < 0x80 ? 1 : b >= 0xf0 && b < 0xf5 ? 4 : b >= 0xe0 && b < 0xf0 ? 3 :
      b >= 0xc2 && b < 0xe0 ? 2 : 0;
    if (len === 0 || i + len > n) return 1;
    for (var k = 1; k < len; k++) if ((bytes[i + k] & 0xc0) !== 0x80) return 1;
    return len;
  }
  function glyph(i, len) {
    var b = bytes[i];
    if (len > 1) return dec.decode(new Uint8Array(bytes.slice(i, i + len)));
    if (b === 10) return "\u21b5";
    if (b === 9) return "\u21e5";
    if (b < 0x20) return String.fromCharCode(0x2400 + b);
    if (b === 0x7f) return "\u2421";
    if (b >= 0x80) return "\ufffd";
    return String.fromCharCode(b);
  }
  function dark(hex) {
    var r = parseInt(hex.slice(1, 3), 16), g = parseInt(hex.slice(3, 5), 16);
    var bl = parseInt(hex.slice(5, 7), 16);
    return 0.299 * r + 0.587 * g + 0.114 * bl < 140;
  }

  var lead = new Int32Array(n); // the first byte of the character each byte belongs to
  var frag = document.createDocumentFragment();
  for (var i = 0; i < n;) {
    var len = seqLen(i);
    for (var k = 0; k < len; k++) {
      var el = document.createElement("span");
      el.className = k === 0 ? "b" : "b c";
      el.setAttribute("data-i", String(i + k));
      if (k === 0) el.textContent = glyph(i, len);
      var col = data.color.colors[i + k];
      if (col) {
        el.style.backgroundColor = col;
        if (dark(col)) el.style.color = "#fff";
      } else {
        el.classList.add("none");
      }
      spans[i + k] = el;
      lead[i + k] = i;
      frag.appendChild(el);
    }
    if (len === 1 && bytes[i] === 10) frag.appendChild(document.createTextNode("\n"));
    i += len;
  }
  text.appendChild(frag);

  function fmt(v) {
    if (v === null || v === undefined) return "\u2013";
    if (v === 0) return "0";
    var a = Math.abs(v);
    return a >= 1e5 || a < 1e-4 ? v.toExponential(3) : String(Number(v.toPrecision(4)));
  }
  function layerValue(obj, layer, i) {
    var a = obj && obj[String(layer)];
    return a ? a[i] : null;
  }
  function describe(i, layer) {
    var j = lead[i], len = seqLen(j);
    var hex = "0x" + bytes[i].toString(16).padStart(2, "0");
    var ch = JSON.stringify(glyph(j, len));
    var head = j === i ? ch + "  byte " + hex : "byte " + hex + " (byte " + (i - j + 1) + " of " +
      len + " of " + ch + ")";
    var lines = [head + "  position " + (data.start + i)];
    var lp = data.log_probs[i];
    lines.push(lp === null ? "surprisal: \u2013 (the first byte is not predicted)" :
      "surprisal: " + fmt(-lp / Math.LN2) + " bits  (p = " + fmt(Math.exp(lp)) + ")");
    if (data.ranks) lines.push("rank: " + fmt(data.ranks[i]));
    if (data.discrete_A_fro) {
      lines.push("discrete-A Frobenius norm, layer " + layer + ": " +
        fmt(layerValue(data.discrete_A_fro, layer, i)));
    }
    if (data.delta_mean) {
      lines.push("delta mean, layer " + layer + ": " + fmt(layerValue(data.delta_mean, layer, i)));
    }
    return lines.join("\n");
  }

  var NS = "http://www.w3.org/2000/svg";
  var figures = Array.prototype.slice.call(document.querySelectorAll(".plots svg[data-cell]"));
  var cursors = figures.map(function (svg) {
    var line = document.createElementNS(NS, "line");
    line.setAttribute("class", "cursor");
    line.setAttribute("y1", "0");
    line.setAttribute("y2", svg.getAttribute("height"));
    line.setAttribute("stroke", "#000");
    line.setAttribute("stroke-width", "1");
    line.setAttribute("visibility", "hidden");
    svg.appendChild(line);
    return line;
  });
  function moveCursors(i) {
    figures.forEach(function (svg, k) {
      if (i < 0) return cursors[k].setAttribute("visibility", "hidden");
      var x = +svg.dataset.left + (i + 0.5) * +svg.dataset.cell;
      cursors[k].setAttribute("x1", String(x));
      cursors[k].setAttribute("x2", String(x));
      cursors[k].setAttribute("visibility", "visible");
    });
  }

  var current = -1;
  function place(ev) {
    var x = ev.clientX + 14, y = ev.clientY + 18;
    if (x + tip.offsetWidth > window.innerWidth - 4) x = ev.clientX - tip.offsetWidth - 10;
    if (y + tip.offsetHeight > window.innerHeight - 4) y = ev.clientY - tip.offsetHeight - 12;
    tip.style.left = Math.max(2, x) + "px";
    tip.style.top = Math.max(2, y) + "px";
  }
  function show(i, layer, ev) {
    if (current >= 0) spans[current].classList.remove("hl");
    current = i;
    spans[i].classList.add("hl");
    tip.textContent = describe(i, layer);
    tip.hidden = false;
    place(ev);
    moveCursors(i);
  }
  function hide() {
    if (current >= 0) spans[current].classList.remove("hl");
    current = -1;
    tip.hidden = true;
    moveCursors(-1);
  }
  // Keeps position i in view in the scrolling figures / text box (no-ops when nothing scrolls).
  function revealInPlots(i) {
    if (!plotsBox || !figures.length) return;
    var x = +figures[0].dataset.left + (i + 0.5) * +figures[0].dataset.cell;
    var w = plotsBox.clientWidth;
    if (x < plotsBox.scrollLeft + 40 || x > plotsBox.scrollLeft + w - 40) {
      plotsBox.scrollLeft = x - w / 2;
    }
  }
  function revealInText(i) {
    var top = spans[i].offsetTop, h = text.clientHeight;
    if (top < text.scrollTop || top > text.scrollTop + h - 24) text.scrollTop = top - h / 2;
  }

  text.addEventListener("mousemove", function (ev) {
    var t = ev.target.closest ? ev.target.closest(".b") : null;
    if (!t) return;
    var i = +t.getAttribute("data-i");
    if (i !== current) {
      show(i, s.layer, ev);
      revealInPlots(i);
    } else {
      place(ev);
    }
  });
  text.addEventListener("mouseleave", hide);
  figures.forEach(function (svg) {
    svg.addEventListener("mousemove", function (ev) {
      var r = svg.getBoundingClientRect();
      var sx = +svg.getAttribute("width") / r.width, sy = +svg.getAttribute("height") / r.height;
      var x = (ev.clientX - r.left) * sx, y = (ev.clientY - r.top) * sy;
      var i = Math.floor((x - +svg.dataset.left) / +svg.dataset.cell);
      if (i < 0 || i >= n) return hide();
      var layer = s.layer;
      if (svg.dataset.kind === "heatmap") {
        var layers = svg.dataset.layers.split(",").map(Number);
        var row = Math.floor((y - +svg.dataset.top) / +svg.dataset.rowH);
        if (row >= 0 && row < layers.length) layer = layers[row];
      }
      show(i, layer, ev);
      revealInText(i);
    });
    svg.addEventListener("mouseleave", hide);
  });
  document.documentElement.setAttribute("data-ready", "1");
})();`;
