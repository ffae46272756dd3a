//! Plots of the evaluation results, written as PNG or SVG.
//!
//! Three kinds of figure:
//!
//! - [`line_chart`]: one chart of one or more curves (a risk–coverage curve per method, recall
//!   against the number of Monte-Carlo samples, …), optionally with the dashed grey `y = x`
//!   reference line.
//! - [`line_chart_grid`]: several such charts as panels on one canvas, for instance one
//!   robustness panel per corruption, each showing a metric against the corruption severity.
//! - [`reliability_diagram`]: one calibration panel per method, side by side: for each
//!   confidence bin a bar of the accuracy in that bin, a grey box marking the gap between
//!   accuracy and mean confidence, and the dashed diagonal of perfect calibration; each panel's
//!   title reports its expected calibration error (ECE).
//!
//! The output format follows the path's extension (`png` or `svg`, in any case). Every figure
//! has a white background, titles, axis labels and, whenever more than one series is drawn, a
//! legend. Series `i` always gets colour (and marker shape) `i` of a fixed palette, so a method
//! keeps its colour across plots when it keeps its position in the series lists. Text is set in
//! the bundled DejaVu Sans, so PNGs look the same on every machine.
//!
//! Non-finite points are skipped (a curve is broken where they were), points outside an explicit
//! axis range are clipped, and a chart with nothing finite to show still draws its axes, on
//! `(0, 1)` unless a range is given.

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::error::{MetricsError, Result};

/// One named curve of a [`LineChart`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Shown in the legend (when the chart has more than one series).
    pub name: String,
    /// `(x, y)` points, joined in this order. Non-finite points (and magnitudes beyond 1e300)
    /// are skipped and break the line.
    pub points: Vec<(f64, f64)>,
}

/// A chart of one or more curves on shared axes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    /// Drawn above the plot.
    pub title: String,
    /// Description of the x axis.
    pub x_label: String,
    /// Description of the y axis.
    pub y_label: String,
    /// Fixed x range; `None` fits the data with a small margin. Points outside are clipped.
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range; `None` fits the data with a small margin. Points outside are clipped.
    pub y_range: Option<(f64, f64)>,
    /// The curves; series `i` gets colour and marker `i` of the fixed palette.
    pub series: Vec<Series>,
    /// Draw a dashed grey `y = x` reference line.
    pub diagonal: bool,
}

/// One confidence bin of a [`ReliabilityChart`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReliabilityBar {
    /// Lower edge of the bin on the confidence axis (the bar starts here).
    pub lower: f64,
    /// Upper edge of the bin on the confidence axis (the bar ends here).
    pub upper: f64,
    /// Mean confidence of the predictions in the bin.
    pub confidence: f64,
    /// Fraction of correct predictions in the bin (the bar height).
    pub accuracy: f64,
    /// Number of predictions in the bin; empty bins (`0`) are not drawn.
    pub count: usize,
}

/// The reliability diagram of one method.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReliabilityChart {
    /// Panel title (typically the method); `"(ECE = …)"` is appended.
    pub title: String,
    /// The confidence bins.
    pub bars: Vec<ReliabilityBar>,
    /// Expected calibration error, shown in the panel title with three decimals.
    pub ece: f64,
}

impl ReliabilityChart {
    /// The equal-width reliability diagram of `calibration`, titled `title`.
    pub fn from_calibration(
        title: &str,
        calibration: &crate::calibration::CalibrationReport,
    ) -> Self {
        Self {
            title: title.to_string(),
            bars: calibration
                .diagram
                .iter()
                .map(|b| ReliabilityBar {
                    lower: b.lower,
                    upper: b.upper,
                    confidence: b.confidence,
                    accuracy: b.accuracy,
                    count: b.count,
                })
                .collect(),
            ece: calibration.ece,
        }
    }
}

/// Draws one chart to `path` (`.png` or `.svg`), 900 × 600 pixels.
///
/// # Errors
///
/// [`MetricsError::Plot`] when the extension is neither `png` nor `svg`,
/// [`MetricsError::Plot`] when drawing fails, [`MetricsError::Io`] when writing fails.
pub fn line_chart(path: &Path, chart: &LineChart) -> Result<()> {
    let format = format_of(path)?;
    ensure_font().map_err(|m| plot_error(path, m))?;
    render(path, format, SINGLE_SIZE, &Figure::Line(chart))
}

/// Several panels on one canvas (e.g. one robustness panel per corruption), `columns` per row,
/// with an overall title.
///
/// Each panel is 450 × 340 pixels. When the panels agree on their series (the same name at the
/// same position wherever a position is used) one legend under the overall title serves them
/// all; otherwise every panel with more than one series gets its own legend.
///
/// # Errors
///
/// [`MetricsError::InvalidParameter`] when `columns` is 0, [`MetricsError::Plot`] when the extension is neither `png`
/// nor `svg`, [`MetricsError::Empty`] when there are no panels, [`MetricsError::Plot`] when
/// drawing fails, [`MetricsError::Io`] when writing fails.
pub fn line_chart_grid(
    path: &Path,
    title: &str,
    panels: &[LineChart],
    columns: usize,
) -> Result<()> {
    if columns == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "columns",
            value: 0.0,
            reason: "a grid needs at least one column",
        });
    }
    let format = format_of(path)?;
    if panels.is_empty() {
        return Err(MetricsError::Empty {
            what: "line_chart_grid",
            detail: "no panels to draw",
        });
    }
    ensure_font().map_err(|m| plot_error(path, m))?;
    let figure = grid_figure(title, panels, columns);
    render(path, format, figure.size(), &figure)
}

/// One reliability panel per chart (e.g. per method) side by side: bars of accuracy per
/// confidence bin (a bar spans `lower..upper`), a grey box showing the gap
/// |accuracy − confidence|, and the `y = x` diagonal of perfect calibration; each panel's title
/// includes `"ECE = 0.xxx"`.
///
/// Chart `i` is drawn in palette colour `i`, like series `i` of a [`LineChart`]. Panels are
/// 420 × 440 pixels, at most four per row. Bins that are empty or hold non-finite values are
/// not drawn; values are clamped to `[0, 1]`.
///
/// # Errors
///
/// [`MetricsError::Plot`] when the extension is neither `png` nor `svg`,
/// [`MetricsError::Empty`] when there are no charts, [`MetricsError::Plot`] when drawing fails,
/// [`MetricsError::Io`] when writing fails.
pub fn reliability_diagram(path: &Path, title: &str, charts: &[ReliabilityChart]) -> Result<()> {
    let format = format_of(path)?;
    if charts.is_empty() {
        return Err(MetricsError::Empty {
            what: "reliability_diagram",
            detail: "no charts to draw",
        });
    }
    ensure_font().map_err(|m| plot_error(path, m))?;
    let figure = reliability_figure(title, charts);
    render(path, format, figure.size(), &figure)
}

