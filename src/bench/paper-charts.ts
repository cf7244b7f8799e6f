/**
 * The charts of `ferry bench paper`, in the shapes of the Encrypted vMotion paper's figures: bars
 * for duration with a line for switch-over, encrypted and plain side by side. Each is a Vega-Lite
 * spec compiled to Vega and rendered by Vega's headless SVG renderer: no browser and no canvas.
 */
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

const MODE_COLORS = { domain: ['encrypted', 'plain'], range: ['#1f5f9e', '#9ecae1'] };
const WIDTH = 520;
const HEIGHT = 260;

export interface DurationPoint {
  /** The x category: a workload, a memory size, a round trip. */
  category: string;
  mode: string;
  durationS: number;
  switchoverMs: number | null;
}

/** Bars of duration per category, encrypted and plain side by side, and switch-over as a line on its own axis. */
export function durationChart(title: string, categoryTitle: string, points: DurationPoint[]): TopLevelSpec {
  const order = [...new Set(points.map((p) => p.category))];
  const x = { field: 'category', type: 'nominal' as const, sort: order, title: categoryTitle, axis: { labelAngle: 0 } };
  const color = { field: 'mode', type: 'nominal' as const, scale: MODE_COLORS, title: null };
  return {
    title,
    width: WIDTH,
    height: HEIGHT,
    data: { values: points },
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          x,
          xOffset: { field: 'mode', sort: MODE_COLORS.domain },
          y: { field: 'durationS', type: 'quantitative', title: 'migration time (s)' },
          color,
        },
      },
      {
        mark: { type: 'line', point: true, strokeWidth: 2 },
        transform: [{ filter: 'datum.switchoverMs != null' }],
        encoding: {
          x,
          y: { field: 'switchoverMs', type: 'quantitative', title: 'switch-over (ms)', axis: { orient: 'right' } },
          color: { ...color, scale: { domain: MODE_COLORS.domain, range: ['#d95f02', '#fdae6b'] }, legend: { title: 'switch-over' } },
        },
      },
    ],
    resolve: { scale: { y: 'independent', color: 'independent' } },
  };
}

export interface BarPoint {
  category: string;
  series: string;
  value: number;
}

/** Grouped bars: one group per category, one bar per series. */
export function barChart(title: string, categoryTitle: string, valueTitle: string, points: BarPoint[]): TopLevelSpec {
  const order = [...new Set(points.map((p) => p.category))];
  const series = [...new Set(points.map((p) => p.series))];
  return {
    title,
    width: WIDTH,
    height: HEIGHT,
    data: { values: points },
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'category', type: 'nominal', sort: order, title: categoryTitle, axis: { labelAngle: 0 } },
      xOffset: { field: 'series', sort: series },
      y: { field: 'value', type: 'quantitative', title: valueTitle },
      color: { field: 'series', type: 'nominal', sort: series, title: null },
    },
  };
}

export interface SeriesPoint {
  t: number;
  value: number;
  series: string;
  panel: string;
}

/** Lines over time, one per series, one panel per `panel` value (e.g. encrypted, plain). */
export function timeChart(title: string, valueTitle: string, points: SeriesPoint[]): TopLevelSpec {
  const series = [...new Set(points.map((p) => p.series))];
  return {
    title,
    data: { values: points },
    facet: { column: { field: 'panel', type: 'nominal', title: null } },
    spec: {
      width: WIDTH / 2,
      height: HEIGHT,
      mark: { type: 'line', point: { size: 12 } },
      encoding: {
        x: { field: 't', type: 'quantitative', title: 'seconds from the start of the move' },
        y: { field: 'value', type: 'quantitative', title: valueTitle },
        color: { field: 'series', type: 'nominal', sort: series, title: null },
      },
    },
  };
}

/** The chart as an SVG document. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
