/**
 * The bench's chart, hand-written SVG: deliveries/s (left panel) and p99
 * one-way latency (right panel) against group size, for the relay and for
 * the plain-UDP ceiling.
 *
 * @module
 */

/** One group size of the sweep. */
export interface ChartPoint {
  readonly clients: number;
  readonly relayDeliveriesPerSecond: number;
  readonly relayP99Ms: number;
  readonly plainDeliveriesPerSecond?: number;
  readonly plainP99Ms?: number;
}

interface Series {
  readonly name: string;
  readonly color: string;
  readonly dash: string;
  readonly marker: "circle" | "square";
  /** Value labels under the points (else above). */
  readonly labelBelow: boolean;
  readonly values: readonly (number | undefined)[];
}

const WIDTH = 1000;
const HEIGHT = 480;
const PANEL_WIDTH = 400;
const PANEL_HEIGHT = 270;
const TOP = 110;
const LEFTS = [90, 590];
const FONT = "font-family='DejaVu Sans, Arial, Helvetica, sans-serif'";

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(
    />/g,
    "&gt;",
  );
}

function formatTick(value: number): string {
  if (value === 0) return "0";
  if (Math.abs(value) >= 1_000_000) {
    return `${+(value / 1_000_000).toFixed(1)}M`;
  }
  if (Math.abs(value) >= 10_000) return `${+(value / 1000).toFixed(0)}k`;
  if (Math.abs(value) >= 1000) return `${+(value / 1000).toFixed(1)}k`;
  if (Math.abs(value) >= 10) return value.toFixed(0);
  if (Math.abs(value) >= 1) return `${+value.toFixed(1)}`;
  return `${+value.toFixed(2)}`;
}

function formatLabel(value: number): string {
  if (value >= 10_000) return `${(value / 1000).toFixed(1)}k`;
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function panel(
  left: number,
  title: string,
  yLabel: string,
  sizes: readonly number[],
  series: readonly Series[],
  xLabel = "group size (clients, log scale)",
): string {
  const out: string[] = [];
  const bottom = TOP + PANEL_HEIGHT;
  const values = series.flatMap((s) =>
    s.values.filter((v): v is number => v !== undefined && Number.isFinite(v))
  );
  // Log y axis: the relay and its ceiling differ by about ten times.
  const positive = values.filter((v) => v > 0);
  const lo = positive.length > 0 ? Math.min(...positive) : 1;
  const hi = Math.max(...positive, lo * 10);
  const decadeLo = Math.floor(Math.log10(lo));
  const decadeHi = Math.ceil(Math.log10(hi * 1.15));
  const y = (v: number) =>
    bottom -
    ((Math.log10(Math.max(v, 10 ** decadeLo)) - decadeLo) /
        (decadeHi - decadeLo)) * PANEL_HEIGHT;
  const logMin = Math.log10(Math.min(...sizes));
  const logMax = Math.log10(Math.max(...sizes));
  const pad = 0.08 * PANEL_WIDTH;
  const x = (n: number) =>
    logMax === logMin ? left + PANEL_WIDTH / 2 : left + pad +
      ((Math.log10(n) - logMin) / (logMax - logMin)) *
        (PANEL_WIDTH - 2 * pad);

  out.push(
    `<text x='${left + PANEL_WIDTH / 2}' y='${
      TOP - 14
    }' text-anchor='middle' font-size='15' font-weight='bold' ${FONT}>${
      escapeXml(title)
    }</text>`,
  );
  // Grid and y ticks: 1, 2, 5 of every decade.
  for (let d = decadeLo; d <= decadeHi; d++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** d;
      if (d === decadeHi && m > 1) break;
      const yy = y(v).toFixed(1);
      out.push(
        `<line x1='${left}' y1='${yy}' x2='${
          left + PANEL_WIDTH
        }' y2='${yy}' stroke='${
          m === 1 ? "#cfcfcf" : "#ececec"
        }' stroke-width='1'/>`,
        `<text x='${
          left - 8
        }' y='${yy}' dy='4' text-anchor='end' font-size='12' fill='${
          m === 1 ? "#222" : "#777"
        }' ${FONT}>${formatTick(v)}</text>`,
      );
    }
  }
  // x ticks at each group size (or pace).
  for (const n of sizes) {
    const xx = x(n).toFixed(1);
    out.push(
      `<line x1='${xx}' y1='${bottom}' x2='${xx}' y2='${
        bottom + 5
      }' stroke='#333'/>`,
      `<text x='${xx}' y='${
        bottom + 20
      }' text-anchor='middle' font-size='12' fill='#333' ${FONT}>${
        formatTick(n)
      }</text>`,
    );
  }
  // Axes.
  out.push(
    `<rect x='${left}' y='${TOP}' width='${PANEL_WIDTH}' height='${PANEL_HEIGHT}' fill='none' stroke='#333' stroke-width='1.2'/>`,
    `<text x='${left + PANEL_WIDTH / 2}' y='${
      bottom + 42
    }' text-anchor='middle' font-size='13' ${FONT}>${escapeXml(xLabel)}</text>`,
    `<text transform='translate(${left - 62},${
      TOP + PANEL_HEIGHT / 2
    }) rotate(-90)' text-anchor='middle' font-size='13' ${FONT}>${
      escapeXml(yLabel)
    }</text>`,
  );
  // A value label goes on the side away from the other series at that size.
  const below = (s: Series, n: number, v: number) => {
    const i = sizes.indexOf(n);
    const others = series.filter((o) => o !== s).map((o) => o.values[i])
      .filter((o): o is number => o !== undefined && Number.isFinite(o));
    if (others.length === 0) return s.labelBelow;
    return others.some((o) => o > v);
  };
  // Series.
  for (const s of series) {
    const points = sizes.map((n, i) => [n, s.values[i]] as const).filter((
      p,
    ): p is readonly [number, number] =>
      p[1] !== undefined && Number.isFinite(p[1])
    );
    if (points.length === 0) continue;
    const path = points.map(([n, v], i) =>
      `${i === 0 ? "M" : "L"}${x(n).toFixed(1)},${y(v).toFixed(1)}`
    ).join(" ");
    out.push(
      `<path d='${path}' fill='none' stroke='${s.color}' stroke-width='2.5' stroke-dasharray='${s.dash}'/>`,
    );
    for (const [n, v] of points) {
      const xx = x(n);
      const yy = y(v);
      out.push(
        s.marker === "circle"
          ? `<circle cx='${xx.toFixed(1)}' cy='${
            yy.toFixed(1)
          }' r='4.5' fill='${s.color}'/>`
          : `<rect x='${(xx - 4).toFixed(1)}' y='${
            (yy - 4).toFixed(1)
          }' width='8' height='8' fill='${s.color}'/>`,
        `<text x='${xx.toFixed(1)}' y='${
          (below(s, n, v) ? yy + 19 : yy - 10).toFixed(1)
        }' text-anchor='middle' font-size='11.5' font-weight='bold' fill='${s.color}' stroke='white' stroke-width='3' paint-order='stroke' ${FONT}>${
          formatLabel(v)
        }</text>`,
      );
    }
  }
  return out.join("\n");
}