// ---------------------------------------------------------------------------------------------
// Output: format, font, backends.

/// The bundled font (DejaVu Sans, see `assets/DejaVuSans-LICENSE.txt`).
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family every text style here asks for; the bundled font is registered under it.
const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters, once per process.
fn ensure_font() -> std::result::Result<(), &'static str> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the bundled font DejaVuSans.ttf could not be loaded")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Svg,
}

fn format_of(path: &Path) -> Result<Format> {
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    match ext.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => Err(plot_error(
            path,
            match ext {
                Some(ext) => {
                    format!("plot file extension must be \"png\" or \"svg\", got \"{ext}\"")
                }
                None => {
                    "plot file extension must be \"png\" or \"svg\", got a path without extension"
                        .into()
                }
            },
        )),
    }
}

fn plot_error(path: &Path, message: impl Into<String>) -> MetricsError {
    MetricsError::Plot {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A drawing failure, from any backend.
struct DrawError(String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for DrawError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        Self(e.to_string())
    }
}

type Drawn = std::result::Result<(), DrawError>;

/// Draws `figure` with the backend of `format` on a white canvas of `size`, then writes the
/// file atomically.
///
/// PNGs are drawn at [`supersampling`] times their size and averaged down: that anti-aliases
/// lines and markers, and hides plotters' whole-pixel placement of glyphs (which otherwise
/// makes letter spacing uneven and lifts decimal points at small sizes).
fn render(path: &Path, format: Format, size: (u32, u32), figure: &Figure<'_>) -> Result<()> {
    let bytes = match format {
        Format::Png => {
            let (w, h) = size;
            let k = supersampling(size);
            let big_size = (w * k, h * k);
            let mut big = vec![0u8; big_size.0 as usize * big_size.1 as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut big, big_size).into_drawing_area();
                paint(&root, figure, Px(k)).map_err(|e| plot_error(path, e.0))?;
            }
            let buf = downsample(big, big_size, k);
            let image = image::RgbImage::from_raw(w, h, buf)
                .ok_or_else(|| plot_error(path, "pixel buffer has the wrong size"))?;
            let mut out = Cursor::new(Vec::new());
            image
                .write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| plot_error(path, format!("PNG encoding failed: {e}")))?;
            out.into_inner()
        }
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                paint(&root, figure, Px(1)).map_err(|e| plot_error(path, e.0))?;
            }
            svg.into_bytes()
        }
    };
    medprob_core::fs::write_atomic(path, &bytes).map_err(|e| MetricsError::io(path, e))
}

fn paint<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure<'_>, px: Px) -> Drawn {
    root.fill(&WHITE)?;
    figure.draw(root, px)?;
    root.present()?;
    Ok(())
}

/// The supersampling factor of a PNG of `size`: 3, or less where the enlarged canvas would
/// exceed 16 million pixels (48 MB).
fn supersampling((w, h): (u32, u32)) -> u32 {
    let pixels = u64::from(w) * u64::from(h);
    (1..=3)
        .rev()
        .find(|&k| pixels * k * k <= 16_000_000)
        .map_or(1, |k| k as u32)
}

/// Averages each `k` × `k` block of the RGB image `big` (of `big_size`) into one pixel.
fn downsample(big: Vec<u8>, (bw, bh): (u32, u32), k: u32) -> Vec<u8> {
    if k == 1 {
        return big;
    }
    let (bw, k) = (bw as usize, k as usize);
    let (w, h) = (bw / k, bh as usize / k);
    let mut out = vec![0u8; w * h * 3];
    let mut sums = vec![0u32; w * 3];
    let (n, half) = ((k * k) as u32, (k * k) as u32 / 2);
    for y in 0..h {
        sums.fill(0);
        for row in big[y * k * bw * 3..(y + 1) * k * bw * 3].chunks_exact(bw * 3) {
            for (x, pixel) in row.chunks_exact(3).enumerate().take(w * k) {
                let s = &mut sums[x / k * 3..x / k * 3 + 3];
                for c in 0..3 {
                    s[c] += u32::from(pixel[c]);
                }
            }
        }
        for (o, s) in out[y * w * 3..(y + 1) * w * 3].iter_mut().zip(&sums) {
            *o = ((s + half) / n) as u8;
        }
    }
    out
}

/// The scale of the canvas: every length in pixels is multiplied by it.
#[derive(Debug, Clone, Copy)]
struct Px(u32);

impl Px {
    fn n(self, v: u32) -> u32 {
        v * self.0
    }

    fn i(self, v: i32) -> i32 {
        v * self.0 as i32
    }

    fn f(self, v: f64) -> f64 {
        v * f64::from(self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Look.

/// Series `i` gets `PALETTE[i % 10]` (the Tableau 10 colours, with a dark indigo for grey,
/// which is kept for reference lines).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(57, 59, 121),
];

fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The dashed `y = x` reference line.
const REFERENCE: RGBColor = RGBColor(140, 140, 140);
/// The calibration gap boxes.
const GAP: RGBColor = RGBColor(50, 50, 50);
const AXIS: RGBColor = RGBColor(90, 90, 90);
const GRID_BOLD: RGBColor = RGBColor(222, 222, 222);
const GRID_LIGHT: RGBColor = RGBColor(244, 244, 244);

/// A series gets markers on its points when it has at most this many finite points.
const MAX_MARKED: usize = 30;

/// Font sizes and spacing of one chart, in output pixels (scaled by [`Px`] when drawn).
struct Style {
    title: f64,
    axis: f64,
    tick: f64,
    legend: f64,
    line: u32,
    marker: f64,
    x_area: u32,
    y_area: u32,
    x_labels: usize,
    y_labels: usize,
    margin: u32,
}

/// A chart on its own canvas.
const SINGLE: Style = Style {
    title: 24.0,
    axis: 17.0,
    tick: 14.0,
    legend: 15.0,
    line: 2,
    marker: 5.0,
    x_area: 54,
    y_area: 80,
    x_labels: 10,
    y_labels: 8,
    margin: 14,
};

/// A panel of a grid or of a reliability diagram.
const PANEL: Style = Style {
    title: 16.0,
    axis: 13.0,
    tick: 12.0,
    legend: 12.0,
    line: 2,
    marker: 4.0,
    x_area: 42,
    y_area: 62,
    x_labels: 6,
    y_labels: 6,
    margin: 10,
};

const SINGLE_SIZE: (u32, u32) = (900, 600);
const GRID_PANEL: (u32, u32) = (450, 340);
const RELIABILITY_PANEL: (u32, u32) = (420, 440);
const RELIABILITY_MAX_COLUMNS: usize = 4;
/// The overall title of a grid or reliability diagram, and its shared legend.
const FIGURE_TITLE: f64 = 22.0;
const FIGURE_LEGEND: f64 = 15.0;

fn text(size: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&BLACK)
}

/// Width and height of `s` set at `size`, as the backends will lay it out.
fn text_size(s: &str, size: f64) -> (u32, u32) {
    (FAMILY, size)
        .into_font()
        .box_size(s)
        .unwrap_or(((s.chars().count() as f64 * size * 0.6) as u32, size as u32))
}

// ---------------------------------------------------------------------------------------------
// Figures.

enum Figure<'a> {
    Line(&'a LineChart),
    Grid {
        head: Head,
        panels: &'a [LineChart],
        rows: usize,
        cols: usize,
        /// Whether the head carries the legend of all panels.
        shared_legend: bool,
    },
    Reliability {
        head: Head,
        charts: &'a [ReliabilityChart],
        rows: usize,
        cols: usize,
    },
}

fn grid_figure<'a>(title: &str, panels: &'a [LineChart], columns: usize) -> Figure<'a> {
    let cols = columns.min(panels.len()).max(1);
    let rows = panels.len().div_ceil(cols);
    let width = GRID_PANEL.0 * cols as u32;
    let shared = shared_legend(panels);
    let head = Head::new(
        title,
        FIGURE_TITLE,
        shared.clone().unwrap_or_default(),
        FIGURE_LEGEND,
        width,
    );
    Figure::Grid {
        head,
        panels,
        rows,
        cols,
        shared_legend: shared.is_some(),
    }
}

