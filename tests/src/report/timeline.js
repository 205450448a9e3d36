// The report's timeline on a canvas: it draws only the operations in view (each lane's
// operations are sorted by start, and a binary search finds the first one in view), merges
// bars that fall on the same pixel, and zooms and pans. `#jump-K` in the address centres the
// operations of finding K, so a view can be shared as a link.
(function () {
  var source = document.getElementById('timeline-data');
  var canvas = document.getElementById('timeline');
  if (!source || !canvas) return;
  var data = JSON.parse(source.textContent);
  var tip = document.getElementById('tl-tip');
  var status = document.getElementById('tl-status');
  var ROW = 22, AXIS = 24, LEFT = 88;
  var COLOURS = ['#66bb6a', '#bdbdbd', '#ffb74d'];
  var NODES = ['#90caf9', '#ce93d8', '#a5d6a7', '#ffe082', '#ffab91', '#80deea', '#b0bec5', '#f48fb1'];
  // A history with no leader changes (a Jepsen log) has no leader lane.
  var rows = data.leaders.length ? [{ kind: 'leader' }] : [];
  for (var n = 1; n <= data.nodes; n++) rows.push({ kind: 'node', node: n });
  var firstLane = rows.length;
  for (var l = 0; l < data.lanes; l++) rows.push({ kind: 'lane', lane: l });

  // Per lane: its operations by start, and the longest one (how far back a bar in view may start).
  var lanes = [];
  for (var i = 0; i < data.lanes; i++) lanes.push({ ops: [], longest: 0 });
  data.ops.forEach(function (op) {
    var lane = lanes[op[0]];
    lane.ops.push(op);
    var until = op[2] < 0 ? data.end : op[2];
    lane.longest = Math.max(lane.longest, until - op[1]);
  });
  lanes.forEach(function (lane) { lane.ops.sort(function (a, b) { return a[1] - b[1]; }); });
  var byId = {};
  data.ops.forEach(function (op) { byId[op[5]] = op; });

  var span = Math.max(data.end, 1);
  var view = { from: 0, to: span };
  var marked = {};
  var marker = null;

  // The canvas's width, read once a draw: reading it forces a layout.
  var shown = 1200;
  function width() { return shown; }
  function x(t) { return LEFT + (t - view.from) / (view.to - view.from) * (shown - LEFT - 8); }
  function timeAt(px) { return view.from + (px - LEFT) / (shown - LEFT - 8) * (view.to - view.from); }
  function top(row) { return AXIS + row * ROW; }
  // A time (ns from the start) in the unit that suits the width of the view.
  function label(t) {
    var w = view.to - view.from;
    if (w < 1e4) return t.toFixed(0) + ' ns';
    if (w < 1e7) return (t / 1e3).toFixed(w < 1e5 ? 2 : 0) + ' \u00b5s';
    if (w < 2e9) return (t / 1e6).toFixed(w < 2e7 ? 2 : 0) + ' ms';
    return (t / 1e9).toFixed(w < 2e10 ? 2 : 1) + ' s';
  }
  function ends(op) { return op[2] < 0 ? data.end : op[2]; }

  // The first index whose operation may still be in view at `from`.
  function firstInView(lane, from) {
    var lo = 0, hi = lane.ops.length, after = from - lane.longest;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (lane.ops[mid][1] < after) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function draw() {
    var started = performance.now();
    shown = canvas.clientWidth || 1200;
    var w = shown, h = AXIS + rows.length * ROW + 4, ratio = window.devicePixelRatio || 1;
    canvas.width = w * ratio;
    canvas.height = h * ratio;
    canvas.style.height = h + 'px';
    var g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = '11px sans-serif';
    g.textBaseline = 'middle';
    // Time axis: about ten ticks at 1, 2 or 5 times a power of ten.
    var raw = (view.to - view.from) / 10, power = Math.pow(10, Math.floor(Math.log10(raw)));
    var tick = [1, 2, 5, 10].map(function (m) { return m * power; }).find(function (s) { return s >= raw; });
    g.strokeStyle = '#e0e0e0';
    g.fillStyle = '#333';
    for (var t = Math.ceil(view.from / tick) * tick; t <= view.to; t += tick) {
      var tx = x(t);
      g.beginPath(); g.moveTo(tx, AXIS - 4); g.lineTo(tx, h); g.stroke();
      // A tick's label only where it fits before the right edge.
      if (tx + 64 < w) g.fillText(label(t), tx + 2, AXIS / 2);
    }
    // Fault intervals behind the client lanes, so an operation can be read against them.
    var lanesTop = top(firstLane);
    data.faults.forEach(function (f) {
      if (f[1] < view.from || f[0] > view.to) return;
      g.fillStyle = 'rgba(239,83,80,0.10)';
      g.fillRect(x(f[0]), lanesTop, Math.max(x(f[1]) - x(f[0]), 1), h - lanesTop);
    });
    rows.forEach(function (row, r) {
      var y = top(r);
      g.fillStyle = '#333';
      g.fillText(row.kind === 'leader' ? 'leader' : row.kind === 'node' ? 'n' + row.node : 'clients ' + (row.lane + 1), 4, y + ROW / 2);
      g.save();
      g.beginPath(); g.rect(LEFT, y, w - LEFT, ROW); g.clip();
      if (row.kind === 'leader') drawLeaders(g, y, false);
      else if (row.kind === 'node') drawNode(g, y, row.node);
      else drawLane(g, y, lanes[row.lane]);
      g.restore();
    });
    if (marker !== null && marker >= view.from && marker <= view.to) {
      g.strokeStyle = '#c62828'; g.lineWidth = 2;
      g.beginPath(); g.moveTo(x(marker), AXIS); g.lineTo(x(marker), h); g.stroke();
      g.lineWidth = 1;
    }
    var inView = 0;
    lanes.forEach(function (lane) {
      for (var k = firstInView(lane, view.from); k < lane.ops.length && lane.ops[k][1] <= view.to; k++) {
        if (ends(lane.ops[k]) >= view.from) inView++;
      }
    });
    canvas.dataset.from = view.from.toFixed(3);
    canvas.dataset.to = view.to.toFixed(3);
    canvas.dataset.inView = String(inView);
    canvas.dataset.drawMs = (performance.now() - started).toFixed(1);
    status.textContent = 'showing ' + label(view.from) + ' to ' + label(view.to) + ' of ' +
      label(span) + '; ' + inView + ' of ' + data.ops.length + ' operations in view';
  }

  function drawLeaders(g, y, onlyNode) {
    data.leaders.forEach(function (change, i) {
      var from = change[0], to = i + 1 < data.leaders.length ? data.leaders[i + 1][0] : data.end;
      if (to < view.from || from > view.to) return;
      var leader = change[1];
      if (onlyNode && leader !== onlyNode) return;
      var x0 = x(from), x1 = x(to);
      g.fillStyle = onlyNode ? '#e3f2fd' : leader ? NODES[(leader - 1) % 8] : '#eeeeee';
      g.fillRect(x0, y + 2, Math.max(x1 - x0, 1), ROW - 4);
      if (!onlyNode && x1 - x0 > 50) {
        g.fillStyle = '#111';
        g.fillText(leader ? 'n' + leader + (change[2] ? ' term ' + change[2] : '') : 'no leader', Math.max(x0, LEFT) + 3, y + ROW / 2);
      }
    });
  }

  function drawNode(g, y, node) {
    drawLeaders(g, y, node);
    data.faults.forEach(function (f) {
      if (f[1] < view.from || f[0] > view.to) return;
      if (f[2] !== 'n' + node && f[2] !== 'all') return;
      var x0 = x(f[0]), x1 = Math.max(x(f[1]), x0 + 3);
      g.fillStyle = '#ef5350';
      g.fillRect(x0, y + 4, x1 - x0, ROW - 8);
      var name = f[3] || 'fault';
      if (x1 - x0 > name.length * 6 + 6) {
        g.fillStyle = '#fff';
        g.fillText(name, Math.max(x0, LEFT) + 3, y + ROW / 2);
      }
    });
  }

  function drawLane(g, y, lane) {
    // One bar per pixel column and colour at most: a zoomed-out lane of thousands stays cheap.
    var lastX = -1, lastColour = -1;
    for (var k = firstInView(lane, view.from); k < lane.ops.length && lane.ops[k][1] <= view.to; k++) {
      var op = lane.ops[k], until = ends(op);
      if (until < view.from) continue;
      var x0 = x(op[1]), x1 = x(until), wide = x1 - x0;
      var hit = marked[op[5]];
      if (!hit && wide < 1 && Math.floor(x0) === lastX && op[3] === lastColour) continue;
      lastX = Math.floor(x0); lastColour = op[3];
      g.fillStyle = COLOURS[op[3]];
      g.fillRect(x0, y + 3, Math.max(wide, 1), ROW - 6);
      if (hit) {
        g.strokeStyle = '#c62828'; g.lineWidth = 2;
        g.strokeRect(x0, y + 3, Math.max(wide, 2), ROW - 6);
      }
      if (wide > 48) {
        g.fillStyle = '#111';
        g.fillText(op[4].slice(0, Math.floor((wide - 6) / 6)), Math.max(x0, LEFT) + 3, y + ROW / 2);
      }
    }
  }

  function setView(from, to) {
    var least = Math.min(span, 20);
    if (to - from < least) { var mid = (from + to) / 2; from = mid - least / 2; to = mid + least / 2; }
    if (to - from > span) { from = 0; to = span; }
    if (from < 0) { to -= from; from = 0; }
    if (to > span) { from -= to - span; to = span; }
    view.from = Math.max(0, from); view.to = to;
    draw();
  }

  function zoom(factor, at) {
    var t = at === undefined ? (view.from + view.to) / 2 : at;
    setView(t - (t - view.from) * factor, t + (view.to - t) * factor);
  }

  // Centres finding K's operations with room around them, and outlines them.
  function jump(k) {
    var found = data.jumps[k];
    if (!found) return false;
    marked = {};
    marker = null;
    var from = Infinity, to = -Infinity;
    found.operations.forEach(function (id) {
      var op = byId[id];
      if (!op) return;
      marked[id] = true;
      from = Math.min(from, op[1]); to = Math.max(to, ends(op));
    });
    if (from > to) return false;
    var pad = Math.max((to - from) * 0.5, span * 0.001);
    setView(from - pad, to + pad);
    canvas.dataset.marked = String(Object.keys(marked).length);
    canvas.scrollIntoView({ block: 'center' });
    return true;
  }

  // Centres a moment (the run's clock, ns) with a twentieth of the run around it, marked by a
  // line: where a check that watched the nodes first failed.
  function moment(at) {
    var t = at - data.origin;
    if (!(t >= 0 && t <= span)) return false;
    marker = t;
    marked = {};
    setView(t - span / 40, t + span / 40);
    canvas.dataset.marker = String(t);
    canvas.scrollIntoView({ block: 'center' });
    return true;
  }

  function fromHash() {
    var m = /^#jump-(\d+)$/.exec(window.location.hash);
    if (m) jump(Number(m[1]));
    m = /^#at-(\d+)$/.exec(window.location.hash);
    if (m) moment(Number(m[1]));
  }

  document.querySelectorAll('[data-zoom]').forEach(function (button) {
    button.addEventListener('click', function () {
      var how = button.dataset.zoom;
      if (how === 'fit') setView(0, span); else zoom(how === 'in' ? 0.5 : 2);
    });
  });
  window.addEventListener('hashchange', fromHash);
  canvas.addEventListener('wheel', function (e) {
    e.preventDefault();
    var at = timeAt(e.offsetX);
    zoom(e.deltaY > 0 ? 1.25 : 0.8, Math.min(Math.max(at, view.from), view.to));
  }, { passive: false });
  var drag = null;
  canvas.addEventListener('mousedown', function (e) { drag = { x: e.clientX, from: view.from, to: view.to }; canvas.style.cursor = 'grabbing'; });
  window.addEventListener('mouseup', function () { drag = null; canvas.style.cursor = 'grab'; });
  window.addEventListener('mousemove', function (e) {
    if (!drag) return;
    var dt = (e.clientX - drag.x) / (width() - LEFT - 8) * (drag.to - drag.from);
    setView(drag.from - dt, drag.to - dt);
  });
  canvas.addEventListener('mousemove', function (e) {
    if (drag) return;
    var r = Math.floor((e.offsetY - AXIS) / ROW), row = rows[r], t = timeAt(e.offsetX);
    var slack = 3 / (width() - LEFT - 8) * (view.to - view.from), text = null;
    if (row && row.kind === 'lane') {
      var lane = lanes[row.lane];
      for (var k = firstInView(lane, t - slack); k < lane.ops.length && lane.ops[k][1] <= t + slack; k++) {
        var op = lane.ops[k];
        if (ends(op) >= t - slack) {
          text = '#' + op[5] + ' process ' + op[6] + ': ' + op[4] + '\n' + label(op[1]) + ' to ' +
            (op[2] < 0 ? 'never answered' : label(op[2]));
        }
      }
    } else if (row) {
      data.faults.forEach(function (f) {
        if (f[0] - slack <= t && t <= f[1] + slack && (row.kind === 'leader' || f[2] === 'n' + row.node || f[2] === 'all')) {
          text = f[2] + ' ' + (f[3] || 'fault') + ', ' + label(f[0]) + ' to ' + label(f[1]) + ':\n' + f[4];
        }
      });
    }
    if (text === null) { tip.hidden = true; return; }
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = Math.min(e.offsetX + 12, width() - 300) + 'px';
    tip.style.top = (e.offsetY + 14) + 'px';
  });
  canvas.addEventListener('mouseleave', function () { tip.hidden = true; });
  window.addEventListener('resize', draw);
  draw();
  fromHash();
  canvas.dataset.nodes = String(data.nodes);
  canvas.dataset.lanes = String(data.lanes);
  document.body.dataset.rendered = String(data.ops.length);
})();