/** Renders the sweep as a standalone SVG document. */
export function renderChart(
  points: readonly ChartPoint[],
  subtitle: string,
): string {
  const sizes = points.map((p) => p.clients);
  const relay = {
    name: "mcrelay (Fernet, re-encrypted per recipient)",
    color: "#1f5fbf",
    dash: "none",
    marker: "circle" as const,
    labelBelow: true,
  };
  const plain = {
    name: "plain UDP relay, no crypto (ceiling)",
    color: "#d9730d",
    dash: "7 5",
    marker: "square" as const,
    labelBelow: false,
  };
  const hasPlain = points.some((p) => p.plainDeliveriesPerSecond !== undefined);
  const left = panel(
    LEFTS[0],
    "Throughput",
    "deliveries/s (messages × recipients), log scale",
    sizes,
    [
      { ...relay, values: points.map((p) => p.relayDeliveriesPerSecond) },
      ...(hasPlain
        ? [{ ...plain, values: points.map((p) => p.plainDeliveriesPerSecond) }]
        : []),
    ],
  );
  const right = panel(
    LEFTS[1],
    "Latency",
    "p99 one-way latency (ms), log scale",
    sizes,
    [
      { ...relay, values: points.map((p) => p.relayP99Ms) },
      ...(hasPlain
        ? [{ ...plain, values: points.map((p) => p.plainP99Ms) }]
        : []),
    ],
  );
  return frame(
    "mcrelay benchmark: group-size sweep",
    subtitle,
    hasPlain ? [relay, plain] : [relay],
    [left, right],
    "Closed loop at saturation: a group keeps about 720 deliveries in flight (N=2: 16 messages), so p99 is mostly queueing at the sustained rate.",
  );
}