fn reliability_figure<'a>(title: &str, charts: &'a [ReliabilityChart]) -> Figure<'a> {
    let cols = charts.len().clamp(1, RELIABILITY_MAX_COLUMNS);
    let rows = charts.len().div_ceil(cols);
    let width = RELIABILITY_PANEL.0 * cols as u32;
    let legend = vec![
        LegendEntry {
            label: "Accuracy".into(),
            glyph: Glyph::Bars((0..charts.len()).map(palette).collect()),
        },
        LegendEntry {
            label: "Gap |accuracy - confidence|".into(),
            glyph: Glyph::Gap,
        },
        LegendEntry {
            label: "Perfect calibration".into(),
            glyph: Glyph::Dashed(REFERENCE),
        },
    ];
    let head = Head::new(title, FIGURE_TITLE, legend, FIGURE_LEGEND, width);
    Figure::Reliability {
        head,
        charts,
        rows,
        cols,
    }
}

impl Figure<'_> {
    /// The size of the figure in output pixels.
    fn size(&self) -> (u32, u32) {
        match self {
            Figure::Line(_) => SINGLE_SIZE,
            Figure::Grid {
                head, rows, cols, ..
            } => (
                GRID_PANEL.0 * *cols as u32,
                head.height() + GRID_PANEL.1 * *rows as u32,
            ),
            Figure::Reliability {
                head, rows, cols, ..
            } => (
                RELIABILITY_PANEL.0 * *cols as u32,
                head.height() + RELIABILITY_PANEL.1 * *rows as u32,
            ),
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, px: Px) -> Drawn {
        match self {
            Figure::Line(chart) => {
                draw_line_panel(root, chart, &SINGLE, chart.series.len() > 1, px)
            }
            Figure::Grid {
                head,
                panels,
                rows,
                cols,
                shared_legend,
            } => {
                let body = head.draw(root, px)?;
                for (panel, area) in panels.iter().zip(body.split_evenly((*rows, *cols))) {
                    let legend = !shared_legend && panel.series.len() > 1;
                    draw_line_panel(&area, panel, &PANEL, legend, px)?;
                }
                Ok(())
            }
            Figure::Reliability {
                head,
                charts,
                rows,
                cols,
            } => {
                let body = head.draw(root, px)?;
                let areas = body.split_evenly((*rows, *cols));
                for (i, (chart, area)) in charts.iter().zip(areas).enumerate() {
                    draw_reliability_panel(&area, chart, i, px)?;
                }
                Ok(())
            }
        }
    }
}

/// A title and a legend above a plot (or above a grid of panels). It is laid out in output
/// pixels before drawing, so that the canvas can be sized to fit, and drawn at any scale.
struct Head {
    title: String,
    title_font: f64,
    title_h: u32,
    legend: Vec<LegendEntry>,
    legend_font: f64,
    legend_rows: Vec<Vec<usize>>,
}

const TITLE_PAD_TOP: u32 = 10;
const TITLE_PAD_BOTTOM: u32 = 4;

impl Head {
    fn new(
        title: &str,
        title_font: f64,
        legend: Vec<LegendEntry>,
        legend_font: f64,
        width: u32,
    ) -> Self {
        let title_h = if title.is_empty() {
            TITLE_PAD_TOP
        } else {
            TITLE_PAD_TOP + text_size(title, title_font).1 + TITLE_PAD_BOTTOM
        };
        let legend_rows = legend_rows(&legend, legend_font, width);
        Self {
            title: title.to_owned(),
            title_font,
            title_h,
            legend,
            legend_font,
            legend_rows,
        }
    }

    fn legend_height(&self) -> u32 {
        match self.legend_rows.len() {
            0 => 0,
            n => n as u32 * legend_row_height(self.legend_font) + 4,
        }
    }

    /// Height in output pixels.
    fn height(&self) -> u32 {
        self.title_h + self.legend_height()
    }

    /// Draws the title and legend at the top of `area`; returns the rest of it.
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        px: Px,
    ) -> std::result::Result<DrawingArea<DB, Shift>, DrawError> {
        let (w, _) = area.dim_in_pixel();
        let (top, body) = area.split_vertically(px.n(self.height()));
        if !self.title.is_empty() {
            let style = text(px.f(self.title_font)).pos(Pos::new(HPos::Center, VPos::Top));
            top.draw_text(
                &self.title,
                &style,
                (w as i32 / 2, px.i(TITLE_PAD_TOP as i32)),
            )?;
        }
        if !self.legend_rows.is_empty() {
            let (_, legend) = top.split_vertically(px.n(self.title_h));
            draw_legend(&legend, self, px)?;
        }
        Ok(body)
    }
}