/** A standalone SVG document: title, subtitle, legend, panels, footnote. */
function frame(
  title: string,
  subtitle: string,
  legendItems: readonly Omit<Series, "values">[],
  panels: readonly string[],
  footnote: string,
): string {
  // Rough text width at 13 px: 7.3 px per character.
  const itemWidths = legendItems.map((s) => 44 + s.name.length * 7.3);
  const gap = 40;
  const legendWidth = itemWidths.reduce((a, b) => a + b, 0) +
    gap * (legendItems.length - 1);
  const legend = legendItems.map((s, i) => {
    const lx = (WIDTH - legendWidth) / 2 +
      itemWidths.slice(0, i).reduce((a, b) => a + b + gap, 0);
    const ly = 62;
    return [
      `<line x1='${lx}' y1='${ly}' x2='${
        lx + 36
      }' y2='${ly}' stroke='${s.color}' stroke-width='2.5' stroke-dasharray='${s.dash}'/>`,
      s.marker === "circle"
        ? `<circle cx='${lx + 18}' cy='${ly}' r='4.5' fill='${s.color}'/>`
        : `<rect x='${lx + 14}' y='${
          ly - 4
        }' width='8' height='8' fill='${s.color}'/>`,
      `<text x='${lx + 44}' y='${ly}' dy='4' font-size='13' ${FONT}>${
        escapeXml(s.name)
      }</text>`,
    ].join("\n");
  }).join("\n");
  return [
    `<svg xmlns='http://www.w3.org/2000/svg' width='${WIDTH}' height='${HEIGHT}' viewBox='0 0 ${WIDTH} ${HEIGHT}'>`,
    `<rect width='${WIDTH}' height='${HEIGHT}' fill='white'/>`,
    `<text x='${
      WIDTH / 2
    }' y='26' text-anchor='middle' font-size='18' font-weight='bold' ${FONT}>${
      escapeXml(title)
    }</text>`,
    `<text x='${
      WIDTH / 2
    }' y='44' text-anchor='middle' font-size='12' fill='#555' ${FONT}>${
      escapeXml(subtitle)
    }</text>`,
    legend,
    ...panels,
    `<text x='${WIDTH / 2}' y='${
      HEIGHT - 12
    }' text-anchor='middle' font-size='11.5' fill='#555' ${FONT}>${
      escapeXml(footnote)
    }</text>`,
    `</svg>`,
    "",
  ].join("\n");
}

/** One pace of the paced cost curve. */
export interface CostPoint {
  readonly clients: number;
  /** Target deliveries/s. */
  readonly pace: number;
  readonly relayUsPerDelivery: number | undefined;
  readonly plainUsPerDelivery: number | undefined;
  /** The relay with group fan-out by unicast, when measured. */
  readonly groupUsPerDelivery?: number;
}

/**
 * Renders the paced cost curve: server CPU µs per delivery against the
 * pace, one panel per group size (the first two), relay and plain relay.
 */
export function renderCostChart(
  points: readonly CostPoint[],
  subtitle: string,
): string {
  const relay = {
    name: "mcrelay (Fernet, re-encrypted per recipient)",
    color: "#1f5fbf",
    dash: "none",
    marker: "circle" as const,
    labelBelow: false,
  };
  const plain = {
    name: "plain UDP relay, no crypto",
    color: "#d9730d",
    dash: "7 5",
    marker: "square" as const,
    labelBelow: true,
  };
  const group = {
    name: "mcrelay, group fan-out",
    color: "#2e8b3e",
    dash: "2 4",
    marker: "circle" as const,
    labelBelow: true,
  };
  const withGroup = points.some((p) => p.groupUsPerDelivery !== undefined);
  const sizes = [...new Set(points.map((p) => p.clients))].slice(0, 2);
  const panels = sizes.map((size, i) => {
    const row = points.filter((p) => p.clients === size);
    return panel(
      LEFTS[i],
      `${size} clients`,
      "server CPU µs per delivery, log scale",
      row.map((p) => p.pace),
      [
        { ...relay, values: row.map((p) => p.relayUsPerDelivery) },
        { ...plain, values: row.map((p) => p.plainUsPerDelivery) },
        ...(withGroup
          ? [{ ...group, values: row.map((p) => p.groupUsPerDelivery) }]
          : []),
      ],
      "pace (deliveries/s, log scale)",
    );
  });
  return frame(
    "mcrelay benchmark: cost per delivery at a fixed pace",
    subtitle,
    withGroup ? [relay, plain, group] : [relay, plain],
    panels,
    "Open loop: messages sent round-robin at a fixed pace whatever the replies; server CPU (user + sys, all threads) from /proc over each run.",
  );
}