/// Applies the grid and axis look shared by all panels.
fn draw_mesh<DB: DrawingBackend>(
    cc: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    x_desc: &str,
    y_desc: &str,
    style: &Style,
    px: Px,
) -> Drawn {
    cc.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(text(px.f(style.axis)))
        .label_style(text(px.f(style.tick)))
        .x_labels(style.x_labels)
        .y_labels(style.y_labels)
        .set_all_tick_mark_size(px.i(5))
        .axis_style(AXIS.stroke_width(px.n(1)))
        .bold_line_style(GRID_BOLD.stroke_width(px.n(1)))
        .light_line_style(GRID_LIGHT.stroke_width(px.n(1)))
        .draw()?;
    Ok(())
}

/// Draws `chart` into `area`: title, legend (when `legend`), axes, reference line, curves.
fn draw_line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    style: &Style,
    legend: bool,
    px: Px,
) -> Drawn {
    let (w, _) = area.dim_in_pixel();
    let entries = if legend {
        let series = chart.series.iter().enumerate();
        series
            .map(|(i, s)| line_entry(i, s, is_marked(s)))
            .collect()
    } else {
        Vec::new()
    };
    let head = Head::new(&chart.title, style.title, entries, style.legend, w / px.0);
    let body = head.draw(area, px)?;

    let (xr, yr) = chart_ranges(chart);
    let mut cc = ChartBuilder::on(&body)
        .margin(px.n(style.margin))
        .margin_right(px.n(style.margin + 12))
        .x_label_area_size(px.n(style.x_area))
        .y_label_area_size(px.n(style.y_area))
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
    draw_mesh(&mut cc, &chart.x_label, &chart.y_label, style, px)?;

    if chart.diagonal {
        let lo = xr.0.max(yr.0);
        let hi = xr.1.min(yr.1);
        if hi > lo {
            cc.draw_series(DashedLineSeries::new(
                vec![(lo, lo), (hi, hi)],
                px.i(8),
                px.i(6),
                REFERENCE.stroke_width(px.n(2)),
            ))?;
        }
    }

    for (i, series) in chart.series.iter().enumerate() {
        let colour = palette(i);
        for run in clip_runs(&series.points, xr, yr) {
            cc.draw_series(LineSeries::new(run, colour.stroke_width(px.n(style.line))))?;
        }
        if is_marked(series) {
            let shape = marker_shape(i, px.f(style.marker));
            let outline = closed(&shape);
            let inside = series
                .points
                .iter()
                .copied()
                .filter(|&p| usable_point(p) && contains(xr, yr, p));
            cc.draw_series(inside.map(|p| {
                EmptyElement::at(p)
                    + Polygon::new(shape.clone(), colour.filled())
                    + PathElement::new(outline.clone(), WHITE.stroke_width(px.n(1)))
            }))?;
        }
    }
    Ok(())
}

/// Draws one reliability panel in palette colour `index`.
fn draw_reliability_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &ReliabilityChart,
    index: usize,
    px: Px,
) -> Drawn {
    let style = &PANEL;
    let (w, _) = area.dim_in_pixel();
    let title = if chart.title.is_empty() {
        format!("ECE = {:.3}", chart.ece)
    } else {
        format!("{} (ECE = {:.3})", chart.title, chart.ece)
    };
    let head = Head::new(&title, style.title, Vec::new(), style.legend, w / px.0);
    let body = head.draw(area, px)?;

    let mut cc = ChartBuilder::on(&body)
        .margin(px.n(style.margin))
        .margin_right(px.n(style.margin + 12))
        .x_label_area_size(px.n(style.x_area))
        .y_label_area_size(px.n(style.y_area))
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    draw_mesh(&mut cc, "Confidence", "Accuracy", style, px)?;

    let colour = palette(index);
    let edge = darker(colour).stroke_width(px.n(1));
    let bars: Vec<_> = chart.bars.iter().filter_map(clean_bar).collect();
    let bar = |b: &Bar| [(b.lo, 0.0), (b.hi, b.acc)];
    let gap = |b: &Bar| [(b.lo, b.acc.min(b.conf)), (b.hi, b.acc.max(b.conf))];
    let fill = colour.mix(0.85).filled();
    cc.draw_series(bars.iter().map(|b| Rectangle::new(bar(b), fill)))?;
    cc.draw_series(bars.iter().map(|b| Rectangle::new(bar(b), edge)))?;
    let (gap_fill, gap_edge) = (GAP.mix(0.22).filled(), GAP.stroke_width(px.n(1)));
    cc.draw_series(bars.iter().map(|b| Rectangle::new(gap(b), gap_fill)))?;
    cc.draw_series(bars.iter().map(|b| Rectangle::new(gap(b), gap_edge)))?;
    cc.draw_series(DashedLineSeries::new(
        vec![(0.0, 0.0), (1.0, 1.0)],
        px.i(8),
        px.i(6),
        REFERENCE.stroke_width(px.n(2)),
    ))?;
    Ok(())
}

/// A drawable reliability bin, clamped to the unit square.
struct Bar {
    lo: f64,
    hi: f64,
    acc: f64,
    conf: f64,
}

fn clean_bar(b: &ReliabilityBar) -> Option<Bar> {
    let values = [b.lower, b.upper, b.accuracy, b.confidence];
    if b.count == 0 || !values.iter().all(|v| v.is_finite()) {
        return None;
    }
    let (lo, hi) = (
        b.lower.min(b.upper).clamp(0.0, 1.0),
        b.lower.max(b.upper).clamp(0.0, 1.0),
    );
    (hi > lo).then(|| Bar {
        lo,
        hi,
        acc: b.accuracy.clamp(0.0, 1.0),
        conf: b.confidence.clamp(0.0, 1.0),
    })
}

fn darker(c: RGBColor) -> RGBColor {
    let f = |v: u8| (f64::from(v) * 0.6) as u8;
    RGBColor(f(c.0), f(c.1), f(c.2))
}

// ---------------------------------------------------------------------------------------------
// Legends.

#[derive(Debug, Clone, PartialEq)]
enum Glyph {
    /// A line in this colour, with the marker of series `marker` when it has markers.
    Line {
        colour: RGBColor,
        marker: Option<usize>,
    },
    /// A dashed line.
    Dashed(RGBColor),
    /// A box striped with these bar colours.
    Bars(Vec<RGBColor>),
    /// A calibration-gap box.
    Gap,
}

#[derive(Debug, Clone, PartialEq)]
struct LegendEntry {
    label: String,
    glyph: Glyph,
}

/// Legend metrics in output pixels.
const GLYPH_W: u32 = 30;
const GLYPH_GAP: u32 = 7;
const ENTRY_GAP: u32 = 22;
const LEGEND_SIDE: u32 = 12;

/// The legend entry of series `i`, with its marker when `marked`.
fn line_entry(i: usize, series: &Series, marked: bool) -> LegendEntry {
    LegendEntry {
        label: if series.name.is_empty() {
            format!("series {}", i + 1)
        } else {
            series.name.clone()
        },
        glyph: Glyph::Line {
            colour: palette(i),
            marker: marked.then_some(i),
        },
    }
}

/// The legend all `panels` share, when they agree on the name at every series position (an
/// empty one when at most one position is used); `None` when they disagree.
fn shared_legend(panels: &[LineChart]) -> Option<Vec<LegendEntry>> {
    let n = panels.iter().map(|p| p.series.len()).max().unwrap_or(0);
    let mut first: Vec<Option<&Series>> = vec![None; n];
    let mut marked = vec![false; n];
    for panel in panels {
        for (i, s) in panel.series.iter().enumerate() {
            match first[i] {
                None => first[i] = Some(s),
                Some(f) if f.name == s.name => {}
                Some(_) => return None,
            }
            marked[i] |= is_marked(s);
        }
    }
    if n <= 1 {
        return Some(Vec::new());
    }
    let entries = first
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| line_entry(i, s, marked[i])))
        .collect();
    Some(entries)
}

/// Width of an entry at scale `px` (`font` in output pixels).
fn entry_width(entry: &LegendEntry, font: f64, px: Px) -> u32 {
    px.n(GLYPH_W + GLYPH_GAP) + text_size(&entry.label, px.f(font)).0
}

fn legend_row_height(font: f64) -> u32 {
    (font * 1.7).round() as u32
}

/// Entries split greedily into rows that fit `width` (output pixels).
fn legend_rows(entries: &[LegendEntry], font: f64, width: u32) -> Vec<Vec<usize>> {
    let room = width.saturating_sub(2 * LEGEND_SIDE);
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut used = 0;
    for (i, entry) in entries.iter().enumerate() {
        let w = entry_width(entry, font, Px(1));
        match rows.last_mut() {
            Some(row) if used + ENTRY_GAP + w <= room => {
                row.push(i);
                used += ENTRY_GAP + w;
            }
            _ => {
                rows.push(vec![i]);
                used = w;
            }
        }
    }
    rows
}

/// Draws the legend of `head` in centred rows across `area`.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, head: &Head, px: Px) -> Drawn {
    let (w, _) = area.dim_in_pixel();
    let font = head.legend_font;
    let row_h = px.n(legend_row_height(font)) as i32;
    let label_style = text(px.f(font)).pos(Pos::new(HPos::Left, VPos::Center));
    for (r, row) in head.legend_rows.iter().enumerate() {
        let entries: Vec<&LegendEntry> = row.iter().map(|&i| &head.legend[i]).collect();
        let widths: Vec<i32> = entries
            .iter()
            .map(|e| entry_width(e, font, px) as i32)
            .collect();
        let gaps = px.i(ENTRY_GAP as i32) * (row.len() as i32 - 1);
        let mut x = (w as i32 - widths.iter().sum::<i32>() - gaps) / 2;
        let cy = r as i32 * row_h + row_h / 2;
        for (entry, ew) in entries.iter().zip(widths) {
            draw_glyph(area, &entry.glyph, x, cy, px)?;
            let tx = x + px.i((GLYPH_W + GLYPH_GAP) as i32);
            area.draw_text(&entry.label, &label_style, (tx, cy))?;
            x += ew + px.i(ENTRY_GAP as i32);
        }
    }
    Ok(())
}

/// Draws a legend glyph with its left end at `x`, centred on `cy` (canvas pixels).
fn draw_glyph<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    glyph: &Glyph,
    x: i32,
    cy: i32,
    px: Px,
) -> Drawn {
    let gw = px.i(GLYPH_W as i32);
    let half_h = px.i(7);
    let box_ = [(x, cy - half_h), (x + gw, cy + half_h)];
    match glyph {
        Glyph::Line { colour, marker } => {
            area.draw(&PathElement::new(
                vec![(x, cy), (x + gw, cy)],
                colour.stroke_width(px.n(2)),
            ))?;
            if let Some(i) = marker {
                let at = |(dx, dy): (i32, i32)| (x + gw / 2 + dx, cy + dy);
                let shape = marker_shape(*i, px.f(5.0));
                area.draw(&Polygon::new(
                    shape.iter().copied().map(at).collect::<Vec<_>>(),
                    colour.filled(),
                ))?;
                area.draw(&PathElement::new(
                    closed(&shape).into_iter().map(at).collect::<Vec<_>>(),
                    WHITE.stroke_width(px.n(1)),
                ))?;
            }
        }
        Glyph::Dashed(colour) => {
            for k in 0..3 {
                let x0 = x + px.i(11 * k);
                area.draw(&PathElement::new(
                    vec![(x0, cy), (x0 + px.i(8), cy)],
                    colour.stroke_width(px.n(2)),
                ))?;
            }
        }
        Glyph::Bars(colours) => {
            let n = colours.len().max(1) as i32;
            for (k, colour) in colours.iter().enumerate() {
                let k = k as i32;
                let (x0, x1) = (x + gw * k / n, x + gw * (k + 1) / n);
                area.draw(&Rectangle::new(
                    [(x0, cy - half_h), (x1, cy + half_h)],
                    colour.mix(0.85).filled(),
                ))?;
            }
            area.draw(&Rectangle::new(box_, AXIS.stroke_width(px.n(1))))?;
        }
        Glyph::Gap => {
            area.draw(&Rectangle::new(box_, GAP.mix(0.22).filled()))?;
            area.draw(&Rectangle::new(box_, GAP.stroke_width(px.n(1))))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Markers.

/// The marker of series `i` as pixel offsets: circle, square, triangle, diamond, inverted
/// triangle, in turn.
fn marker_shape(i: usize, r: f64) -> Vec<(i32, i32)> {
    let polar = |n: usize, radius: f64, phase: f64| -> Vec<(i32, i32)> {
        (0..n)
            .map(|k| {
                let a = phase + std::f64::consts::TAU * k as f64 / n as f64;
                (
                    (radius * a.cos()).round() as i32,
                    (radius * a.sin()).round() as i32,
                )
            })
            .collect()
    };
    let half_pi = std::f64::consts::FRAC_PI_2;
    match i % 5 {
        0 => polar(16, r, 0.0),
        1 => polar(4, r * 1.25, half_pi / 2.0),
        2 => polar(3, r * 1.35, -half_pi),
        3 => polar(4, r * 1.35, 0.0),
        _ => polar(3, r * 1.35, half_pi),
    }
}

fn closed(shape: &[(i32, i32)]) -> Vec<(i32, i32)> {
    let mut path = shape.to_vec();
    path.extend(shape.first().copied());
    path
}

fn is_marked(series: &Series) -> bool {
    let n = series.points.iter().filter(|&&p| usable_point(p)).count();
    n > 0 && n <= MAX_MARKED
}

// ---------------------------------------------------------------------------------------------
// Ranges and clipping.

/// Larger magnitudes are treated like non-finite values (they would overflow the layout).
const LIMIT: f64 = 1e300;

fn usable(v: f64) -> bool {
    v.is_finite() && v.abs() <= LIMIT
}

fn usable_point((x, y): (f64, f64)) -> bool {
    usable(x) && usable(y)
}

fn contains(xr: (f64, f64), yr: (f64, f64), (x, y): (f64, f64)) -> bool {
    xr.0 <= x && x <= xr.1 && yr.0 <= y && y <= yr.1
}

fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The x and y ranges of `chart`: the fixed ones where given and usable, otherwise the extent
/// of its usable points plus 5 % on each side, `(0, 1)` when there is none.
fn chart_ranges(chart: &LineChart) -> ((f64, f64), (f64, f64)) {
    let points = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&p| usable_point(p))
    };
    (
        axis_range(chart.x_range, extent(points().map(|p| p.0))),
        axis_range(chart.y_range, extent(points().map(|p| p.1))),
    )
}

fn axis_range(fixed: Option<(f64, f64)>, data: Option<(f64, f64)>) -> (f64, f64) {
    let nondegenerate = |lo: f64, hi: f64| hi - lo > lo.abs().max(hi.abs()) * 1e-9;
    if let Some((a, b)) = fixed.filter(|&(a, b)| usable(a) && usable(b)) {
        let (lo, hi) = (a.min(b), a.max(b));
        return if nondegenerate(lo, hi) {
            (lo, hi)
        } else {
            widen(lo)
        };
    }
    match data {
        None => (0.0, 1.0),
        Some((lo, hi)) if nondegenerate(lo, hi) => {
            let pad = (hi - lo) * 0.05;
            (lo - pad, hi + pad)
        }
        Some((lo, _)) => widen(lo),
    }
}

/// A range around a single value.
fn widen(v: f64) -> (f64, f64) {
    let pad = if v.abs() < 1e-9 { 0.5 } else { v.abs() * 0.1 };
    (v - pad, v + pad)
}

/// The parts of the polyline through `points` that lie inside the box, as runs of at least two
/// points; non-finite points break the line.
fn clip_runs(points: &[(f64, f64)], xr: (f64, f64), yr: (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    let mut flush = |run: &mut Vec<(f64, f64)>| {
        if run.len() >= 2 {
            runs.push(std::mem::take(run));
        } else {
            run.clear();
        }
    };
    let mut prev: Option<(f64, f64)> = None;
    for &p in points {
        if !usable_point(p) {
            flush(&mut run);
            prev = None;
            continue;
        }
        match prev {
            None => {
                if contains(xr, yr, p) {
                    run.push(p);
                }
            }
            Some(q) => match clip_segment(q, p, xr, yr) {
                Some((a, b)) => {
                    if run.last() != Some(&a) {
                        flush(&mut run);
                        run.push(a);
                    }
                    run.push(b);
                }
                None => flush(&mut run),
            },
        }
        prev = Some(p);
    }
    flush(&mut run);
    runs
}

/// The part of the segment `p`–`q` inside the box (Liang–Barsky), if any.
#[allow(clippy::type_complexity)]
fn clip_segment(
    p: (f64, f64),
    q: (f64, f64),
    xr: (f64, f64),
    yr: (f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
    for (pk, qk) in [
        (-dx, p.0 - xr.0),
        (dx, xr.1 - p.0),
        (-dy, p.1 - yr.0),
        (dy, yr.1 - p.1),
    ] {
        if pk == 0.0 {
            if qk < 0.0 {
                return None;
            }
        } else {
            let r = qk / pk;
            if pk < 0.0 {
                if r > t1 {
                    return None;
                }
                t0 = t0.max(r);
            } else {
                if r < t0 {
                    return None;
                }
                t1 = t1.min(r);
            }
        }
    }
    let at = |t: f64| (p.0 + t * dx, p.1 + t * dy);
    let a = if t0 == 0.0 { p } else { at(t0) };
    let b = if t1 == 1.0 { q } else { at(t1) };
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn curve(f: impl Fn(f64) -> f64, n: usize) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| {
                let x = i as f64 / (n - 1) as f64;
                (x, f(x))
            })
            .collect()
    }

    fn two_series() -> LineChart {
        LineChart {
            title: "Risk versus coverage".into(),
            x_label: "Coverage".into(),
            y_label: "Selective risk".into(),
            x_range: None,
            y_range: None,
            series: vec![
                Series {
                    name: "MedProbCLIP".into(),
                    points: curve(|x| 0.05 + 0.3 * x * x, 20),
                },
                Series {
                    name: "CLIP baseline".into(),
                    points: curve(|x| 0.1 + 0.35 * x, 200),
                },
            ],
            diagonal: true,
        }
    }

    fn reliability(title: &str, ece: f64, skew: f64) -> ReliabilityChart {
        let bars = (0..10)
            .map(|b| {
                let lower = b as f64 / 10.0;
                let confidence = lower + 0.05;
                ReliabilityBar {
                    lower,
                    upper: lower + 0.1,
                    confidence,
                    accuracy: (confidence - skew * confidence * (1.0 - confidence)).clamp(0.0, 1.0),
                    count: 10 + b,
                }
            })
            .collect();
        ReliabilityChart {
            title: title.into(),
            bars,
            ece,
        }
    }

    /// Decodes the PNG, checks its size and that it is not blank; returns its colour count.
    fn check_png(path: &Path, size: (u32, u32)) -> usize {
        let image = image::open(path).expect("PNG decodes").to_rgb8();
        assert_eq!(image.dimensions(), size, "{}", path.display());
        let colours: HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
        assert!(
            colours.len() > 20,
            "only {} colours in {}",
            colours.len(),
            path.display()
        );
        colours.len()
    }

    fn read_svg(path: &Path) -> String {
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        svg
    }

    #[test]
    fn line_chart_renders_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let chart = two_series();
        let png = dir.path().join("rc.png");
        line_chart(&png, &chart).unwrap();
        check_png(&png, (900, 600));

        let svg_path = dir.path().join("rc.svg");
        line_chart(&svg_path, &chart).unwrap();
        let svg = read_svg(&svg_path);
        assert!(svg.contains("width=\"900\"") && svg.contains("height=\"600\""));
        for text in [
            "Risk versus coverage",
            "MedProbCLIP",
            "CLIP baseline",
            "Coverage",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
    }

    #[test]
    fn a_single_series_gets_no_legend() {
        let dir = tempfile::tempdir().unwrap();
        let mut chart = two_series();
        chart.series.truncate(1);
        let path = dir.path().join("one.svg");
        line_chart(&path, &chart).unwrap();
        let svg = read_svg(&path);
        assert!(svg.contains("Risk versus coverage"));
        assert!(!svg.contains("MedProbCLIP"));
    }

    #[test]
    fn grid_renders_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let panels: Vec<LineChart> = ["blur", "noise", "contrast"]
            .iter()
            .map(|c| LineChart {
                title: format!("Corruption: {c}"),
                x_label: "Severity".into(),
                y_label: "R@1".into(),
                y_range: Some((0.0, 1.0)),
                diagonal: false,
                ..two_series()
            })
            .collect();
        let title = "Robustness under corruptions";
        let png = dir.path().join("grid.PNG");
        line_chart_grid(&png, title, &panels, 2).unwrap();
        let (w, h) = grid_figure(title, &panels, 2).size();
        assert_eq!(w, 900);
        assert!(h > 2 * 340 && h < 2 * 340 + 120, "height {h}");
        check_png(&png, (w, h));

        let svg_path = dir.path().join("grid.svg");
        line_chart_grid(&svg_path, title, &panels, 2).unwrap();
        let svg = read_svg(&svg_path);
        for text in [
            title,
            "Corruption: blur",
            "Corruption: contrast",
            "MedProbCLIP",
            "CLIP baseline",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        // One shared legend: each name once.
        assert_eq!(svg.matches("CLIP baseline").count(), 1);

        // More columns than panels: one row, as wide as the panels.
        let wide = dir.path().join("wide.png");
        line_chart_grid(&wide, title, &panels, 10).unwrap();
        let (w, h) = grid_figure(title, &panels, 10).size();
        assert_eq!(w, 3 * 450);
        check_png(&wide, (w, h));
    }

    #[test]
    fn grid_panels_that_disagree_get_their_own_legends() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = two_series();
        other.series[1].name = "PCME++".into();
        let panels = vec![two_series(), other];
        assert!(shared_legend(&panels).is_none());
        let path = dir.path().join("grid.svg");
        line_chart_grid(&path, "Mixed", &panels, 2).unwrap();
        let svg = read_svg(&path);
        assert_eq!(svg.matches("MedProbCLIP").count(), 2);
        assert!(svg.contains("PCME++") && svg.contains("CLIP baseline"));
    }

    #[test]
    fn reliability_diagram_renders_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let charts = vec![
            reliability("MedProbCLIP", 0.0234, 0.1),
            reliability("CLIP", 0.1234, 0.6),
        ];
        let title = "Calibration of zero-shot classification";
        let png = dir.path().join("rel.png");
        reliability_diagram(&png, title, &charts).unwrap();
        let (w, h) = reliability_figure(title, &charts).size();
        assert_eq!(w, 2 * 420);
        assert!(h > 440 && h < 440 + 120, "height {h}");
        check_png(&png, (w, h));

        let svg_path = dir.path().join("rel.svg");
        reliability_diagram(&svg_path, title, &charts).unwrap();
        let svg = read_svg(&svg_path);
        for text in [
            title,
            "MedProbCLIP (ECE = 0.023)",
            "CLIP (ECE = 0.123)",
            "Confidence",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }

        // Five methods wrap onto two rows of at most four.
        let many: Vec<_> = (0..5)
            .map(|i| reliability(&format!("m{i}"), 0.05, 0.2))
            .collect();
        let (w, h) = reliability_figure(title, &many).size();
        assert_eq!(w, 4 * 420);
        assert!(h > 2 * 440);
        let png = dir.path().join("many.png");
        reliability_diagram(&png, title, &many).unwrap();
        check_png(&png, (w, h));
    }

    #[test]
    fn bad_extensions_are_rejected_and_named() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["plot.jpg", "plot.Jpeg", "plot"] {
            let path = dir.path().join(name);
            let errors = [
                line_chart(&path, &two_series()).unwrap_err(),
                line_chart_grid(&path, "t", &[two_series()], 1).unwrap_err(),
                reliability_diagram(&path, "t", &[reliability("a", 0.1, 0.1)]).unwrap_err(),
            ];
            for err in errors {
                assert!(matches!(err, MetricsError::Plot { .. }), "{err:?}");
                let message = err.to_string();
                match path.extension() {
                    Some(ext) => {
                        let ext = ext.to_str().unwrap();
                        assert!(message.contains(&format!("\"{ext}\"")), "{message}");
                    }
                    None => assert!(message.contains("without extension"), "{message}"),
                }
            }
            assert!(!path.exists());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn zero_columns_and_nothing_to_draw_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let err = line_chart_grid(&path, "t", &[two_series()], 0).unwrap_err();
        assert!(
            matches!(
                err,
                MetricsError::InvalidParameter {
                    name: "columns",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = line_chart_grid(&path, "t", &[], 2).unwrap_err();
        assert!(matches!(err, MetricsError::Empty { .. }), "{err:?}");
        let err = reliability_diagram(&path, "t", &[]).unwrap_err();
        assert!(matches!(err, MetricsError::Empty { .. }), "{err:?}");
        assert!(!path.exists());
    }

    #[test]
    fn non_finite_points_and_odd_ranges_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let charts = vec![
            LineChart {
                title: "NaN in the middle".into(),
                series: vec![
                    Series {
                        name: "a".into(),
                        points: vec![(0.0, 0.1), (0.5, nan), (nan, 0.3), (1.0, 0.9), (inf, 2.0)],
                    },
                    Series {
                        name: "b".into(),
                        points: vec![(nan, nan), (-inf, inf)],
                    },
                ],
                ..LineChart::default()
            },
            LineChart {
                title: "Nothing finite".into(),
                series: vec![Series {
                    name: "a".into(),
                    points: vec![(nan, nan)],
                }],
                diagonal: true,
                ..LineChart::default()
            },
            LineChart {
                title: "No series".into(),
                ..LineChart::default()
            },
            LineChart {
                title: "Odd ranges".into(),
                x_range: Some((1.0, 0.0)),
                y_range: Some((nan, 1.0)),
                series: vec![Series {
                    name: "a".into(),
                    points: vec![(0.5, 0.5), (0.5, 0.5)],
                }],
                diagonal: true,
                ..LineChart::default()
            },
            LineChart {
                title: "Degenerate and huge".into(),
                x_range: Some((0.3, 0.3)),
                series: vec![
                    Series {
                        name: "a".into(),
                        points: vec![(0.3, 2.0); 3],
                    },
                    Series {
                        name: "".into(),
                        points: vec![(0.0, 1e308), (1.0, -1e308)],
                    },
                ],
                ..LineChart::default()
            },
        ];
        for (i, chart) in charts.iter().enumerate() {
            let png = dir.path().join(format!("c{i}.png"));
            line_chart(&png, chart).unwrap();
            check_png(&png, (900, 600));
            line_chart(&dir.path().join(format!("c{i}.svg")), chart).unwrap();
        }
        let png = dir.path().join("grid.png");
        line_chart_grid(&png, "", &charts, 3).unwrap();
        check_png(&png, grid_figure("", &charts, 3).size());

        let bad = ReliabilityChart {
            title: String::new(),
            bars: vec![
                ReliabilityBar {
                    lower: 0.0,
                    upper: 0.5,
                    confidence: nan,
                    accuracy: 0.3,
                    count: 4,
                },
                ReliabilityBar {
                    lower: 0.5,
                    upper: 1.0,
                    confidence: 0.7,
                    accuracy: 0.6,
                    count: 0,
                },
                ReliabilityBar {
                    lower: 0.9,
                    upper: 0.8,
                    confidence: 1.5,
                    accuracy: -1.0,
                    count: 2,
                },
                ReliabilityBar {
                    lower: inf,
                    upper: 1.0,
                    confidence: 0.9,
                    accuracy: 0.9,
                    count: 2,
                },
            ],
            ece: nan,
        };
        let empty = ReliabilityChart::default();
        let png = dir.path().join("rel.png");
        reliability_diagram(&png, "Bad bins", &[bad.clone(), empty.clone()]).unwrap();
        check_png(
            &png,
            reliability_figure("Bad bins", &[bad.clone(), empty.clone()]).size(),
        );
        let svg = dir.path().join("rel.svg");
        reliability_diagram(&svg, "Bad bins", &[bad, empty]).unwrap();
        assert!(read_svg(&svg).contains("ECE = NaN"));
    }

    #[test]
    fn an_existing_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        std::fs::write(&path, "old").unwrap();
        line_chart(&path, &two_series()).unwrap();
        assert!(read_svg(&path).contains("MedProbCLIP"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn the_bundled_font_is_registered_and_measures_text() {
        ensure_font().unwrap();
        ensure_font().unwrap();
        let (w, h) = text_size("Recall@1", 20.0);
        assert!(w > 40 && w < 140 && h > 8, "{w} x {h}");
        assert!(text_size("Recall@1 and more", 20.0).0 > w);
    }

    #[test]
    fn pngs_are_supersampled_within_a_memory_bound() {
        assert_eq!(supersampling((900, 600)), 3);
        assert_eq!(supersampling((1800, 1400)), 2);
        assert_eq!(supersampling((5000, 4000)), 1);
        // 4 x 2 pixels averaged in 2 x 2 blocks.
        let big: Vec<u8> = [
            [0, 0, 0],
            [255, 255, 255],
            [10, 20, 30],
            [30, 20, 10],
            [255, 255, 255],
            [0, 0, 0],
            [10, 20, 30],
            [30, 20, 10],
        ]
        .concat();
        assert_eq!(
            downsample(big.clone(), (4, 2), 2),
            vec![128, 128, 128, 20, 20, 20]
        );
        assert_eq!(downsample(big.clone(), (4, 2), 1), big);
    }

    #[test]
    fn ranges_fit_the_data_with_a_margin() {
        assert_eq!(axis_range(None, None), (0.0, 1.0));
        let (lo, hi) = axis_range(None, Some((0.0, 1.0)));
        assert!((lo + 0.05).abs() < 1e-12 && (hi - 1.05).abs() < 1e-12);
        assert_eq!(axis_range(Some((0.0, 2.0)), Some((5.0, 9.0))), (0.0, 2.0));
        assert_eq!(axis_range(Some((2.0, 0.0)), None), (0.0, 2.0));
        assert_eq!(axis_range(Some((f64::NAN, 1.0)), None), (0.0, 1.0));
        let (lo, hi) = axis_range(None, Some((0.8, 0.8)));
        assert!(lo < 0.8 && hi > 0.8);
        assert_eq!(axis_range(None, Some((0.0, 0.0))), (-0.5, 0.5));
    }

    #[test]
    fn lines_are_clipped_to_the_box_and_broken_at_gaps() {
        let unit = (0.0, 1.0);
        let runs = clip_runs(&[(-1.0, 0.5), (0.5, 0.5), (2.0, 0.5)], unit, unit);
        assert_eq!(runs, vec![vec![(0.0, 0.5), (0.5, 0.5), (1.0, 0.5)]]);
        // Leaving and re-entering the box makes two runs.
        let runs = clip_runs(&[(0.2, 0.5), (0.5, 3.0), (0.8, 0.5)], unit, unit);
        assert_eq!(runs.len(), 2);
        for p in runs.iter().flatten() {
            assert!(contains(unit, unit, *p), "{p:?}");
        }
        // A NaN breaks the line; a lone point is no line.
        let runs = clip_runs(
            &[
                (0.1, 0.1),
                (0.2, 0.2),
                (f64::NAN, 0.0),
                (0.3, 0.3),
                (f64::INFINITY, 0.0),
            ],
            unit,
            unit,
        );
        assert_eq!(runs, vec![vec![(0.1, 0.1), (0.2, 0.2)]]);
        // Entirely outside.
        assert!(clip_runs(&[(2.0, 2.0), (3.0, 5.0)], unit, unit).is_empty());
    }

    #[test]
    fn markers_only_on_short_series_and_colours_follow_the_index() {
        let short = Series {
            name: "s".into(),
            points: curve(|x| x, 30),
        };
        let long = Series {
            name: "l".into(),
            points: curve(|x| x, 31),
        };
        let none = Series {
            name: "n".into(),
            points: vec![(f64::NAN, 1.0)],
        };
        assert!(is_marked(&short));
        assert!(!is_marked(&long));
        assert!(!is_marked(&none));
        assert_eq!(palette(0), palette(10));
        assert_ne!(palette(0), palette(1));
        let legend = shared_legend(&[two_series(), two_series()]).unwrap();
        assert_eq!(legend.len(), 2);
        assert_eq!(
            legend[1].glyph,
            Glyph::Line {
                colour: palette(1),
                marker: None
            }
        );
        assert_eq!(
            legend[0].glyph,
            Glyph::Line {
                colour: palette(0),
                marker: Some(0)
            }
        );
    }
}
